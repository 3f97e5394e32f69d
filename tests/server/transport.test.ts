// Snapshot streaming over real sockets: the leader reads the file a chunk at a time, a follower's
// receiver rebuilds exactly the file's bytes, and a stream stops as soon as its sender no longer leads
// the term it was sent in (issue 8, bug 6).

import { afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { listenFrames, type FrameListener } from "../../src/net";
import type { SnapChunkFrame } from "../../src/protocol";
import { Logger } from "../../src/server/log";
import { StaleSnapshotStream } from "../../src/server/runtime";
import { SnapshotReceiver, type ReceivedSnapshot } from "../../src/server/snapshot-receiver";
import { TcpTransport } from "../../src/server/transport";
import { openLatestSnapshot, SnapshotCorruptError, writeSnapshot, type SnapshotReader } from "../../src/storage";
import { waitFor } from "../net/helpers";
import { flipBit, makeTempDir, removeTempDirs } from "../storage/helpers";

const MiB = 1024 * 1024;
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const fn of cleanups.splice(0)) fn();
  removeTempDirs();
});

/** A follower's listener that feeds snapshot chunks to a SnapshotReceiver, and the leader's transport. */
function setup() {
  const chunks: SnapChunkFrame[] = [];
  const done: ReceivedSnapshot[] = [];
  const drops: string[] = [];
  const closed: unknown[] = [];
  const receiver = new SnapshotReceiver({ self: 0, peers: [1], now: () => performance.now(), onDrop: (_f, reason) => drops.push(reason) });
  const listener: FrameListener = listenFrames({
    hostname: "127.0.0.1",
    port: 0,
    onFrame: (conn, value) => {
      const f = value as SnapChunkFrame;
      if (f.k !== "snapChunk") return;
      chunks.push({ ...f, data: new Uint8Array(0) });
      const whole = receiver.receive(conn, f);
      if (whole) done.push(whole);
    },
    onClose: (conn) => {
      closed.push(conn);
      receiver.connectionClosed(conn);
    },
  });
  const log = new Logger(1, () => 1, "error", "text", () => {});
  const transport = new TcpTransport(
    1,
    [
      { id: 0, host: "127.0.0.1", port: listener.port },
      { id: 1, host: "127.0.0.1", port: 1 },
    ],
    log,
    { hello: { k: "hello", from: 1, cluster: "test", incarnation: "x" }, onRefused: () => {} },
  );
  cleanups.push(() => {
    transport.close();
    listener.stop();
  });
  return { transport, chunks, done, drops, closed };
}

function snapshotDir(bytes: number): { dir: string; data: Uint8Array; file: string } {
  const dir = makeTempDir();
  const data = new Uint8Array(bytes).map((_, i) => (i * 31 + (i >> 11)) & 0xff);
  const file = writeSnapshot(dir, { index: 77, term: 5, data });
  return { dir, data, file };
}

/** Opens the newest snapshot in `dir`, recording the size of every read. */
function recordingOpen(dir: string, reads: number[]): () => Promise<SnapshotReader | null> {
  return async () => {
    const r = await openLatestSnapshot(dir);
    if (!r) return null;
    const read = async (offset: number, length: number) => {
      const part = await r.read(offset, length);
      reads.push(part.length);
      return part;
    };
    return { index: r.index, term: r.term, size: r.size, crc: r.crc, read, close: () => r.close() };
  };
}

describe("streaming a snapshot file to a follower", () => {
  test("the follower rebuilds exactly the file's bytes; the leader never reads more than a chunk at a time", async () => {
    const { transport, done, drops } = setup();
    const { dir, data } = snapshotDir(9 * MiB + 123);
    const reads: number[] = [];
    let progress = 0;
    const ok = await transport.sendSnapshot(0, 5, recordingOpen(dir, reads), { progress: () => progress++, current: () => true });
    expect(ok).toBe(true);
    await waitFor(() => done.length === 1, "the follower to complete the snapshot", 10000);
    expect(drops).toEqual([]);
    expect(done[0]!.term).toBe(5);
    expect(done[0]!.snapshot.index).toBe(77);
    expect(Buffer.from(done[0]!.snapshot.data).equals(Buffer.from(data))).toBe(true);
    expect(reads.length).toBe(10);
    expect(Math.max(...reads)).toBe(MiB);
    expect(progress).toBe(10);
  });

  test("a stream stops as soon as its sender no longer leads the term it was sent in", async () => {
    const { transport, chunks, done, closed } = setup();
    const { dir } = snapshotDir(32 * MiB);
    let leading = true;
    let progress = 0;
    const err = await transport
      .sendSnapshot(0, 5, recordingOpen(dir, []), {
        progress: () => {
          // Leadership is lost after the second chunk went out.
          if (++progress === 2) leading = false;
        },
        current: () => leading,
      })
      .catch((e: Error) => e);
    expect(err).toBeInstanceOf(StaleSnapshotStream);
    expect((err as Error).message).toBe("no longer the leader of term 5");
    // Once the follower saw the connection close, everything sent on it has arrived: the two chunks.
    await waitFor(() => closed.length === 1, "the stream's connection to close", 10000);
    expect(chunks.map((c) => c.offset)).toEqual([0, MiB]);
    expect(done).toEqual([]);
  });

  test("a damaged snapshot file fails the transfer before its last chunk: the follower never installs it", async () => {
    const { transport, chunks, done, closed } = setup();
    const { dir, file } = snapshotDir(3 * MiB);
    flipBit(file, 40 + 100, 2);
    const err = await transport.sendSnapshot(0, 5, () => openLatestSnapshot(dir), { progress: () => {}, current: () => true }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(SnapshotCorruptError);
    expect((err as Error).message).toContain(`corrupt snapshot ${file}: data crc mismatch`);
    await waitFor(() => closed.length === 1, "the stream's connection to close", 10000);
    expect(chunks.map((c) => c.offset)).toEqual([0, MiB]);
    expect(done).toEqual([]);
    expect(fs.existsSync(file)).toBe(true);
  });
});
