// The node port's limits (issue 9, network part; src/net/limits.ts): connections in total, idle and
// stalled connections, partially received frames, and clients that do not read their replies.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { closeSync, openSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { encodeFrame, FrameDecoder } from "../../src/net";
import { BIN, TestCluster, waitFor } from "./harness";

const MiB = 1024 * 1024;

interface RawConn {
  socket: Socket;
  closed: boolean;
  frames: unknown[];
}

/**
 * A raw TCP connection to the node (node:net, which buffers what it cannot write yet) that records the
 * frames it is sent and whether it was closed. read: false never reads.
 */
async function rawConnect(port: number, opts: { read?: boolean } = {}): Promise<RawConn> {
  const decoder = new FrameDecoder();
  const socket = connect(port, "127.0.0.1");
  const conn: RawConn = { socket, closed: false, frames: [] };
  if (opts.read !== false) {
    socket.on("data", (chunk: Buffer) => {
      try {
        conn.frames.push(...decoder.push(new Uint8Array(chunk)));
      } catch {
        // not frames: ignore
      }
    });
  } else socket.pause();
  socket.on("close", () => (conn.closed = true));
  socket.on("error", () => (conn.closed = true));
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()).once("error", () => resolve()));
  return conn;
}

describe("limits of the node port", () => {
  const c = new TestCluster({ nodes: 1 });
  let node: Subprocess;

  beforeAll(async () => {
    // A low open-files limit, as in the report: 1,100 idle connections at `ulimit -n 1024` made the node
    // unreachable. The node caps its connections below the limit instead.
    const log = openSync(c.logFile(0), "a");
    node = Bun.spawn(["sh", "-c", `ulimit -n 256 && exec "$0" serve 0 "$1" --data-dir "$2"`, BIN, c.conf, c.dataDir(0)], { stdout: log, stderr: log, stdin: "ignore" });
    closeSync(log);
    await c.waitForLeader();
  });
  afterAll(async () => {
    if (node.exitCode === null && node.signalCode === null) process.kill(node.pid, "SIGKILL");
    await node.exited;
    await c.cleanup();
  });

  test("connections beyond the limit are refused with a clear error; the node stays up and serves", async () => {
    const conns: RawConn[] = [];
    for (let i = 0; i < 300; i++) conns.push(await rawConnect(c.ports[0]!));
    await waitFor("refusals", () => conns.some((x) => x.closed));
    const refused = conns.filter((x) => x.frames.some((f) => (f as { code?: string }).code === "TOO_MANY_CONNECTIONS"));
    expect(refused.length).toBeGreaterThan(0);
    expect(JSON.stringify(refused[0]!.frames[0])).toContain("connections open, its limit");
    for (const x of conns) x.socket.end();
    await waitFor("the node to serve again", async () => (await c.cli(["put", "after", "1"])).code === 0);
    expect(node.exitCode).toBeNull();
    expect(c.logs(0)).toMatch(/refused a connection remote=127\.0\.0\.1:\d+ reason="node has \d+ connections open, its limit/);
  });

  test("a connection that sends nothing, or stops in the middle of a frame, is closed after the frame timeout", async () => {
    const idle = await rawConnect(c.ports[0]!);
    const stalled = await rawConnect(c.ports[0]!);
    const frame = encodeFrame({ k: "req", id: 1, op: "status", pad: "x".repeat(1000) });
    stalled.socket.write(frame.subarray(0, 100));
    await waitFor("both to be closed", () => idle.closed && stalled.closed, 20_000);
    expect(c.logs(0)).toMatch(/frame timeout: no frame within \d+ ms of connecting/);
    expect(c.logs(0)).toMatch(/frame timeout: a frame was not completed within \d+ ms/);
    expect(node.exitCode).toBeNull();
  });

  test("8 clients each sending most of a 16 MiB frame: the partial-frame budget closes the excess", async () => {
    const header = encodeFrame(new Uint8Array(16 * MiB - 64)).subarray(0, 4 + 5); // length + byte-string head
    const conns: RawConn[] = [];
    for (let i = 0; i < 8; i++) {
      const x = await rawConnect(c.ports[0]!);
      x.socket.write(header);
      conns.push(x);
    }
    const chunk = new Uint8Array(MiB);
    for (let mb = 0; mb < 15; mb++) for (const x of conns) if (!x.closed) x.socket.write(chunk);
    await waitFor("the connections over the budget to be closed", () => conns.filter((x) => x.closed).length >= 3, 20_000);
    expect(c.logs(0)).toContain("partially received frames would hold more than");
    for (const x of conns) x.socket.end();
    await waitFor("the node to serve", async () => (await c.cli(["put", "after", "2"])).code === 0);
  });

  test("a client that never reads its replies is disconnected; memory stays bounded; others are served", async () => {
    const client = c.client();
    await client.put("big", new Uint8Array(500 * 1024));
    client.close();
    const rssBefore = (await c.statuses())[0]!;
    const reader = await rawConnect(c.ports[0]!, { read: false });
    for (let id = 1; id <= 400; id++) reader.socket.write(encodeFrame({ k: "req", id, op: "range", serializable: true, range: { key: new TextEncoder().encode("big") } }));
    await waitFor("the node to disconnect it", () => c.logs(0).includes("disconnected a client that does not read its replies"), 20_000);
    const after = (await c.statuses())[0] as { rssBytes?: number } & typeof rssBefore;
    expect(after.rssBytes! - (rssBefore as { rssBytes?: number }).rssBytes!).toBeLessThan(200 * MiB);
    const other = c.client();
    expect((await other.get("big"))?.value.length).toBe(500 * 1024);
    other.close();
    reader.socket.end();
  });
});
