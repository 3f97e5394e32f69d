import { afterEach, describe, expect, test } from "bun:test";
import { FrameError, type FrameListener, FramedConn, SlowReaderError, dialFrames, listenFrames, DialError } from "../../src/net";
import { bytesEqual, patternBytes, waitFor } from "./helpers";

const HOST = "127.0.0.1";
const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()!();
});

function listenEcho(extra: { errors?: Error[] } = {}): FrameListener {
  const listener = listenFrames({
    hostname: HOST,
    port: 0,
    onFrame: (conn, value) => {
      conn.send({ echo: value });
    },
    onError: (_conn, err) => {
      extra.errors?.push(err);
    },
  });
  cleanups.push(() => listener.stop());
  return listener;
}

describe("listener + dial", () => {
  test("port 0 yields a real port; request/response echo", async () => {
    const listener = listenEcho();
    expect(listener.port).toBeGreaterThan(0);
    const replies: unknown[] = [];
    const conn = await dialFrames(HOST, listener.port, { onFrame: (_c, v) => replies.push(v) });
    cleanups.push(() => conn.close());
    expect(conn.send({ k: "get", key: new Uint8Array([1, 2]), n: 1 })).toBe(true);
    expect(conn.send(["second", null])).toBe(true);
    await waitFor(() => replies.length === 2, "two echoes");
    expect(replies).toEqual([{ echo: { k: "get", key: new Uint8Array([1, 2]), n: 1 } }, { echo: ["second", null] }]);
    expect(listener.connections.size).toBe(1);
  });

  test("onClose runs on both ends once, and send on a closed conn returns false", async () => {
    const serverClosed: string[] = [];
    const listener = listenFrames({
      hostname: HOST,
      port: 0,
      onFrame: () => {},
      onClose: (conn) => serverClosed.push(conn.closeReason ?? "?"),
    });
    cleanups.push(() => listener.stop());
    let clientCloses = 0;
    const conn = await dialFrames(HOST, listener.port, { onFrame: () => {}, onClose: () => clientCloses++ });
    await waitFor(() => listener.connections.size === 1, "server to accept");
    conn.close("test done");
    expect(conn.closed).toBe(true);
    expect(conn.closeReason).toBe("test done");
    expect(clientCloses).toBe(1);
    expect(conn.send({ late: true })).toBe(false);
    await waitFor(() => serverClosed.length === 1, "server to see the close");
    expect(listener.connections.size).toBe(0);
    conn.close();
    expect(clientCloses).toBe(1);
  });

  test("50 MiB in 1 MiB values arrives intact and in order", async () => {
    const count = 50;
    const size = 1024 * 1024;
    const received: { seq: number; ok: boolean }[] = [];
    const listener = listenFrames({
      hostname: HOST,
      port: 0,
      onFrame: (_conn, value) => {
        const { seq, body } = value as { seq: number; body: Uint8Array };
        received.push({ seq, ok: body instanceof Uint8Array && bytesEqual(body, patternBytes(size, seq)) });
      },
    });
    cleanups.push(() => listener.stop());
    const conn = await dialFrames(HOST, listener.port, { onFrame: () => {} });
    cleanups.push(() => conn.close());
    let maxQueued = 0;
    for (let seq = 0; seq < count; seq++) {
      expect(conn.send({ seq, body: patternBytes(size, seq) })).toBe(true);
      maxQueued = Math.max(maxQueued, conn.queuedBytes);
    }
    expect(maxQueued).toBeGreaterThan(0); // the socket could not take it all at once: drain did the rest
    await waitFor(() => received.length === count, "all 50 frames", 30_000); // generous: the machine may be loaded
    expect(received.map((r) => r.seq)).toEqual(Array.from({ length: count }, (_, i) => i));
    expect(received.every((r) => r.ok)).toBe(true);
    expect(conn.queuedBytes).toBe(0);
  });

  test("over maxQueuedBytes send returns false; accepted frames all arrive in order", async () => {
    const received: number[] = [];
    const listener = listenFrames({
      hostname: HOST,
      port: 0,
      onFrame: (_conn, value) => received.push((value as { seq: number }).seq),
    });
    cleanups.push(() => listener.stop());
    const maxQueuedBytes = 1024 * 1024;
    const conn = await dialFrames(HOST, listener.port, { onFrame: () => {}, maxQueuedBytes });
    cleanups.push(() => conn.close());
    const accepted: number[] = [];
    const body = new Uint8Array(256 * 1024);
    const frames = 160; // 40 MiB: more than loopback socket buffers take in one go
    for (let seq = 0; seq < frames; seq++) {
      if (conn.send({ seq, body })) accepted.push(seq);
      expect(conn.queuedBytes).toBeLessThanOrEqual(maxQueuedBytes);
    }
    expect(accepted.length).toBeLessThan(frames);
    await waitFor(() => conn.queuedBytes === 0 && received.length === accepted.length, "accepted frames");
    expect(received).toEqual(accepted);
    // Once drained, sending works again.
    expect(conn.send({ seq: 1000, body })).toBe(true);
    await waitFor(() => received.at(-1) === 1000, "frame after drain");
  });

  test("a client sending garbage is disconnected; the listener keeps serving", async () => {
    const errors: Error[] = [];
    const listener = listenEcho({ errors });
    let rawClosed = false;
    const raw = await Bun.connect({
      hostname: HOST,
      port: listener.port,
      socket: {
        data() {},
        close() {
          rawClosed = true;
        },
      },
    });
    cleanups.push(() => raw.terminate());
    raw.write(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8]));
    await waitFor(() => rawClosed, "server to drop the garbage client");
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(FrameError);
    expect(errors[0]!.message).toContain("exceeds the 16777216-byte limit");

    // Valid length, invalid CBOR.
    let raw2Closed = false;
    const raw2 = await Bun.connect({
      hostname: HOST,
      port: listener.port,
      socket: {
        data() {},
        close() {
          raw2Closed = true;
        },
      },
    });
    cleanups.push(() => raw2.terminate());
    raw2.write(new Uint8Array([0, 0, 0, 3, 0x1c, 0x1c, 0x1c]));
    await waitFor(() => raw2Closed, "server to drop the bad-CBOR client");
    expect(errors).toHaveLength(2);
    expect(errors[1]!.message).toStartWith("malformed CBOR in frame: ");

    const replies: unknown[] = [];
    const good = await dialFrames(HOST, listener.port, { onFrame: (_c, v) => replies.push(v) });
    cleanups.push(() => good.close());
    good.send({ hi: 1 });
    await waitFor(() => replies.length === 1, "echo for the good client");
    expect(replies[0]).toEqual({ echo: { hi: 1 } });
  });

  test("a throwing onFrame closes that connection only and is reported", async () => {
    const errors: Error[] = [];
    const listener = listenFrames({
      hostname: HOST,
      port: 0,
      onFrame: (conn, value) => {
        if ((value as { boom?: boolean }).boom) throw new Error("handler bug");
        conn.send(value);
      },
      onError: (_conn, err) => errors.push(err),
    });
    cleanups.push(() => listener.stop());
    let closed = false;
    const bad = await dialFrames(HOST, listener.port, { onFrame: () => {}, onClose: () => (closed = true) });
    cleanups.push(() => bad.close());
    bad.send({ boom: true });
    await waitFor(() => closed, "server to close the connection");
    expect(errors.map((e) => e.message)).toEqual(["handler bug"]);
    const replies: unknown[] = [];
    const good = await dialFrames(HOST, listener.port, { onFrame: (_c, v) => replies.push(v) });
    cleanups.push(() => good.close());
    good.send({ fine: true });
    await waitFor(() => replies.length === 1, "reply");
  });

  test("dial to a closed port rejects with a DialError", async () => {
    const listener = listenEcho();
    const port = listener.port;
    listener.stop();
    let caught: unknown;
    try {
      await dialFrames(HOST, port, { onFrame: () => {} }, 1000);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(DialError);
    expect((caught as Error).message).toContain(`connect to ${HOST}:${port} failed`);
  });

  test("listener.stop closes accepted connections", async () => {
    const listener = listenEcho();
    let closed: FramedConn | undefined;
    const conn = await dialFrames(HOST, listener.port, { onFrame: () => {}, onClose: (c) => (closed = c) });
    await waitFor(() => listener.connections.size === 1, "accept");
    listener.stop();
    await waitFor(() => closed !== undefined, "client to see the close");
    expect(conn.closed).toBe(true);
  });
});

describe("slow reader held paused", () => {
  /** A socket that takes `accept` bytes per write (0: none) and records pause/resume. */
  function fakeSocket() {
    const s = { accept: 0, paused: false, write: (d: Uint8Array) => Math.min(d.length, s.accept), end() {}, terminate() {}, pause: () => void (s.paused = true), resume: () => void (s.paused = false), remoteAddress: "10.0.0.1", remotePort: 9 };
    return s;
  }

  test("is disconnected once paused since before the cut-off; one that drained in time is not", () => {
    const socket = fakeSocket();
    const errors: Error[] = [];
    const conn = new FramedConn(socket, { onFrame() {}, onError: (_c, e) => void errors.push(e) }, { slowReader: { pauseAtBytes: 1000, disconnectAtBytes: 100_000 } });
    expect(conn.dropIfPausedSince(performance.now())).toBe(false); // not paused: never dropped
    for (let i = 0; i < 3; i++) conn.send({ pad: "x".repeat(500) });
    expect(socket.paused).toBe(true);
    const pausedBy = performance.now();
    expect(conn.dropIfPausedSince(pausedBy - 60_000)).toBe(false); // paused after the cut-off
    // It reads: the queue drains below half the pause mark, reading resumes, and the clock starts over.
    socket.accept = 1 << 20;
    conn.drain();
    expect(socket.paused).toBe(false);
    expect(conn.dropIfPausedSince(pausedBy)).toBe(false);
    socket.accept = 0;
    for (let i = 0; i < 3; i++) conn.send({ pad: "x".repeat(500) });
    expect(conn.dropIfPausedSince(performance.now())).toBe(true);
    expect(conn.closed).toBe(true);
    expect(errors[0]).toBeInstanceOf(SlowReaderError);
    expect(errors[0]!.message).toContain("has not read its replies for");
  });
});
