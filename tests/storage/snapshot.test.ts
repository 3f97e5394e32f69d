import { afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  SnapshotCorruptError,
  Wal,
  loadLatestSnapshot,
  openLatestSnapshot,
  snapshotFileName,
  snapshotFiles,
  writeSnapshot,
  writeSnapshotAsync,
} from "../../src/storage";
import { flipBit, makeTempDir, removeTempDirs } from "./helpers";

afterEach(removeTempDirs);

function snap(index: number, term: number, text: string) {
  return { index, term, data: new TextEncoder().encode(text) };
}

function text(data: Uint8Array): string {
  return new TextDecoder().decode(data);
}

describe("snapshots", () => {
  test("write then load round-trips", () => {
    const dir = makeTempDir();
    const written = writeSnapshot(dir, snap(10, 2, "ten"));
    expect(written).toBe(path.join(dir, snapshotFileName(10)));
    expect(path.basename(written)).toBe("snap-0000000000000010.snap");
    const loaded = loadLatestSnapshot(dir);
    expect(loaded?.index).toBe(10);
    expect(loaded?.term).toBe(2);
    expect(text(loaded!.data)).toBe("ten");
  });

  test("an empty snapshot and a missing dir", () => {
    const dir = makeTempDir();
    expect(loadLatestSnapshot(path.join(dir, "nope"))).toBeNull();
    expect(loadLatestSnapshot(dir)).toBeNull();
    writeSnapshot(dir, snap(1, 1, ""));
    expect(loadLatestSnapshot(dir)?.data.length).toBe(0);
  });

  test("keeps only the newest two and loads the newest", () => {
    const dir = makeTempDir();
    writeSnapshot(dir, snap(10, 1, "a"));
    writeSnapshot(dir, snap(20, 1, "b"));
    writeSnapshot(dir, snap(30, 2, "c"));
    expect(snapshotFiles(dir).map((file) => file.index)).toEqual([20, 30]);
    expect(text(loadLatestSnapshot(dir)!.data)).toBe("c");
  });

  test("a corrupt newest snapshot is refused, naming the file, what is wrong and the older snapshot", () => {
    for (const [damage, problem] of [
      ["data", "data crc mismatch"],
      ["header", "header crc mismatch"],
      ["truncate", "size mismatch"],
    ] as const) {
      const dir = makeTempDir();
      const older = writeSnapshot(dir, snap(20, 1, "older state"));
      const newest = writeSnapshot(dir, snap(30, 2, "newer state"));
      if (damage === "data") flipBit(newest, fs.statSync(newest).size - 2, 1);
      if (damage === "header") flipBit(newest, 9, 0); // inside the index field
      if (damage === "truncate") fs.truncateSync(newest, fs.statSync(newest).size - 1);
      let caught: unknown = null;
      try {
        loadLatestSnapshot(dir);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(SnapshotCorruptError);
      const err = caught as SnapshotCorruptError;
      expect(err.file).toBe(newest);
      expect(err.message).toContain(`corrupt snapshot ${newest}: ${problem}`);
      expect(err.message).toContain(`move ${newest} out of the data dir to start from the older snapshot ${older}`);
    }
  });

  test("a leftover temp file is ignored, and removed when the WAL is opened", () => {
    const dir = makeTempDir();
    Wal.open(dir, { log: () => {} }).wal.close();
    writeSnapshot(dir, snap(5, 1, "five"));
    const leftover = path.join(dir, `${snapshotFileName(9)}.4242.1.tmp`);
    fs.writeFileSync(leftover, "half a snapshot");
    expect(snapshotFiles(dir).map((file) => file.index)).toEqual([5]);
    expect(loadLatestSnapshot(dir)?.index).toBe(5);
    expect(fs.existsSync(leftover)).toBe(true); // a snapshot may be being written right now
    const { wal, state } = Wal.open(dir, { log: () => {} });
    expect(state.snapshot?.index).toBe(5);
    expect(fs.existsSync(leftover)).toBe(false);
    wal.close();
  });

  test("the async writer produces the same file and prunes", async () => {
    const dir = makeTempDir();
    const data = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
    await writeSnapshotAsync(dir, { index: 1, term: 1, data: new Uint8Array([1]) });
    await writeSnapshotAsync(dir, { index: 2, term: 1, data: new Uint8Array([2]) });
    const written = await writeSnapshotAsync(dir, { index: 3, term: 4, data });
    const syncDir = makeTempDir();
    const syncWritten = writeSnapshot(syncDir, { index: 3, term: 4, data });
    expect(fs.readFileSync(written).equals(fs.readFileSync(syncWritten))).toBe(true);
    expect(snapshotFiles(dir).map((file) => file.index)).toEqual([2, 3]);
    const loaded = loadLatestSnapshot(dir);
    expect(loaded?.term).toBe(4);
    expect(Buffer.from(loaded!.data).equals(Buffer.from(data))).toBe(true);
    expect(fs.readdirSync(dir).filter((name) => name.endsWith(".tmp"))).toEqual([]);
  });
});

describe("streaming the newest snapshot to a follower (openLatestSnapshot)", () => {
  const data = new Uint8Array(3_000_000).map((_, i) => (i * 13 + (i >> 9)) & 0xff);

  async function readAll(dir: string, chunk: number): Promise<{ bytes: Uint8Array; reads: number[] }> {
    const reader = (await openLatestSnapshot(dir))!;
    const parts: Uint8Array[] = [];
    const reads: number[] = [];
    try {
      for (let offset = 0; offset < reader.size; ) {
        const part = await reader.read(offset, chunk);
        reads.push(part.length);
        parts.push(part);
        offset += part.length;
      }
    } finally {
      reader.close();
    }
    return { bytes: Buffer.concat(parts), reads };
  }

  test("gives the file's metadata and its bytes a chunk at a time, never more than asked", async () => {
    const dir = makeTempDir();
    expect(await openLatestSnapshot(dir)).toBeNull();
    writeSnapshot(dir, snap(4, 1, "older"));
    writeSnapshot(dir, { index: 9, term: 3, data });
    const reader = (await openLatestSnapshot(dir))!;
    expect({ index: reader.index, term: reader.term, size: reader.size }).toEqual({ index: 9, term: 3, size: data.length });
    expect(reader.crc).toBe(Bun.hash.crc32(data) >>> 0);
    reader.close();
    const { bytes, reads } = await readAll(dir, 1 << 20);
    expect(reads).toEqual([1 << 20, 1 << 20, data.length - 2 * (1 << 20)]);
    expect(Buffer.from(bytes).equals(Buffer.from(data))).toBe(true);
  });

  test("a flipped bit in the data fails the read that completes it, naming the file", async () => {
    const dir = makeTempDir();
    const file = writeSnapshot(dir, { index: 9, term: 3, data });
    flipBit(file, 40 + 1_500_000, 3);
    const err = await readAll(dir, 1 << 20).catch((e: Error) => e);
    expect(err).toBeInstanceOf(SnapshotCorruptError);
    expect((err as SnapshotCorruptError).file).toBe(file);
    expect((err as Error).message).toContain("data crc mismatch");
  });

  test("a damaged header or a truncated file is refused when opened, naming the file", async () => {
    const dir = makeTempDir();
    const file = writeSnapshot(dir, { index: 9, term: 3, data });
    flipBit(file, 10, 0);
    await expect(openLatestSnapshot(dir)).rejects.toThrow(`corrupt snapshot ${file}: header crc mismatch`);
    const dir2 = makeTempDir();
    const file2 = writeSnapshot(dir2, { index: 9, term: 3, data });
    fs.truncateSync(file2, 40 + 1000);
    await expect(openLatestSnapshot(dir2)).rejects.toThrow(`corrupt snapshot ${file2}: size mismatch`);
  });
});
