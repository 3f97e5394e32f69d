// Mutual TLS at the framing layer: certificates made by `raftkv certs`, identities read from them, and
// every way a connection is refused (plaintext, no certificate, another CA, expired).

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { certsClient, certsInit } from "../../src/cli/certs";
import { certFilesIn, dialFrames, listenFrames, loadTlsMaterial, TlsError, type FrameListener, type FramedConn, type TlsMaterial } from "../../src/net";
import { waitFor } from "./helpers";

const HOST = "127.0.0.1";
let dir: string;
let otherDir: string;
let node: TlsMaterial;
let admin: TlsMaterial;
const cleanups: (() => void)[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "raftkv-tls-"));
  otherDir = mkdtempSync(join(tmpdir(), "raftkv-tls-other-"));
  const nodes = [{ id: 0, host: HOST, port: 1 }];
  await certsInit(nodes, dir);
  await certsInit(nodes, otherDir);
  await certsClient(dir, "reader", "read");
  await certsClient(dir, "old", "write", -1);
  node = loadTlsMaterial(certFilesIn(dir, "node-0"));
  admin = loadTlsMaterial(certFilesIn(dir, "admin"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(otherDir, { recursive: true, force: true });
});
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

function listen(refusals: string[] = []): { listener: FrameListener; accepted: FramedConn[] } {
  const accepted: FramedConn[] = [];
  const listener = listenFrames({
    hostname: HOST,
    port: 0,
    tls: node,
    onOpen: (c) => accepted.push(c),
    onFrame: (c, v) => c.send({ echo: v }),
    onRefused: (remote, reason) => refusals.push(`${remote} ${reason}`),
  });
  cleanups.push(() => listener.stop());
  return { listener, accepted };
}

describe("mutual TLS", () => {
  test("a client certificate of the cluster CA connects; each end learns who the other is", async () => {
    const { listener, accepted } = listen();
    const replies: unknown[] = [];
    const conn = await dialFrames(HOST, listener.port, { tls: admin, onFrame: (_c, v) => replies.push(v) });
    cleanups.push(() => conn.close());
    conn.send("hi");
    await waitFor(() => replies.length === 1, "the echo");
    expect(replies[0]).toEqual({ echo: "hi" });
    expect(accepted[0]!.certificate).toEqual({ kind: "client", name: "admin", role: "admin" });
  });

  test("read-role certificates carry their role", async () => {
    const { listener, accepted } = listen();
    const conn = await dialFrames(HOST, listener.port, { tls: loadTlsMaterial(certFilesIn(dir, "reader")), onFrame: () => {} });
    cleanups.push(() => conn.close());
    await waitFor(() => accepted.length === 1, "the connection");
    expect(accepted[0]!.certificate).toEqual({ kind: "client", name: "reader", role: "read" });
  });

  test("a plaintext client is refused and told the node requires TLS", async () => {
    const refusals: string[] = [];
    const { listener, accepted } = listen(refusals);
    const errors: Error[] = [];
    const conn = await dialFrames(HOST, listener.port, { onFrame: () => {}, onError: (_c, e) => errors.push(e) });
    conn.send({ k: "req", id: 1, op: "status" });
    await waitFor(() => errors.length === 1 && refusals.length === 1, "the refusal on both ends");
    expect(errors[0]).toBeInstanceOf(TlsError);
    expect(errors[0]!.message).toContain("requires TLS");
    expect(refusals[0]).toContain("127.0.0.1:");
    expect(refusals[0]).toContain("TLS handshake failed");
    expect(accepted.length).toBe(0);
  });

  for (const [what, material] of [
    ["no client certificate", () => ({ ca: admin.ca }) as TlsMaterial],
    ["a certificate of another CA", () => ({ ...loadTlsMaterial(certFilesIn(otherDir, "admin")), ca: admin.ca })],
    ["an expired certificate", () => loadTlsMaterial(certFilesIn(dir, "old"))],
  ] as const) {
    test(`${what} is refused at once and logged with the remote address`, async () => {
      const refusals: string[] = [];
      const { listener, accepted } = listen(refusals);
      const errors: Error[] = [];
      const t0 = performance.now();
      const outcome = await dialFrames(HOST, listener.port, { tls: material(), onFrame: () => {}, onError: (_c, e) => errors.push(e) }).then(
        (conn) => waitFor(() => conn.closed, "the connection to be closed").then(() => errors[0]),
        (err: Error) => err,
      );
      expect(outcome).toBeInstanceOf(TlsError);
      expect(outcome!.message).toContain("TLS");
      await waitFor(() => refusals.length === 1, "the server to log the refusal");
      expect(refusals[0]).toMatch(/^127\.0\.0\.1:\d+ TLS handshake failed/);
      expect(performance.now() - t0).toBeLessThan(1000);
      expect(accepted.length).toBe(0);
    });
  }

  test("a client refuses a node whose certificate another CA signed", async () => {
    const { listener } = listen();
    const err = await dialFrames(HOST, listener.port, { tls: { ...admin, ca: loadTlsMaterial(certFilesIn(otherDir, "admin")).ca }, onFrame: () => {} }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(TlsError);
  });

  test("reloadTls: new connections get the new certificate, open ones stay", async () => {
    const { listener } = listen();
    const before = await dialFrames(HOST, listener.port, { tls: admin, onFrame: () => {} });
    cleanups.push(() => before.close());
    listener.reloadTls(loadTlsMaterial(certFilesIn(otherDir, "node-0")));
    const refused = await dialFrames(HOST, listener.port, { tls: admin, onFrame: () => {} }).catch((e: Error) => e);
    expect(refused).toBeInstanceOf(TlsError);
    const other = await dialFrames(HOST, listener.port, { tls: loadTlsMaterial(certFilesIn(otherDir, "admin")), onFrame: () => {} });
    other.close();
    expect(before.closed).toBe(false);
  });
});
