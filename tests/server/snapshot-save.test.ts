// The server side of `raftkv snapshot save`: the state is captured at one revision when the save begins
// (writes applied while it encodes are not in it), handed out in bounded chunks to the connection that
// started it only, and dropped when finished, when its connection closes, or when idle; one at a time.
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { KvStore } from "../../src/kv";
import { MAX_SNAPSHOT_SAVES, SNAPSHOT_SAVE_CHUNK_BYTES, SNAPSHOT_SAVE_IDLE_TIMEOUT_MS } from "../../src/server/limits";
import { SnapshotSaves } from "../../src/server/snapshot-save";
import { b, Driver } from "../kv/helpers";

function setup(keys: number, valueBytes: number) {
  const d = new Driver();
  const value = new Uint8Array(valueBytes).fill(7);
  for (let i = 0; i < keys; i++) d.ok({ op: "put", key: b(`k${i}`), value });
  let now = 0;
  const saves = new SnapshotSaves({ kv: d.store, id: 4, termAt: () => 3 }, () => now);
  return { d, saves, tick: (ms: number) => (now += ms) };
}

function pull(saves: SnapshotSaves, conn: object, save: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let off = 0; off < size; off += SNAPSHOT_SAVE_CHUNK_BYTES) {
    const chunk = saves.chunk(conn, save, off);
    expect(chunk.length).toBe(Math.min(SNAPSHOT_SAVE_CHUNK_BYTES, size - off));
    out.set(chunk, off);
  }
  return out;
}

describe("snapshot saves", () => {
  test("capture the state at the revision it began at, in chunks, with a matching checksum", async () => {
    const { d, saves } = setup(3000, 1000);
    const conn = {};
    const before = d.store.revision;
    const pending = saves.begin(conn);
    // Applied while the save encodes: not part of it.
    d.ok({ op: "put", key: b("k1"), value: b("changed") });
    d.ok({ op: "put", key: b("late"), value: b("x") });
    const h = await pending;
    expect(h).toMatchObject({ node: 4, term: 3, revision: before, index: 3000, keys: 3000, chunkBytes: SNAPSHOT_SAVE_CHUNK_BYTES });
    expect(h.size).toBeGreaterThan(2 * SNAPSHOT_SAVE_CHUNK_BYTES);
    const data = pull(saves, conn, h.save, h.size);
    expect(createHash("sha256").update(data).digest("hex")).toBe(h.sha256);
    const restored = KvStore.restore(data);
    expect(restored.revision).toBe(before);
    expect(restored.stats().keys).toBe(3000);
    expect(restored.range({ key: b("k1") }).kvs[0]!.value.length).toBe(1000);
    // Finished: the save is gone.
    expect(saves.count).toBe(0);
    expect(() => saves.chunk(conn, h.save, 0)).toThrow(/no snapshot save/);
  });

  test("chunks only to the connection that started it, at chunk offsets; dropped with its connection", async () => {
    const { saves } = setup(100, 10);
    const conn = {};
    const h = await saves.begin(conn);
    expect(() => saves.chunk({}, h.save, 0)).toThrow(/no snapshot save/);
    expect(() => saves.chunk(conn, h.save, 1)).toThrow(/offset must be a multiple/);
    expect(() => saves.chunk(conn, h.save, h.size + SNAPSHOT_SAVE_CHUNK_BYTES)).toThrow(/offset must be a multiple/);
    expect(saves.refusal()).toContain("already serving");
    saves.dropConn(conn);
    expect(saves.count).toBe(0);
    expect(saves.refusal()).toBeNull();
  });

  test(`at most ${MAX_SNAPSHOT_SAVES} at once; an idle one is dropped after ${SNAPSHOT_SAVE_IDLE_TIMEOUT_MS} ms`, async () => {
    const { saves, tick } = setup(10, 10);
    const conn = {};
    const h = await saves.begin(conn);
    expect(saves.refusal()).toMatch(/already serving 1 snapshot save/);
    tick(SNAPSHOT_SAVE_IDLE_TIMEOUT_MS - 1);
    saves.expire();
    expect(saves.count).toBe(1);
    tick(1);
    saves.expire();
    expect(saves.count).toBe(0);
    expect(() => saves.chunk(conn, h.save, 0)).toThrow(/idle/);
  });

  test("encodes and hashes in slices of about 1 MiB, yielding to the event loop between them", async () => {
    const { saves } = setup(6000, 2000); // about 12 MB
    let turns = 0;
    let counting = true;
    const count = () => {
      turns++;
      if (counting) setImmediate(count);
    };
    setImmediate(count);
    const h = await saves.begin({});
    counting = false;
    const slices = Math.ceil(h.size / (1024 * 1024));
    // Encoding and hashing each give the loop a turn per slice.
    expect(turns).toBeGreaterThanOrEqual(2 * slices - 2);
  });

  test("waits while the node's own snapshot is being encoded, then captures", async () => {
    const { d, saves } = setup(20_000, 1);
    const own = d.store.snapshotAsync(1000);
    expect(d.store.encodingSnapshot).toBe(true);
    const h = await saves.begin({});
    await own;
    expect(h.keys).toBe(20_000);
  });
});
