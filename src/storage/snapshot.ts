// Snapshot files: snap-<index, 16 digits>.snap, written via temp file + fsync + rename + fsync(dir).
//
// File layout (little-endian), header of SNAPSHOT_HEADER_BYTES = 40 bytes, then the data:
//   0  magic "RKVS" (4 bytes)
//   4  u32 format version (1)
//   8  u64 index
//  16  u64 term
//  24  u64 data length
//  32  u32 crc32 of data
//  36  u32 crc32 of header bytes 0..35
//  40  data

import * as path from "node:path";
import type { Snapshot } from "../raft/types";
import { readWholeFile, realDisk, type Disk } from "./disk";
import { crc32, errorCode, getU64, isSafeIndex, setU64 } from "./util";

export type StorageLog = (level: "warn" | "info", msg: string) => void;

export class SnapshotCorruptError extends Error {
  override readonly name = "SnapshotCorruptError";
  constructor(
    readonly file: string,
    readonly problem: string,
    readonly older: string | null,
  ) {
    super(
      `corrupt snapshot ${file}: ${problem}. It was synced before it got its name, so this is corruption, not a ` +
        `torn write, and the node will not start on it. Do not edit the file. Options: ` +
        (older === null
          ? "restore this node's data dir from a backup, or replace the node with a new member from a healthy peer."
          : `move ${file} out of the data dir to start from the older snapshot ${older} (the node refuses again if ` +
            `its log no longer reaches back to it), or restore this node's data dir from a backup, or replace the ` +
            `node with a new member from a healthy peer.`),
    );
  }
}

/**
 * A snapshot opened for streaming (openLatestSnapshot). Its data is what the file holds: the cluster
 * configuration, if any, ahead of the state machine's bytes.
 */
export interface SnapshotReader {
  readonly index: number;
  readonly term: number;
  /** Bytes of data. */
  readonly size: number;
  /** crc32 of the data (the file header's). */
  readonly crc: number;
  /**
   * `length` bytes of data at `offset` (fewer at the end). Data read in order is checked: the read that
   * completes it throws SnapshotCorruptError if the crc does not match the header's.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): void;
}

export const SNAPSHOT_HEADER_BYTES = 40;
export const SNAPSHOT_FORMAT_VERSION = 1;
/** How many snapshot files writeSnapshot leaves behind (the newest ones). */
export const SNAPSHOTS_KEPT = 2;

const SNAPSHOT_MAGIC = new Uint8Array([0x52, 0x4b, 0x56, 0x53]); // "RKVS"
const SNAPSHOT_NAME = /^snap-(\d{16})\.snap$/;
const SNAPSHOT_TEMP_NAME = /^snap-\d{16}\.snap\.\d+\.\d+\.tmp$/;

let tempCounter = 0;

export interface SnapshotFile {
  name: string;
  path: string;
  index: number;
}

export function snapshotFileName(index: number): string {
  return `snap-${String(index).padStart(16, "0")}.snap`;
}

function tempPathFor(dir: string, index: number): string {
  tempCounter += 1;
  return path.join(dir, `${snapshotFileName(index)}.${process.pid}.${tempCounter}.tmp`);
}

function readDirOrEmpty(dir: string, disk: Disk): string[] {
  try {
    return disk.readdir(dir);
  } catch (err) {
    if (errorCode(err) === "ENOENT") return [];
    throw err;
  }
}

/** Snapshot files in `dir`, oldest (lowest index) first. Temp files are not listed. */
export function snapshotFiles(dir: string, disk: Disk = realDisk): SnapshotFile[] {
  const files: SnapshotFile[] = [];
  for (const name of readDirOrEmpty(dir, disk)) {
    const match = SNAPSHOT_NAME.exec(name);
    if (match) files.push({ name, path: path.join(dir, name), index: Number(match[1]) });
  }
  files.sort((a, b) => a.index - b.index);
  return files;
}

function encodeSnapshotHeader(snap: Snapshot): Uint8Array {
  if (!isSafeIndex(snap.index) || !isSafeIndex(snap.term)) {
    throw new RangeError(`snapshot index/term must be non-negative integers (got ${snap.index}/${snap.term})`);
  }
  const header = new Uint8Array(SNAPSHOT_HEADER_BYTES);
  const view = new DataView(header.buffer);
  header.set(SNAPSHOT_MAGIC, 0);
  view.setUint32(4, SNAPSHOT_FORMAT_VERSION, true);
  setU64(view, 8, snap.index);
  setU64(view, 16, snap.term);
  setU64(view, 24, snap.data.length);
  view.setUint32(32, crc32(snap.data), true);
  view.setUint32(36, crc32(header.subarray(0, 36)), true);
  return header;
}

/** Checks a file's header (`bytes` holds at least its first SNAPSHOT_HEADER_BYTES) against its size. */
function checkHeader(bytes: Uint8Array, fileSize: number): { index: number; term: number; size: number; crc: number } | string {
  if (bytes.length < SNAPSHOT_HEADER_BYTES) return `file too short (${fileSize} bytes)`;
  for (let i = 0; i < SNAPSHOT_MAGIC.length; i++) {
    if (bytes[i] !== SNAPSHOT_MAGIC[i]) return "bad magic";
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, SNAPSHOT_HEADER_BYTES);
  if (view.getUint32(36, true) !== crc32(bytes.subarray(0, 36))) return "header crc mismatch";
  const version = view.getUint32(4, true);
  if (version !== SNAPSHOT_FORMAT_VERSION) return `unsupported format version ${version}`;
  const index = getU64(view, 8);
  const term = getU64(view, 16);
  const size = getU64(view, 24);
  if (Number.isNaN(index) || Number.isNaN(term) || Number.isNaN(size)) return "header field out of range";
  if (fileSize !== SNAPSHOT_HEADER_BYTES + size) {
    return `size mismatch: header says ${size} data bytes, file has ${fileSize - SNAPSHOT_HEADER_BYTES}`;
  }
  return { index, term, size, crc: view.getUint32(32, true) };
}

/** Parses a whole snapshot file; returns the snapshot or the reason it is invalid. */
export function decodeSnapshotFile(bytes: Uint8Array): Snapshot | string {
  const header = checkHeader(bytes, bytes.length);
  if (typeof header === "string") return header;
  const data = bytes.subarray(SNAPSHOT_HEADER_BYTES);
  if (header.crc !== crc32(data)) return "data crc mismatch";
  return { index: header.index, term: header.term, data };
}

function removeIfPresent(file: string, disk: Disk): void {
  try {
    disk.unlink(file);
  } catch (err) {
    if (errorCode(err) !== "ENOENT") throw err;
  }
}

function pruneSnapshots(dir: string, disk: Disk): void {
  const files = snapshotFiles(dir, disk);
  for (const file of files.slice(0, Math.max(0, files.length - SNAPSHOTS_KEPT))) removeIfPresent(file.path, disk);
}

/**
 * Durably writes `snap` as dir/snap-<index>.snap and returns its path; then deletes all but the newest
 * SNAPSHOTS_KEPT snapshot files. Blocks the event loop for the whole write: see writeSnapshotAsync.
 */
export function writeSnapshot(dir: string, snap: Snapshot, disk: Disk = realDisk): string {
  const header = encodeSnapshotHeader(snap);
  disk.mkdir(dir);
  const finalPath = path.join(dir, snapshotFileName(snap.index));
  const tempPath = tempPathFor(dir, snap.index);
  try {
    const fd = disk.open(tempPath, "wx");
    try {
      disk.write(fd, header, 0);
      disk.write(fd, snap.data, SNAPSHOT_HEADER_BYTES);
      disk.fdatasync(fd);
    } finally {
      disk.close(fd);
    }
    disk.rename(tempPath, finalPath);
  } catch (err) {
    removeIfPresent(tempPath, disk);
    throw err;
  }
  disk.fsyncDir(dir);
  pruneSnapshots(dir, disk);
  return finalPath;
}

/** Same as writeSnapshot, but the data write and the syncs run without blocking the event loop. */
export async function writeSnapshotAsync(dir: string, snap: Snapshot, disk: Disk = realDisk): Promise<string> {
  const header = encodeSnapshotHeader(snap);
  disk.mkdir(dir);
  const finalPath = path.join(dir, snapshotFileName(snap.index));
  const tempPath = tempPathFor(dir, snap.index);
  try {
    const fd = disk.open(tempPath, "wx");
    try {
      await disk.writeAsync(fd, header, 0);
      await disk.writeAsync(fd, snap.data, SNAPSHOT_HEADER_BYTES);
      await disk.fdatasyncAsync(fd);
    } finally {
      disk.close(fd);
    }
    disk.rename(tempPath, finalPath);
  } catch (err) {
    removeIfPresent(tempPath, disk);
    throw err;
  }
  await disk.fsyncDirAsync(dir);
  pruneSnapshots(dir, disk);
  return finalPath;
}

/** Deletes snapshot temp files left by a crash mid-write (only at startup: one may be in progress later). */
export function cleanSnapshotTempFiles(dir: string, log: StorageLog, disk: Disk = realDisk): void {
  for (const name of readDirOrEmpty(dir, disk)) {
    if (SNAPSHOT_TEMP_NAME.test(name)) {
      log("info", `removing leftover snapshot temp file ${path.join(dir, name)}`);
      removeIfPresent(path.join(dir, name), disk);
    }
  }
}

/**
 * The newest snapshot in `dir`, or null if there is none. A damaged newest snapshot throws
 * SnapshotCorruptError naming the file and what is wrong: a snapshot file gets its name only after its
 * data was synced (temp file, fdatasync, rename), so damage in it is never a torn write, and falling back
 * to the older snapshot silently would hide a failing disk. The `log` parameter is kept for callers.
 */
export function loadLatestSnapshot(dir: string, _log?: StorageLog, disk: Disk = realDisk): Snapshot | null {
  const files = snapshotFiles(dir, disk);
  const newest = files[files.length - 1];
  if (newest === undefined) return null;
  return checkedSnapshot(files, readWholeFile(disk, newest.path));
}

/**
 * The newest snapshot file, opened for streaming to a follower: its header is checked now, its data is
 * read a piece at a time off the JS thread (a leader sending a 300 MB snapshot must neither stop its
 * heartbeats to read it nor hold a second copy of it in memory) and checked as it is read.
 */
export async function openLatestSnapshot(dir: string, disk: Disk = realDisk): Promise<SnapshotReader | null> {
  const files = snapshotFiles(dir, disk);
  const newest = files[files.length - 1];
  if (newest === undefined) return null;
  const corrupt = (problem: string) => new SnapshotCorruptError(newest.path, problem, files[files.length - 2]?.path ?? null);
  const fd = disk.open(newest.path, "r");
  try {
    const header = new Uint8Array(SNAPSHOT_HEADER_BYTES);
    const meta = checkHeader(header.subarray(0, disk.read(fd, header, 0)), disk.size(fd));
    if (typeof meta === "string") throw corrupt(meta);
    if (meta.index !== newest.index) throw corrupt(`its header says index ${meta.index}`);
    const { index, term, size, crc } = meta;
    let checked = 0;
    let running = 0;
    let closed = false;
    return {
      index,
      term,
      size,
      crc,
      async read(offset, length) {
        if (closed) throw new Error(`snapshot ${newest.path} is closed`);
        const into = new Uint8Array(Math.max(0, Math.min(length, size - offset)));
        const n = await disk.readAsync(fd, into, SNAPSHOT_HEADER_BYTES + offset);
        if (n !== into.length) throw corrupt(`it ended at data byte ${offset + n}, its header says ${size}`);
        if (offset === checked) {
          running = crc32(into, running);
          checked += n;
          if (checked === size && running !== crc) throw corrupt("data crc mismatch");
        }
        return into;
      },
      close() {
        if (closed) return;
        closed = true;
        disk.close(fd);
      },
    };
  } catch (err) {
    disk.close(fd);
    throw err;
  }
}

/** A snapshot already in memory as a SnapshotReader (tests, and senders that hold one). */
export function snapshotReaderOf(snap: Snapshot): SnapshotReader {
  return {
    index: snap.index,
    term: snap.term,
    size: snap.data.length,
    crc: crc32(snap.data),
    read: async (offset, length) => snap.data.subarray(offset, Math.min(snap.data.length, offset + length)),
    close: () => {},
  };
}

function checkedSnapshot(files: SnapshotFile[], bytes: Uint8Array): Snapshot {
  const newest = files[files.length - 1]!;
  const result = decodeSnapshotFile(bytes);
  const problem = typeof result === "string" ? result : result.index !== newest.index ? `its header says index ${result.index}` : null;
  if (problem !== null) throw new SnapshotCorruptError(newest.path, problem, files[files.length - 2]?.path ?? null);
  return result as Snapshot;
}
