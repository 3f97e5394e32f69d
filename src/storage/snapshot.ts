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

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import type { Snapshot } from "../raft/types";
import { crc32, errorCode, fsyncDirSync, getU64, isSafeIndex, setU64, writeAllSync } from "./util";

export type StorageLog = (level: "warn" | "info", msg: string) => void;

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

function readDirOrEmpty(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    if (errorCode(err) === "ENOENT") return [];
    throw err;
  }
}

/** Snapshot files in `dir`, oldest (lowest index) first. Temp files are not listed. */
export function snapshotFiles(dir: string): SnapshotFile[] {
  const files: SnapshotFile[] = [];
  for (const name of readDirOrEmpty(dir)) {
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

/** Parses a whole snapshot file; returns the snapshot or the reason it is invalid. */
export function decodeSnapshotFile(bytes: Uint8Array): Snapshot | string {
  if (bytes.length < SNAPSHOT_HEADER_BYTES) return `file too short (${bytes.length} bytes)`;
  for (let i = 0; i < SNAPSHOT_MAGIC.length; i++) {
    if (bytes[i] !== SNAPSHOT_MAGIC[i]) return "bad magic";
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, SNAPSHOT_HEADER_BYTES);
  if (view.getUint32(36, true) !== crc32(bytes.subarray(0, 36))) return "header crc mismatch";
  const version = view.getUint32(4, true);
  if (version !== SNAPSHOT_FORMAT_VERSION) return `unsupported format version ${version}`;
  const index = getU64(view, 8);
  const term = getU64(view, 16);
  const dataLength = getU64(view, 24);
  if (Number.isNaN(index) || Number.isNaN(term) || Number.isNaN(dataLength)) return "header field out of range";
  if (bytes.length !== SNAPSHOT_HEADER_BYTES + dataLength) {
    return `size mismatch: header says ${dataLength} data bytes, file has ${bytes.length - SNAPSHOT_HEADER_BYTES}`;
  }
  const data = bytes.subarray(SNAPSHOT_HEADER_BYTES);
  if (view.getUint32(32, true) !== crc32(data)) return "data crc mismatch";
  return { index, term, data };
}

function pruneSnapshotsSync(dir: string): void {
  const files = snapshotFiles(dir);
  for (const file of files.slice(0, Math.max(0, files.length - SNAPSHOTS_KEPT))) {
    try {
      fs.unlinkSync(file.path);
    } catch (err) {
      if (errorCode(err) !== "ENOENT") throw err;
    }
  }
}

async function pruneSnapshotsAsync(dir: string): Promise<void> {
  const files = snapshotFiles(dir);
  for (const file of files.slice(0, Math.max(0, files.length - SNAPSHOTS_KEPT))) {
    try {
      await fsp.unlink(file.path);
    } catch (err) {
      if (errorCode(err) !== "ENOENT") throw err;
    }
  }
}

/**
 * Durably writes `snap` as dir/snap-<index>.snap and returns its path; then deletes all but the newest
 * SNAPSHOTS_KEPT snapshot files. Blocks the event loop for the whole write: see writeSnapshotAsync.
 */
export function writeSnapshot(dir: string, snap: Snapshot): string {
  const header = encodeSnapshotHeader(snap);
  fs.mkdirSync(dir, { recursive: true });
  const finalPath = path.join(dir, snapshotFileName(snap.index));
  const tempPath = tempPathFor(dir, snap.index);
  try {
    const fd = fs.openSync(tempPath, "wx", 0o644);
    try {
      writeAllSync(fd, header, 0);
      writeAllSync(fd, snap.data, SNAPSHOT_HEADER_BYTES);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tempPath, finalPath);
  } catch (err) {
    fs.rmSync(tempPath, { force: true });
    throw err;
  }
  fsyncDirSync(dir);
  pruneSnapshotsSync(dir);
  return finalPath;
}

/** Same as writeSnapshot, through node:fs/promises, so the event loop keeps running meanwhile. */
export async function writeSnapshotAsync(dir: string, snap: Snapshot): Promise<string> {
  const header = encodeSnapshotHeader(snap);
  await fsp.mkdir(dir, { recursive: true });
  const finalPath = path.join(dir, snapshotFileName(snap.index));
  const tempPath = tempPathFor(dir, snap.index);
  try {
    const file = await fsp.open(tempPath, "wx", 0o644);
    try {
      await writeAllAsync(file, header, 0);
      await writeAllAsync(file, snap.data, SNAPSHOT_HEADER_BYTES);
      await file.datasync();
    } finally {
      await file.close();
    }
    await fsp.rename(tempPath, finalPath);
  } catch (err) {
    await fsp.rm(tempPath, { force: true });
    throw err;
  }
  const dirHandle = await fsp.open(dir, "r");
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
  await pruneSnapshotsAsync(dir);
  return finalPath;
}

async function writeAllAsync(file: fsp.FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let written = 0;
  while (written < bytes.length) {
    const { bytesWritten } = await file.write(bytes, written, bytes.length - written, position + written);
    if (bytesWritten <= 0) throw new Error(`short write: wrote ${written} of ${bytes.length} bytes`);
    written += bytesWritten;
  }
}

/**
 * The newest snapshot in `dir` that validates, or null if there is none. Corrupt snapshot files are
 * skipped with a warning (and left in place for inspection); leftover temp files are deleted.
 */
export function loadLatestSnapshot(dir: string, log?: StorageLog): Snapshot | null {
  for (const name of readDirOrEmpty(dir)) {
    if (SNAPSHOT_TEMP_NAME.test(name)) {
      log?.("info", `removing leftover snapshot temp file ${path.join(dir, name)}`);
      fs.rmSync(path.join(dir, name), { force: true });
    }
  }
  const files = snapshotFiles(dir);
  for (let i = files.length - 1; i >= 0; i--) {
    const file = files[i]!;
    const bytes = fs.readFileSync(file.path);
    const result = decodeSnapshotFile(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
    if (typeof result === "string") {
      log?.("warn", `skipping corrupt snapshot ${file.path}: ${result}`);
      continue;
    }
    if (result.index !== file.index) {
      log?.("warn", `skipping snapshot ${file.path}: its header says index ${result.index}`);
      continue;
    }
    return result;
  }
  return null;
}
