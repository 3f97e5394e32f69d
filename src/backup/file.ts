// The backup file `raftkv snapshot save` writes and `raftkv snapshot restore` reads:
//
//   "RKVBAK01"             8 bytes, magic and format version
//   u32 big-endian         length of the header
//   header                 JSON (UTF-8): BackupHeader
//   state                  header.size bytes: the state machine's snapshot encoding (kv/store.ts)
//
// header.sha256 is the sha256 of the state bytes. The file is written to FILE.part, checked against the
// checksum, fdatasynced, and only then renamed to FILE (and the directory fsynced): a FILE that exists
// was complete and verified when it got its name.

import { createHash } from "node:crypto";
import { closeSync, fdatasyncSync, fstatSync, openSync, readSync, renameSync, unlinkSync, writeSync } from "node:fs";
import * as path from "node:path";
import { realDisk } from "../storage";
import type { SnapshotSaveHeader } from "../protocol";

const MAGIC = new TextEncoder().encode("RKVBAK01");
/** Longest header a backup file may have (it is a few hundred bytes). */
export const MAX_BACKUP_HEADER_BYTES = 64 * 1024;

/**
 * The file's header: what the leader announced for the save (src/protocol.ts), less the transfer's own
 * fields, plus when it was saved (ISO 8601; informational).
 */
export type BackupHeader = Omit<SnapshotSaveHeader, "save" | "chunkBytes"> & { savedAt: string };

/** A file that is not a complete, intact raftkv backup. */
export class BackupFileError extends Error {
  override readonly name = "BackupFileError";
}

function encodePrefix(h: BackupHeader): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(h));
  const out = new Uint8Array(MAGIC.length + 4 + json.length);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(MAGIC.length, json.length);
  out.set(json, MAGIC.length + 4);
  return out;
}

/** Writes a backup as its chunks arrive: FILE.part, then verify, fdatasync, rename, fsync the directory. */
export class BackupWriter {
  private readonly part: string;
  private readonly fd: number;
  private readonly hash = createHash("sha256");
  private written = 0;
  private position: number;

  constructor(
    readonly file: string,
    private readonly header: BackupHeader,
  ) {
    this.part = `${file}.part`;
    this.fd = openSync(this.part, "w");
    const prefix = encodePrefix(header);
    writeAll(this.fd, prefix, 0);
    this.position = prefix.length;
  }

  write(chunk: Uint8Array): void {
    if (this.written + chunk.length > this.header.size) throw new BackupFileError(`the node sent more than the ${this.header.size} bytes it announced`);
    writeAll(this.fd, chunk, this.position);
    this.position += chunk.length;
    this.written += chunk.length;
    this.hash.update(chunk);
  }

  /** Verify size and checksum, make it durable and give it its name. */
  finish(): void {
    if (this.written !== this.header.size) throw new BackupFileError(`received ${this.written} of ${this.header.size} bytes`);
    const sha256 = this.hash.digest("hex");
    if (sha256 !== this.header.sha256) throw new BackupFileError(`checksum mismatch: the node announced sha256 ${this.header.sha256}, the bytes received hash to ${sha256}`);
    fdatasyncSync(this.fd);
    closeSync(this.fd);
    renameSync(this.part, this.file);
    realDisk.fsyncDir(path.dirname(path.resolve(this.file)));
  }

  /** Give up: remove FILE.part (FILE, if it existed, is untouched). */
  abort(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed by finish()
    }
    try {
      unlinkSync(this.part);
    } catch {
      // never created, or already renamed
    }
  }
}

function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
}

/** Reads and verifies a whole backup file; throws BackupFileError saying what is wrong with which file. */
export function readBackupFile(file: string): { header: BackupHeader; state: Uint8Array } {
  let bytes: Uint8Array;
  try {
    const fd = openSync(file, "r");
    try {
      const size = fstatSync(fd).size;
      bytes = new Uint8Array(size);
      for (let done = 0; done < size; ) {
        const n = readSync(fd, bytes, done, size - done, done);
        if (n === 0) throw new Error(`short read at byte ${done}`);
        done += n;
      }
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    throw new BackupFileError(`cannot read ${file}: ${(err as Error).message}`);
  }
  const bad = (problem: string) => new BackupFileError(`${file} ${problem}`);
  if (bytes.length < MAGIC.length + 4 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw bad("is not a raftkv snapshot (it does not start with RKVBAK01; `raftkv snapshot save` writes those)");
  }
  const headerBytes = new DataView(bytes.buffer, bytes.byteOffset).getUint32(MAGIC.length);
  const stateStart = MAGIC.length + 4 + headerBytes;
  if (headerBytes > MAX_BACKUP_HEADER_BYTES) throw bad(`has a ${headerBytes}-byte header, over the ${MAX_BACKUP_HEADER_BYTES}-byte limit: it is damaged`);
  if (stateStart > bytes.length) throw bad(`is truncated: it ends inside its header (${bytes.length} bytes)`);
  let h: Partial<BackupHeader>;
  try {
    h = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(MAGIC.length + 4, stateStart)));
  } catch {
    throw bad("has a damaged header (not JSON)");
  }
  const count = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  if (!h || ![h.revision, h.index, h.term, h.keys, h.size, h.node].every(count) || typeof h.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(h.sha256)) {
    throw bad("has a damaged header (a field is missing or malformed)");
  }
  const header = h as BackupHeader;
  const have = bytes.length - stateStart;
  if (have < header.size) throw bad(`is truncated: the header announces ${header.size} bytes of state, the file holds ${have}`);
  if (have > header.size) throw bad(`has ${have - header.size} bytes after the ${header.size} bytes of state its header announces: it is damaged`);
  const state = bytes.subarray(stateStart);
  const sha256 = createHash("sha256").update(state).digest("hex");
  if (sha256 !== header.sha256) throw bad(`fails its checksum: the header says sha256 ${header.sha256}, the state hashes to ${sha256}; the file is damaged, use another backup`);
  return { header, state };
}
