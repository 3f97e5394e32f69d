// The client-serving limits and request isolation, driven through the real runtime on one node with a
// hand-driven clock and fake connections: requests in flight per connection, refusals that close a
// connection, watches per connection and in total, and replies or events too big for a frame.
import { describe, expect, test } from "bun:test";
import { FrameDecoder, FrameTooLargeError } from "../../src/net";
import type { EventFrame, ResponseFrame } from "../../src/protocol";
import { ClientService, type ClientConn } from "../../src/server/clients";
import {
  MAX_REFUSALS_PER_CONNECTION,
  MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION,
  MAX_WATCHES_PER_CONNECTION,
  MAX_WATCHES_TOTAL,
  REFUSALS_WINDOW_MS,
} from "../../src/server/limits";
import { Watches, type WatchesOptions } from "../../src/server/watches";
import { singleNodeRuntime } from "./single-node";

const te = new TextEncoder();

type FakeConn = Omit<ClientConn, "closed"> & {
  closed: boolean;
  frames: unknown[];
  /** Make send throw FrameTooLargeError for frames this returns true for. */
  tooLarge: (frame: unknown) => boolean;
};

function fakeConn(): FakeConn {
  const decoder = new FrameDecoder();
  const c: FakeConn = {
    closed: false,
    frames: [],
    tooLarge: () => false,
    close: () => void (c.closed = true),
    send: (f: unknown) => {
      if (c.tooLarge(f)) throw new FrameTooLargeError(17 << 20, 16 << 20);
      c.frames.push(f);
      return true;
    },
    sendEncoded: (bytes: Uint8Array) => (c.frames.push(...decoder.push(bytes)), true),
  };
  return c;
}

/** A single-node cluster (it elects itself) whose Ready loop runs only when the test drains it. */
function singleNode(watchOptions: Omit<WatchesOptions, "defer"> = {}) {
  const { runtime, clock, drain, tick, now, advance } = singleNodeRuntime();
  const watches = new Watches(runtime.kv, 1, { defer: clock.defer, ...watchOptions });
  const clients = new ClientService({ runtime, watches, logNow: now, now, nodes: [{ id: 1, host: "127.0.0.1", port: 1 }], status: () => ({}) as never });
  runtime.start();
  for (let i = 0; i < 20 && runtime.role !== "leader"; i++) tick();
  expect(runtime.role).toBe("leader");
  let nextId = 1;
  const put = (conn: ClientConn, key: string, value = "v") => {
    const id = nextId++;
    clients.onRequest(conn, { k: "req", id, op: "write", cmd: { op: "put", key: te.encode(key), value: te.encode(value) } } as never);
    return id;
  };
  const watch = (conn: ClientConn, key: string, prevKv = false) => {
    const id = nextId++;
    clients.onRequest(conn, { k: "req", id, op: "watch", selector: { key: te.encode(key) }, prevKv } as never);
    return id;
  };
  return { runtime, clients, watches, drain, put, watch, advance };
}

const replyTo = (conn: FakeConn, id: number) => conn.frames.find((f) => (f as ResponseFrame).k === "res" && (f as ResponseFrame).id === id) as ResponseFrame | undefined;

describe("requests in flight per connection", () => {
  test("past the limit a request is answered TOO_BUSY at once; the others on it, and other connections, are served", () => {
    const node = singleNode();
    const greedy = fakeConn();
    const ids = Array.from({ length: MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION + 1 }, (_, i) => node.put(greedy, `g/${i}`));
    const last = replyTo(greedy, ids.at(-1)!);
    expect(last).toMatchObject({ ok: false, code: "TOO_BUSY" });
    expect((last as { message: string }).message).toContain(`${MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION} requests in flight on this connection`);
    const other = fakeConn();
    const otherId = node.put(other, "other");
    node.drain();
    for (const id of ids.slice(0, -1)) expect(replyTo(greedy, id)).toMatchObject({ ok: true });
    expect(replyTo(other, otherId)).toMatchObject({ ok: true });
    // Answered requests leave the count: the connection may send again.
    const again = node.put(greedy, "g/again");
    node.drain();
    expect(replyTo(greedy, again)).toMatchObject({ ok: true });
  });

  test("a write over the limit is refused before its command is parsed and encoded", () => {
    const node = singleNode();
    const conn = fakeConn();
    for (let i = 0; i < MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION; i++) node.put(conn, `k/${i}`);
    // An empty key is a bad command: refused TOO_BUSY, it was never looked at.
    const id = node.put(conn, "");
    expect(replyTo(conn, id)).toMatchObject({ ok: false, code: "TOO_BUSY" });
    node.drain();
    // Within the limit the same write is parsed, and refused for what it is; the count went back down.
    for (let i = 0; i < MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION; i++) {
      const again = node.put(conn, "");
      expect(replyTo(conn, again)).toMatchObject({ ok: false, code: "EMPTY_KEY" });
    }
    const good = node.put(conn, "good");
    node.drain();
    expect(replyTo(conn, good)).toMatchObject({ ok: true });
  });

  test("a connection refused too often within the window is closed; one that backs off is not", () => {
    const node = singleNode();
    const conn = fakeConn();
    for (let i = 0; i < MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION; i++) node.put(conn, `k/${i}`);
    for (let i = 1; i < MAX_REFUSALS_PER_CONNECTION; i++) node.put(conn, "refused");
    node.advance(REFUSALS_WINDOW_MS); // a new window: the count starts over
    for (let i = 1; i < MAX_REFUSALS_PER_CONNECTION; i++) node.put(conn, "refused");
    expect(() => node.put(conn, "one too many")).toThrow(`after ${MAX_REFUSALS_PER_CONNECTION} of its requests were refused`);
  });
});

describe("one request's failure is that request's", () => {
  test("a reply that does not fit in a frame fails that request with RESULT_TOO_LARGE; the runtime goes on", () => {
    const node = singleNode();
    const conn = fakeConn();
    conn.tooLarge = (f) => (f as ResponseFrame).ok === true && (f as ResponseFrame).id === 1;
    const big = node.put(conn, "a");
    const next = node.put(conn, "b");
    node.drain();
    expect(replyTo(conn, big)).toMatchObject({ ok: false, code: "RESULT_TOO_LARGE" });
    expect((replyTo(conn, big) as { message: string }).message).toContain("frame limit");
    expect(replyTo(conn, next)).toMatchObject({ ok: true });
    const later = node.put(conn, "c");
    node.drain();
    expect(replyTo(conn, later)).toMatchObject({ ok: true });
    expect(node.runtime.applied).toBeGreaterThanOrEqual(3);
  });

  test("watch events that do not fit in a frame end that watch with EVENTS_TOO_LARGE; the others still get theirs", () => {
    // Frames capped at 300 bytes: a 150-byte value fits, the same with its 150-byte previous value does not.
    const node = singleNode({ maxFrameBytes: 300 });
    const conn = fakeConn();
    const value = "v".repeat(150);
    const writer = fakeConn();
    node.put(writer, "w", value);
    node.drain();
    const victim = node.watch(conn, "w", true);
    const bystander = node.watch(conn, "w");
    const id = node.put(writer, "w", value);
    node.drain();
    expect(replyTo(writer, id)).toMatchObject({ ok: true });
    const frames = (watch: number) => conn.frames.filter((f) => (f as EventFrame).k === "ev" && (f as EventFrame).id === watch) as EventFrame[];
    expect(frames(victim)).toMatchObject([{ error: { code: "EVENTS_TOO_LARGE" } }]);
    expect(frames(victim)[0]!.error!.message).toContain("over the 300-byte frame limit");
    expect(frames(bystander).map((f) => f.events?.length)).toEqual([1]);
    expect(conn.closed).toBe(false); // one watch ended, not the connection
  });
});

describe("watches per connection and in total", () => {
  test("past either limit a watch is refused TOO_MANY_WATCHES; a closed connection gives its watches back", () => {
    const node = singleNode();
    const conns: FakeConn[] = [];
    for (let k = 0; k < MAX_WATCHES_TOTAL / MAX_WATCHES_PER_CONNECTION; k++) {
      const conn = fakeConn();
      conns.push(conn);
      for (let i = 0; i < MAX_WATCHES_PER_CONNECTION; i++) node.watch(conn, `w/${i}`);
      const refused = replyTo(conn, node.watch(conn, "one more"));
      expect(refused).toMatchObject({ ok: false, code: "TOO_MANY_WATCHES" });
      if (k === 0) expect((refused as { message: string }).message).toContain(`${MAX_WATCHES_PER_CONNECTION} watches on this connection`);
    }
    const late = fakeConn();
    const refused = replyTo(late, node.watch(late, "x"));
    expect(refused).toMatchObject({ ok: false, code: "TOO_MANY_WATCHES" });
    expect((refused as { message: string }).message).toContain(`${MAX_WATCHES_TOTAL} watches in total`);
    // What the node does when a connection closes.
    conns[0]!.closed = true;
    node.watches.dropConn(conns[0]!);
    node.clients.dropConn(conns[0]!);
    expect(replyTo(late, node.watch(late, "x"))).toMatchObject({ ok: true });
  });
});
