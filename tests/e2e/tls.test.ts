// Security of the node port (issue 10): only identified peers speak Raft (plaintext mode), and with
// certificates every connection is mutual TLS from the cluster CA, clients act within their role, and
// SIGHUP rotates certificates.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { certsClient, certsInit, issueCertificateFromDir } from "../../src/cli/certs";
import { RaftKvClient, toText } from "../../src/client/client";
import { KvStore } from "../../src/kv/store";
import { encodeLogCommand } from "../../src/kv/codec";
import { certFilesIn, dialFrames, loadTlsMaterial, type TlsMaterial } from "../../src/net";
import { toWire } from "../../src/raft/wire";
import { freePorts, TestCluster, waitFor } from "./harness";

const te = new TextEncoder();

/**
 * Sends forged Raft frames (an append that commits "forged", a vote at a higher term, a snapshot of one
 * key) to node `to`, claiming to come from another node, on a connection that said no valid hello.
 * Resolves once the node has closed the connection (or refused it outright).
 */
async function sendForgedFrames(c: TestCluster, to: number, tls?: TlsMaterial): Promise<void> {
  const st = (await c.statuses()).find((s) => s.id === to)!;
  const from = (to + 1) % 3;
  const term = st.term! + 5;
  const last = (st as { lastIndex?: number }).lastIndex ?? st.commitIndex!;
  const data = encodeLogCommand({ cmd: { op: "put", key: te.encode("forged"), value: te.encode("yes") }, now: Date.now() });
  const app = { type: "app", from, to, term, prevIndex: last, prevTerm: st.term!, entries: [{ index: last + 1, term, data }], commit: last + 1, readRound: 0 };
  const vote = { type: "vote", from, to, term: term + 10, preVote: false, lastLogIndex: 1_000_000, lastLogTerm: term + 10 };
  const one = new KvStore();
  one.applyEntry(1, encodeLogCommand({ cmd: { op: "put", key: te.encode("only"), value: te.encode("key") }, now: Date.now() }));
  const snap = one.snapshot();
  const chunk = { k: "snapChunk", from, term, index: last + 100, snapTerm: term, offset: 0, total: snap.length, crc: Bun.hash.crc32(snap) >>> 0, data: snap };
  const conn = await dialFrames("127.0.0.1", c.ports[to]!, { onFrame: () => {}, tls }).catch((err: Error) => err);
  if (conn instanceof Error) return;
  conn.send({ k: "raft", m: toWire(app as never) });
  conn.send({ k: "raft", m: vote });
  conn.send(chunk);
  await waitFor("the node to close the forging connection", () => conn.closed, 5000);
}

/** Every node's own (serializable) view of keys, after a write through the cluster went round. */
async function viewsOf(c: TestCluster, keys: string[]): Promise<(string | null)[][]> {
  const client = c.client();
  await client.put("barrier", String(Date.now()));
  client.close();
  const views: (string | null)[][] = [];
  for (let id = 0; id < 3; id++) {
    const local = new RaftKvClient({ endpoints: [c.endpoint(id)], tls: c.clientTls?.material });
    const row: (string | null)[] = [];
    for (const key of keys) {
      const kv = await local.get(key, { serializable: true });
      row.push(kv && toText(kv.value));
    }
    local.close();
    views.push(row);
  }
  return views;
}

async function expectForgeriesChangeNothing(c: TestCluster, tls?: TlsMaterial): Promise<void> {
  const leader = await c.waitForLeader();
  const client = c.client();
  for (let i = 0; i < 5; i++) await client.put(`real${i}`, String(i));
  const termBefore = (await c.statuses()).find((s) => s.id === leader)!.term;
  for (let id = 0; id < 3; id++) await sendForgedFrames(c, id, tls);
  // Before the fix one forged append committed "forged" everywhere and the chunk left only "only".
  const unchanged = [null, "3", null];
  expect(await viewsOf(c, ["forged", "real3", "only"])).toEqual([unchanged, unchanged, unchanged]);
  const after = await c.statuses();
  expect(after.find((s) => s.id === leader)!.role).toBe("leader");
  expect(after.find((s) => s.id === leader)!.term).toBe(termBefore);
  client.close();
}

describe("plaintext mode: Raft only from identified peers", () => {
  const c = new TestCluster();
  beforeAll(() => c.startAll());
  afterAll(() => c.cleanup());

  test("forged append, vote and snapshot frames on a client connection change nothing and are logged", async () => {
    await expectForgeriesChangeNothing(c);
    const logs = c.logs(0) + c.logs(1) + c.logs(2);
    expect(logs).toMatch(/refused a connection remote=127\.0\.0\.1:\d+ reason="?.*raft frame on a connection that is not an identified peer/);
  });
});

describe("mutual TLS", () => {
  const c = new TestCluster();
  const certs = join(c.dir, "certs"); // beside nodes.conf: TLS is on without a flag
  const foreign = join(c.dir, "foreign");
  const httpPorts = freePorts(3);
  let admin: TlsMaterial;

  beforeAll(async () => {
    const nodes = c.ports.map((port, id) => ({ id, host: "127.0.0.1", port }));
    await certsInit(nodes, certs);
    await certsInit(nodes, foreign);
    await certsClient(certs, "reader", "read");
    await certsClient(certs, "writer", "write");
    await certsClient(certs, "old", "write", -1);
    admin = loadTlsMaterial(certFilesIn(certs, "admin"));
    c.clientTls = { args: ["--certs", certs], material: admin };
    for (let id = 0; id < 3; id++) c.start(id, ["--http-port", String(httpPorts[id])]);
    await c.waitForLeader();
  });
  afterAll(() => c.cleanup());

  test("a TLS cluster elects, replicates and serves every command", async () => {
    const leader = await c.waitForLeader();
    expect(c.logs(leader)).toContain("tls=on");
    expect(await c.cli(["put", "a/1", "one"])).toMatchObject({ code: 0, stdout: "OK" });
    expect(await c.cli(["get", "a/1"])).toMatchObject({ code: 0, stdout: "one" });
    expect(await c.cli(["cas", "a/1", "one", "uno"])).toMatchObject({ code: 0 });
    expect(await c.cli(["get", "a/", "--prefix"])).toMatchObject({ code: 0, stdout: "a/1\nuno" });
    const lease = await c.cli(["lease", "grant", "10s"]);
    expect(lease.code).toBe(0);
    expect(await c.cli(["del", "a/1"])).toMatchObject({ code: 0, stdout: "deleted 1" });
    const client = c.client();
    const watch = client.watch("w/", { prefix: true });
    const seen = (async () => {
      for await (const ev of watch) return toText(ev.key);
    })();
    await waitFor("the watch to be registered", async () => {
      await client.put("w/x", "1");
      return await Promise.race([seen, Bun.sleep(100).then(() => undefined)]);
    });
    watch.close();
    client.close();
    const st = await c.statuses();
    expect(st.filter((s) => s.reachable).length).toBe(3);
  });

  test("a plaintext client gets a clear TLS error within a second, not exit code 3", async () => {
    const r = await c.cli(["get", "a/1"], { plaintext: true });
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBe(3);
    expect(r.stderr).toContain("TLS");
    expect(r.stderr).toContain("certificates");
    // Timed in the library: the CLI's own start-up on a loaded machine is not the client's doing.
    const plain = new RaftKvClient({ endpoints: c.endpoints.split(","), timeoutMs: 5000 });
    const t0 = performance.now();
    const err = await plain.get("a/1").catch((e: Error) => e);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(err).toMatchObject({ code: "TLS" });
    plain.close();
    await waitFor("the node to log the refusal", () => /refused a connection remote=127\.0\.0\.1:\d+ reason="?TLS handshake failed/.test(c.logs(0) + c.logs(1) + c.logs(2)));
  });

  test("clients with a certificate of another CA, or an expired one, are refused with a TLS error", async () => {
    for (const args of [
      ["--ca", join(certs, "ca.pem"), "--cert", join(foreign, "admin.pem"), "--key", join(foreign, "admin.key")],
      ["--ca", join(certs, "ca.pem"), "--cert", join(certs, "old.pem"), "--key", join(certs, "old.key")],
      ["--certs", foreign],
    ]) {
      const r = await c.cli(["put", "x", "1", ...args]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/TLS/);
      expect(r.stderr).toMatch(/certificate/);
    }
    expect(c.logs(0) + c.logs(1) + c.logs(2)).toMatch(/certificate refused: certificate has expired/);
  });

  test("roles: a read client reads but a write is PERMISSION_DENIED naming role and operation", async () => {
    const reader = ["--ca", join(certs, "ca.pem"), "--cert", join(certs, "reader.pem"), "--key", join(certs, "reader.key")];
    expect(await c.cli(["put", "r", "1"])).toMatchObject({ code: 0 });
    expect(await c.cli(["get", "r", ...reader])).toMatchObject({ code: 0, stdout: "1" });
    const denied = await c.cli(["put", "r", "2", ...reader]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain("permission denied");
    expect(denied.stderr).toContain("role read");
    expect(denied.stderr).toContain("may not put");
    const writer = ["--ca", join(certs, "ca.pem"), "--cert", join(certs, "writer.pem"), "--key", join(certs, "writer.key")];
    expect(await c.cli(["put", "r", "3", ...writer])).toMatchObject({ code: 0 });
    expect(await c.cli(["get", "r"])).toMatchObject({ code: 0, stdout: "3" });
  });

  test("forged plaintext frames change nothing; a client certificate sending Raft is refused and logged", async () => {
    await expectForgeriesChangeNothing(c);
    await expectForgeriesChangeNothing(c, loadTlsMaterial(certFilesIn(certs, "writer")));
    expect(c.logs(0) + c.logs(1) + c.logs(2)).toMatch(/refused a connection remote=127\.0\.0\.1:\d+ reason="?a raft frame .*client \\"writer\\"/);
  });

  test("a peer with a certificate of another CA is refused and logged", async () => {
    const id = (await c.waitForLeader()) === 1 ? 2 : 1;
    await c.kill(id);
    const others = () => c.logs((id + 1) % 3) + c.logs((id + 2) % 3);
    const logged = others().length;
    const p = c.start(id, ["--certs", foreign]);
    await waitFor("the others to refuse it", () => /refused a connection remote=127\.0\.0\.1:\d+ reason="?TLS handshake failed/.test(others().slice(logged)));
    expect((await c.statuses()).find((s) => s.id === id)).toBeUndefined();
    await c.kill(id);
    expect(p.exitCode !== null || p.signalCode !== null).toBe(true);
    c.start(id, ["--http-port", String(httpPorts[id])]);
    await waitFor("it to rejoin with the right certificate", async () => (await c.statuses()).filter((s) => s.reachable).length === 3);
  });

  test("HTTPS /health needs no client certificate; SIGHUP picks up a new node certificate", async () => {
    // One attempt settles within 2 s whatever happens (the node may be rebinding its listener after
    // SIGHUP, closing a connection before its handshake): waitFor then tries again.
    const serial = async (id: number) =>
      new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no TLS handshake within 2 s")), 2000);
        const settle = (fn: () => void) => {
          clearTimeout(timer);
          fn();
        };
        Bun.connect({
          hostname: "127.0.0.1",
          port: c.ports[id]!,
          tls: { ...admin, serverName: "127.0.0.1" },
          socket: {
            handshake(s) {
              settle(() => resolve(s.getPeerCertificate().serialNumber));
              s.end();
            },
            data() {},
            connectError: (_s, e) => settle(() => reject(e)),
            error: (_s, e) => settle(() => reject(e)),
            close: () => settle(() => reject(new Error("closed before the TLS handshake"))),
          },
        }).catch((e) => settle(() => reject(e)));
      });
    const health = await fetch(`https://127.0.0.1:${httpPorts[0]}/health`, { tls: { ca: admin.ca } });
    expect(health.status === 200 || health.status === 503).toBe(true);
    expect(await health.json()).toHaveProperty("role");
    const before = await serial(0);
    const files = certFilesIn(certs, "node-0");
    const renewed = await issueCertificateFromDir(certs, { cn: "node-0", ou: "node", addresses: ["127.0.0.1"] });
    writeFileSync(files.cert, renewed.cert);
    writeFileSync(files.key, renewed.key);
    process.kill(c.pid(0)!, "SIGHUP");
    await waitFor("a new connection to see the new certificate", async () => (await serial(0)) !== before);
    expect(c.logs(0)).toContain("reloaded TLS certificates");
  });
});
