import { describe, expect, test } from "bun:test";
import type { SnapChunkFrame } from "../../src/protocol";
import { MAX_SNAPSHOT_TRANSFER_BYTES, SNAPSHOT_TRANSFER_IDLE_TIMEOUT_MS } from "../../src/server/limits";
import { SnapshotReceiver } from "../../src/server/snapshot-receiver";

function setup() {
  let now = 1000;
  const drops: { from: number; reason: string }[] = [];
  const r = new SnapshotReceiver({ self: 0, peers: [1, 2], now: () => now, onDrop: (from, reason) => drops.push({ from, reason }) });
  return { r, drops, advance: (ms: number) => (now += ms) };
}

/** The bytes of a test snapshot of `total` bytes: each chunk is filled with its offset (mod 251). */
function chunk(from: number, offset: number, bytes: number, total: number, index = 50, crc = 0): SnapChunkFrame {
  return { k: "snapChunk", from, term: 3, index, snapTerm: 2, offset, total, crc, data: new Uint8Array(bytes).fill(offset % 251) };
}

/** crc32 of the whole snapshot that chunk() sends in chunks of `step` bytes. */
function crcOf(total: number, step: number): number {
  const all = new Uint8Array(total);
  for (let at = 0; at < total; at += step) all.fill(at % 251, at, Math.min(total, at + step));
  return Bun.hash.crc32(all) >>> 0;
}

describe("SnapshotReceiver", () => {
  test("reassembles a snapshot sent in chunks", () => {
    const { r } = setup();
    const conn = {};
    expect(r.receive(conn, chunk(1, 0, 4, 10, 50, crcOf(10, 4)))).toBeNull();
    expect(r.receive(conn, chunk(1, 4, 4, 10, 50, crcOf(10, 4)))).toBeNull();
    expect(r.bufferedBytes).toBe(8);
    const done = r.receive(conn, chunk(1, 8, 2, 10, 50, crcOf(10, 4)))!;
    expect(done).toMatchObject({ from: 1, term: 3, snapshot: { index: 50, term: 2 } });
    expect([...done.snapshot.data]).toEqual([0, 0, 0, 0, 4, 4, 4, 4, 8, 8]);
    expect(r.inProgress).toBe(0);
  });

  test("refuses chunks from a sender that is not a configured peer, or from itself, keeping nothing", () => {
    const { r } = setup();
    for (const from of [100, 101, 0]) expect(() => r.receive({}, chunk(from, 0, 1000, 1 << 30))).toThrow(`snapshot chunk from ${from}, which is not a peer of node 0`);
    expect(r.inProgress).toBe(0);
    expect(r.bufferedBytes).toBe(0);
  });

  test("refuses malformed chunks", () => {
    const { r } = setup();
    expect(() => r.receive({}, { ...chunk(1, 0, 1, 2), offset: -1 })).toThrow("malformed snapshot chunk");
    expect(() => r.receive({}, { ...chunk(1, 0, 1, 2), data: "x" as never })).toThrow("malformed snapshot chunk");
  });

  test("keeps one transfer per peer: a new one replaces the old", () => {
    const { r, drops } = setup();
    r.receive({}, chunk(1, 0, 100, 1000));
    r.receive({}, chunk(1, 0, 50, 1000, 60));
    r.receive({}, chunk(2, 0, 10, 1000));
    expect(r.inProgress).toBe(2);
    expect(r.bufferedBytes).toBe(60);
    expect(drops).toEqual([{ from: 1, reason: "a new transfer from the same peer started; 100 of 1000 bytes received" }]);
  });

  test("drops a transfer when its connection closes", () => {
    const { r, drops } = setup();
    const a = {};
    const b = {};
    r.receive(a, chunk(1, 0, 100, 1000));
    r.receive(b, chunk(2, 0, 100, 1000));
    r.connectionClosed(a);
    expect(r.inProgress).toBe(1);
    expect(drops.map((d) => d.from)).toEqual([1]);
    expect(drops[0]!.reason).toContain("its connection closed");
  });

  test("drops a transfer that has had no chunk for the idle timeout", () => {
    const { r, drops, advance } = setup();
    const conn = {};
    r.receive(conn, chunk(1, 0, 100, 1000));
    advance(SNAPSHOT_TRANSFER_IDLE_TIMEOUT_MS - 1);
    r.expire();
    r.receive(conn, chunk(1, 100, 100, 1000)); // a chunk restarts the clock
    advance(SNAPSHOT_TRANSFER_IDLE_TIMEOUT_MS - 1);
    r.expire();
    expect(r.inProgress).toBe(1);
    advance(1);
    r.expire();
    expect(r.inProgress).toBe(0);
    expect(drops).toEqual([{ from: 1, reason: `no chunk for ${SNAPSHOT_TRANSFER_IDLE_TIMEOUT_MS} ms; 200 of 1000 bytes received` }]);
  });

  test("a chunk out of order drops the transfer; a stray chunk on another connection is ignored", () => {
    const { r, drops } = setup();
    const conn = {};
    r.receive(conn, chunk(1, 0, 100, 1000));
    expect(r.receive({}, chunk(1, 100, 100, 1000))).toBeNull();
    expect(r.inProgress).toBe(1);
    expect(r.receive(conn, chunk(1, 300, 100, 1000))).toBeNull();
    expect(r.inProgress).toBe(0);
    expect(drops[0]!.reason).toContain("chunk out of order");
    // More bytes than the announced total: dropped, never written past the end.
    r.receive(conn, chunk(2, 0, 8, 10));
    expect(r.receive(conn, chunk(2, 8, 8, 10))).toBeNull();
    expect(r.inProgress).toBe(0);
  });

  test("a snapshot whose bytes do not match the sender's crc is dropped, not handed on", () => {
    const { r, drops } = setup();
    const conn = {};
    const wrong = crcOf(10, 5) ^ 1;
    expect(r.receive(conn, chunk(1, 0, 5, 10, 50, wrong))).toBeNull();
    expect(r.receive(conn, chunk(1, 5, 5, 10, 50, wrong))).toBeNull();
    expect(r.inProgress).toBe(0);
    expect(drops).toHaveLength(1);
    expect(drops[0]!.reason).toStartWith(`crc mismatch: the sender said ${wrong}`);
    // A chunk announcing another crc than the transfer's first one does not belong to it.
    r.receive(conn, chunk(2, 0, 5, 10, 50, crcOf(10, 5)));
    expect(r.receive(conn, chunk(2, 5, 5, 10, 50, 7))).toBeNull();
    expect(drops[1]!.reason).toContain("chunk out of order");
  });

  test("a transfer announcing more than MAX_SNAPSHOT_TRANSFER_BYTES is refused before anything is allocated", () => {
    const { r } = setup();
    expect(() => r.receive({}, chunk(1, 0, 10, MAX_SNAPSHOT_TRANSFER_BYTES + 1))).toThrow(`over the ${MAX_SNAPSHOT_TRANSFER_BYTES}-byte limit`);
    expect(r.inProgress).toBe(0);
    expect(() => r.receive({}, { ...chunk(1, 0, 10, 20), crc: -1 })).toThrow("malformed snapshot chunk");
  });

  test("the completed snapshot is the buffer the chunks were copied into, not a copy of the parts", () => {
    const { r } = setup();
    const conn = {};
    const total = 4 << 20;
    let done = null;
    for (let at = 0; at < total; at += 1 << 20) done = r.receive(conn, chunk(1, at, 1 << 20, total, 50, crcOf(total, 1 << 20)));
    expect(done!.snapshot.data.length).toBe(total);
    expect(done!.snapshot.data.byteOffset).toBe(0);
    expect(done!.snapshot.data.buffer.byteLength).toBe(total);
    expect(done!.snapshot.data[3 << 20]).toBe((3 << 20) % 251);
  });
});
