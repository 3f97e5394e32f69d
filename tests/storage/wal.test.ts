import { afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { Wal, WAL_SYNC_MARK_RECORD_BYTES as MARK, WalCorruptError, walSegmentName, writeSnapshot } from "../../src/storage";
import {
  collectingLog,
  copyDir,
  entries,
  entry,
  flipBit,
  makeTempDir,
  plain,
  removeTempDirs,
} from "./helpers";

afterEach(removeTempDirs);

const quiet = () => {};

function openQuiet(dir: string, segmentBytes?: number) {
  return Wal.open(dir, { log: quiet, segmentBytes });
}

function expectCorrupt(dir: string, file: string, offset: number | null, reason?: string): WalCorruptError {
  let caught: unknown = null;
  try {
    openQuiet(dir).wal.close();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(WalCorruptError);
  const err = caught as WalCorruptError;
  expect(err.message).toContain(file);
  if (offset !== null) expect(err.message).toContain(`at offset ${offset}:`);
  if (reason !== undefined) expect(err.message).toContain(reason);
  return err;
}

/**
 * Writes entries 1..count with one sync each; returns the file size after each sync (index 0: before).
 * close() then appends one more sync mark, saying that all of it was synced.
 */
function writeOneSyncEach(dir: string, count: number, segmentBytes?: number): number[] {
  const { wal } = openQuiet(dir, segmentBytes);
  const file = path.join(dir, walSegmentName(1));
  const sizes = [fs.statSync(file).size];
  for (let i = 1; i <= count; i++) {
    wal.append([entry(i, 1)]);
    wal.sync();
    sizes.push(fs.statSync(file).size);
  }
  wal.close();
  return sizes;
}

describe("wal round trip", () => {
  test("a fresh WAL recovers the default state", () => {
    const dir = makeTempDir();
    const { wal, state } = openQuiet(dir);
    expect(state).toEqual({ hardState: { term: 0, vote: -1, commit: 0 }, entries: [], snapshot: null });
    expect(wal.lastIndex()).toBe(0);
    wal.close();
  });

  test("entries and hard states across several syncs come back after reopen", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir);
    wal.append(entries(1, 3, 1));
    wal.setHardState({ term: 1, vote: 2, commit: 0 });
    wal.sync();
    wal.append(entries(4, 5, 2));
    wal.setHardState({ term: 2, vote: -1, commit: 3 });
    wal.sync();
    wal.sync(); // nothing pending: a no-op
    wal.append([{ index: 6, term: 2, data: new Uint8Array(0) }]); // a no-op entry with empty data
    wal.sync();
    expect(wal.lastIndex()).toBe(6);
    wal.close();

    const { wal: reopened, state } = openQuiet(dir);
    expect(state.hardState).toEqual({ term: 2, vote: -1, commit: 3 });
    expect(plain(state.entries)).toEqual(
      plain([...entries(1, 3, 1), ...entries(4, 5, 2), { index: 6, term: 2, data: new Uint8Array(0) }]),
    );
    expect(state.snapshot).toBeNull();
    expect(reopened.lastIndex()).toBe(6);
    expect(reopened.sizeBytes()).toBe(fs.statSync(path.join(dir, walSegmentName(1))).size);
    reopened.close();
  });

  test("large terms, indexes and votes survive the u64 encoding", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir);
    const big = 2 ** 40 + 7;
    wal.append([entry(1, big)]);
    wal.setHardState({ term: big, vote: 2 ** 33 + 1, commit: 1 });
    wal.close();
    const { wal: reopened, state } = openQuiet(dir);
    expect(state.hardState).toEqual({ term: big, vote: 2 ** 33 + 1, commit: 1 });
    expect(state.entries[0]!.term).toBe(big);
    reopened.close();
  });

  test("close syncs what is still buffered", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir);
    wal.append(entries(1, 2, 1));
    expect(wal.pendingBytes()).toBeGreaterThan(0);
    wal.close();
    const { wal: reopened, state } = openQuiet(dir);
    expect(state.entries.map((e) => e.index)).toEqual([1, 2]);
    reopened.close();
  });

  test("a 1 MiB entry round-trips", () => {
    const dir = makeTempDir();
    const data = new Uint8Array(1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff;
    const { wal } = openQuiet(dir);
    wal.append([entry(1, 1), { index: 2, term: 1, data }, entry(3, 1)]);
    wal.sync();
    wal.close();
    const { wal: reopened, state } = openQuiet(dir);
    expect(state.entries.length).toBe(3);
    expect(Buffer.from(state.entries[1]!.data).equals(Buffer.from(data))).toBe(true);
    expect(plain([state.entries[2]!])).toEqual(plain([entry(3, 1)]));
    reopened.close();
  });

  test("append rejects gaps and non-contiguous batches", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir);
    expect(() => wal.append([entry(2, 1)])).toThrow(RangeError);
    expect(() => wal.append([entry(1, 1), entry(3, 1)])).toThrow(RangeError);
    wal.close();
  });
});

describe("wal truncation", () => {
  test("appending 6..7 after 1..10 replaces the suffix (separate syncs)", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir);
    wal.append(entries(1, 10, 1));
    wal.sync();
    wal.append(entries(6, 7, 2));
    wal.sync();
    expect(wal.lastIndex()).toBe(7);
    wal.close();

    const { wal: reopened, state } = openQuiet(dir);
    expect(plain(state.entries)).toEqual(plain([...entries(1, 5, 1), ...entries(6, 7, 2)]));
    expect(reopened.lastIndex()).toBe(7);
    reopened.append(entries(8, 8, 3));
    reopened.close();

    const { wal: third, state: again } = openQuiet(dir);
    expect(plain(again.entries)).toEqual(plain([...entries(1, 5, 1), ...entries(6, 7, 2), ...entries(8, 8, 3)]));
    third.close();
  });

  test("truncation inside one sync batch", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir);
    wal.append(entries(1, 10, 1));
    wal.append(entries(6, 7, 2));
    wal.append(entries(2, 2, 3));
    wal.sync();
    wal.close();
    const { wal: reopened, state } = openQuiet(dir);
    expect(plain(state.entries)).toEqual(plain([entry(1, 1), entry(2, 3)]));
    reopened.close();
  });
});

describe("wal torn tail", () => {
  test("a torn last batch at every byte offset is truncated away and appends continue cleanly", () => {
    const count = 5;
    const original = makeTempDir();
    const sizes = writeOneSyncEach(original, count);
    const file = walSegmentName(1);
    const lastRecordStart = sizes[count - 1]!; // the last batch: a sync mark, then entry 5
    const lastRecordLength = sizes[count]! - lastRecordStart;
    expect(lastRecordLength).toBeGreaterThan(MARK + 12);

    for (let k = 1; k < lastRecordLength; k++) {
      const dir = copyDir(original);
      const segmentPath = path.join(dir, file);
      fs.truncateSync(segmentPath, sizes[count]! - k); // also drops the sync mark close() wrote
      const cutRecordStart = sizes[count]! - k < lastRecordStart + MARK ? lastRecordStart : lastRecordStart + MARK;

      const { lines, log } = collectingLog();
      const { wal, state } = Wal.open(dir, { log });
      expect(plain(state.entries)).toEqual(plain(entries(1, count - 1, 1)));
      const warnings = lines.filter((line) => line.level === "warn");
      if (sizes[count]! - k === cutRecordStart) {
        expect(warnings).toEqual([]); // cut between the sync mark and the entry: nothing is torn
      } else {
        expect(warnings.length).toBe(1);
        expect(warnings[0]!.msg).toContain(segmentPath);
        expect(warnings[0]!.msg).toContain(`offset ${cutRecordStart}`);
        expect(warnings[0]!.msg).toContain(`(${sizes[count]! - k - cutRecordStart} bytes dropped`);
      }

      wal.append([entry(count, 2, `replacement-${k}`)]);
      wal.sync();
      wal.close();

      const after = collectingLog();
      const { wal: reopened, state: recovered } = Wal.open(dir, { log: after.log });
      expect(plain(recovered.entries)).toEqual(
        plain([...entries(1, count - 1, 1), entry(count, 2, `replacement-${k}`)]),
      );
      expect(after.lines.filter((line) => line.level === "warn")).toEqual([]);
      reopened.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a crc mismatch in the last batch, which no sync mark says was synced, is a torn tail", () => {
    const dir = makeTempDir();
    const sizes = writeOneSyncEach(dir, 4);
    const segmentPath = path.join(dir, walSegmentName(1));
    fs.truncateSync(segmentPath, sizes[4]!); // as if killed before close() wrote its sync mark
    flipBit(segmentPath, sizes[4]! - 1, 3); // last byte of the last record's payload
    const { lines, log } = collectingLog();
    const { wal, state } = Wal.open(dir, { log });
    expect(state.entries.map((e) => e.index)).toEqual([1, 2, 3]);
    expect(lines.some((line) => line.level === "warn" && line.msg.includes(`offset ${sizes[3]! + MARK}: crc mismatch`))).toBe(true);
    wal.close();
  });

  test("an all-zero tail (preallocated or unwritten blocks) is truncated", () => {
    const dir = makeTempDir();
    writeOneSyncEach(dir, 3);
    const segmentPath = path.join(dir, walSegmentName(1));
    const closedSize = fs.statSync(segmentPath).size;
    fs.appendFileSync(segmentPath, new Uint8Array(4096));
    const { lines, log } = collectingLog();
    const { wal, state } = Wal.open(dir, { log });
    expect(state.entries.map((e) => e.index)).toEqual([1, 2, 3]);
    expect(lines.filter((line) => line.level === "warn").length).toBe(1);
    expect(fs.statSync(segmentPath).size).toBe(closedSize);
    wal.append([entry(4, 1)]);
    wal.close();
    const { wal: reopened, state: recovered } = openQuiet(dir);
    expect(recovered.entries.map((e) => e.index)).toEqual([1, 2, 3, 4]);
    reopened.close();
  });

  test("garbage after the synced region is a torn tail; the same garbage inside it is corruption", () => {
    const dir = makeTempDir();
    writeOneSyncEach(dir, 3);
    const segmentPath = path.join(dir, walSegmentName(1));
    const closedSize = fs.statSync(segmentPath).size;
    fs.appendFileSync(segmentPath, new Uint8Array(64).fill(0xab));
    const torn = collectingLog();
    Wal.open(dir, { log: torn.log }).wal.close();
    expect(torn.lines.filter((line) => line.level === "warn").map((line) => line.msg)).toEqual([
      expect.stringContaining(`at offset ${closedSize}: header check mismatch (64 bytes dropped`),
    ]);

    const inside = makeTempDir();
    const sizes = writeOneSyncEach(inside, 3);
    const insidePath = path.join(inside, walSegmentName(1));
    const bytes = fs.readFileSync(insidePath);
    bytes.fill(0xab, sizes[1]!, sizes[1]! + 20);
    fs.writeFileSync(insidePath, bytes);
    expectCorrupt(inside, insidePath, sizes[1]!, "header check mismatch");
  });
});

describe("wal corruption", () => {
  test("a flipped bit anywhere in a record in the middle of the log is reported with file and offset", () => {
    const original = makeTempDir();
    const sizes = writeOneSyncEach(original, 6);
    const middleStart = sizes[3]!; // batch of entry 4: a sync mark, then the entry
    const middleEnd = sizes[4]!;
    for (let offset = middleStart; offset < middleEnd; offset++) {
      const dir = copyDir(original);
      const segmentPath = path.join(dir, walSegmentName(1));
      flipBit(segmentPath, offset, offset % 8);
      expectCorrupt(dir, segmentPath, offset < middleStart + MARK ? middleStart : middleStart + MARK);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a flipped bit in a payload reports a crc mismatch", () => {
    const dir = makeTempDir();
    const sizes = writeOneSyncEach(dir, 4);
    const segmentPath = path.join(dir, walSegmentName(1));
    flipBit(segmentPath, sizes[1]! + 20, 0);
    expectCorrupt(dir, segmentPath, sizes[1]!, "crc mismatch");
  });

  test("corruption in a non-last segment is reported, even at its tail", () => {
    const original = makeTempDir();
    const { wal } = openQuiet(original, 200);
    for (let i = 1; i <= 30; i++) {
      wal.append([entry(i, 1)]);
      wal.sync();
    }
    expect(wal.segmentPaths().length).toBeGreaterThanOrEqual(3);
    wal.close();

    const flipped = copyDir(original);
    const first = path.join(flipped, walSegmentName(1));
    const middle = Math.floor(fs.statSync(first).size / 2);
    flipBit(first, middle, 5);
    const err = expectCorrupt(flipped, first, null);
    expect(err.file).toBe(first);
    expect(err.offset).not.toBeNull();
    expect(err.message).toContain(`at offset ${err.offset}:`);

    const truncated = copyDir(original);
    const second = path.join(truncated, walSegmentName(2));
    fs.truncateSync(second, fs.statSync(second).size - 3);
    expectCorrupt(truncated, second, null, "runs past the end of the file");

    const missing = copyDir(original);
    fs.rmSync(path.join(missing, walSegmentName(2)));
    expectCorrupt(missing, walSegmentName(2), null, "missing");
  });

  test("an unknown record type is corruption", () => {
    const dir = makeTempDir();
    const sizes = writeOneSyncEach(dir, 3);
    const segmentPath = path.join(dir, walSegmentName(1));
    // Rewrite entry 2's type byte and fix up its header check so only the type is wrong.
    const bytes = fs.readFileSync(segmentPath);
    const start = sizes[1]!;
    bytes[start + 8] = 9;
    const check = Bun.hash.crc32(bytes.subarray(start, start + 10)) & 0xffff;
    bytes.writeUInt16LE(check, start + 10);
    fs.writeFileSync(segmentPath, bytes);
    expectCorrupt(dir, segmentPath, start, "unknown record type 9");
  });
});

describe("wal segments and compaction", () => {
  test("rotation with a tiny segment size; every segment replays in order", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir, 256);
    for (let i = 1; i <= 40; i++) {
      wal.append([entry(i, 1 + Math.floor(i / 10))]);
      if (i % 3 === 0) wal.setHardState({ term: 1 + Math.floor(i / 10), vote: 1, commit: i - 2 });
      wal.sync();
    }
    const segmentPaths = wal.segmentPaths();
    expect(segmentPaths.length).toBeGreaterThan(3);
    expect(segmentPaths).toEqual(segmentPaths.map((_, i) => path.join(dir, walSegmentName(i + 1))));
    const onDisk = segmentPaths.reduce((sum, file) => sum + fs.statSync(file).size, 0);
    expect(wal.sizeBytes()).toBe(onDisk);
    wal.close();

    const { wal: reopened, state } = openQuiet(dir, 256);
    expect(state.entries.map((e) => e.index)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(plain(state.entries)).toEqual(plain(Array.from({ length: 40 }, (_, i) => entry(i + 1, 1 + Math.floor((i + 1) / 10)))));
    expect(state.hardState).toEqual({ term: 4, vote: 1, commit: 37 });
    reopened.close();
  });

  test("compact deletes covered segments, keeps the hard state; reopen yields entries after the snapshot", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir, 256);
    wal.setHardState({ term: 7, vote: 3, commit: 0 }); // only ever written once, into segment 1
    for (let i = 1; i <= 40; i++) {
      wal.append([entry(i, 7)]);
      wal.sync();
    }
    const before = wal.segmentPaths();
    writeSnapshot(dir, { index: 25, term: 7, data: new TextEncoder().encode("state@25") });
    const deleted = wal.compact(25);
    expect(deleted).toBeGreaterThan(0);
    const after = wal.segmentPaths();
    expect(after).toEqual(before.slice(deleted));
    expect(fs.existsSync(before[0]!)).toBe(false);
    expect(wal.sizeBytes()).toBe(after.reduce((sum, file) => sum + fs.statSync(file).size, 0));
    expect(wal.compact(25)).toBe(0); // idempotent
    wal.close();

    const { wal: reopened, state } = openQuiet(dir, 256);
    expect(state.snapshot?.index).toBe(25);
    expect(new TextDecoder().decode(state.snapshot!.data)).toBe("state@25");
    expect(state.hardState).toEqual({ term: 7, vote: 3, commit: 0 });
    expect(plain(state.entries)).toEqual(plain(entries(26, 40, 7)));
    expect(reopened.lastIndex()).toBe(40);
    reopened.close();

    // Without the snapshot those segments can no longer give a complete log: refuse to start.
    for (const name of fs.readdirSync(dir)) if (name.startsWith("snap-")) fs.rmSync(path.join(dir, name));
    expectCorrupt(dir, dir, null, "does not follow the snapshot index 0");
  });

  test("compact never deletes the current segment", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir);
    wal.append(entries(1, 5, 1));
    wal.sync();
    expect(wal.compact(1000)).toBe(0);
    expect(wal.segmentPaths().length).toBe(1);
    wal.close();
  });

  test("a reset log after installing a snapshot continues after the snapshot index", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir);
    wal.append(entries(1, 5, 1));
    wal.sync();
    expect(() => wal.append([entry(101, 3)])).toThrow(RangeError);
    writeSnapshot(dir, { index: 100, term: 3, data: new Uint8Array([1]) });
    wal.resetLog({ index: 100, term: 3 });
    expect(wal.lastIndex()).toBe(100);
    wal.append(entries(101, 102, 3));
    wal.close();

    const { wal: reopened, state } = openQuiet(dir);
    expect(state.snapshot?.index).toBe(100);
    expect(plain(state.entries)).toEqual(plain(entries(101, 102, 3)));
    reopened.close();

    for (const name of fs.readdirSync(dir)) if (name.startsWith("snap-")) fs.rmSync(path.join(dir, name));
    expectCorrupt(dir, walSegmentName(1), null, "entry 101 does not follow the snapshot index 0");
  });

  test("a reset log whose snapshot is gone is corruption even with no entries after it", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir);
    wal.append(entries(1, 5, 1));
    const snapshotPath = writeSnapshot(dir, { index: 50, term: 2, data: new Uint8Array([1]) });
    wal.resetLog({ index: 50, term: 2 });
    wal.close();
    const { wal: reopened, state } = openQuiet(dir);
    expect(state.entries).toEqual([]);
    expect(reopened.lastIndex()).toBe(50);
    reopened.close();
    fs.rmSync(snapshotPath);
    expectCorrupt(dir, walSegmentName(1), null, "reset to snapshot 50 but the newest valid snapshot is at index 0");
  });

  test("an empty last segment (crash right after creating it) gets the hard state and is used", () => {
    const dir = makeTempDir();
    const { wal } = openQuiet(dir, 100);
    wal.setHardState({ term: 2, vote: 1, commit: 1 });
    wal.append(entries(1, 3, 2));
    wal.sync();
    wal.close();
    const segmentCount = fs.readdirSync(dir).filter((name) => name.startsWith("wal-")).length;
    const emptyPath = path.join(dir, walSegmentName(segmentCount + 1));
    fs.writeFileSync(emptyPath, new Uint8Array(0));

    const { wal: reopened, state } = openQuiet(dir, 100);
    expect(state.entries.map((e) => e.index)).toEqual([1, 2, 3]);
    expect(fs.statSync(emptyPath).size).toBeGreaterThan(0);
    reopened.compact(3);
    reopened.close();
    const { wal: third, state: again } = openQuiet(dir, 100);
    expect(again.hardState).toEqual({ term: 2, vote: 1, commit: 1 });
    third.close();
  });
});

describe("wal format version 1", () => {
  /** One record as version 1 wrote it (the header is the same in version 2). */
  function v1Record(type: number, payload: Uint8Array): Buffer {
    const header = Buffer.alloc(12);
    header.writeUInt32LE(payload.length, 0);
    header.writeUInt32LE(Bun.hash.crc32(payload) >>> 0, 4);
    header[8] = type;
    header.writeUInt16LE(Bun.hash.crc32(header.subarray(0, 10)) & 0xffff, 10);
    return Buffer.concat([header, payload]);
  }
  function v1Entry(index: number, term: number, text: string): Buffer {
    const fixed = Buffer.alloc(16);
    fixed.writeBigUInt64LE(BigInt(index), 0);
    fixed.writeBigUInt64LE(BigInt(term), 8);
    return v1Record(1, Buffer.concat([fixed, Buffer.from(text)]));
  }
  function v1HardState(term: number, vote: number, commit: number): Buffer {
    const payload = Buffer.alloc(24);
    payload.writeBigUInt64LE(BigInt(term), 0);
    payload.writeBigInt64LE(BigInt(vote), 8);
    payload.writeBigUInt64LE(BigInt(commit), 16);
    return v1Record(2, payload);
  }

  test("a version 1 segment is read, its torn tail truncated by version 1's rule, and new batches go to a new segment", () => {
    const dir = makeTempDir();
    const first = path.join(dir, walSegmentName(1));
    const complete = Buffer.concat([v1HardState(3, 1, 2), v1Entry(1, 3, "cmd-1-3"), v1Entry(2, 3, "cmd-2-3")]);
    fs.writeFileSync(first, Buffer.concat([complete, v1Entry(3, 3, "cmd-3-3").subarray(0, 20)]));
    const { lines, log } = collectingLog();
    const { wal, state } = Wal.open(dir, { log });
    expect(state.hardState).toEqual({ term: 3, vote: 1, commit: 2 });
    expect(plain(state.entries)).toEqual(plain([entry(1, 3), entry(2, 3)]));
    expect(lines.filter((line) => line.level === "warn").length).toBe(1);
    expect(fs.statSync(first).size).toBe(complete.length);
    wal.append([entry(3, 4)]);
    wal.setHardState({ term: 4, vote: 2, commit: 3 });
    wal.close();
    expect(wal.segmentPaths()).toEqual([first, path.join(dir, walSegmentName(2))]);
    expect(fs.statSync(first).size).toBe(complete.length); // version 1 data is never appended to

    const { wal: reopened, state: again } = openQuiet(dir);
    expect(again.hardState).toEqual({ term: 4, vote: 2, commit: 3 });
    expect(plain(again.entries)).toEqual(plain([entry(1, 3), entry(2, 3), entry(3, 4)]));
    reopened.close();

    // Version 1 data is now in a segment that is not the last: any damage in it is corruption.
    flipBit(first, complete.length - 1, 0);
    expectCorrupt(dir, first, null, "crc mismatch");
  });
});
