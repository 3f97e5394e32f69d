// The write-ahead log: a directory of segment files wal-<seq, 16 digits>.log, appended with group commit
// (callers buffer records with append/setHardState, then sync() does one write and one fdatasync).
//
// Record layout (little-endian), a WAL_RECORD_HEADER_BYTES = 12 byte header then the payload:
//   0  u32 payload length
//   4  u32 crc32 of the payload
//   8  u8  record type (1 entry, 2 hard state, 3 log reset)
//   9  u8  reserved, 0
//  10  u16 header check: low 16 bits of crc32 of header bytes 0..9
// The header check lets replay tell a damaged length field (corruption) from a record cut short by a
// crash (a torn tail), instead of trusting a flipped length and dropping everything after it.
//
// Payloads:
//   entry       u64 index, u64 term, then the entry data (payload length - 16 bytes)
//   hard state  u64 term, i64 vote, u64 commit
//   log reset   u64 index, u64 term: every earlier entry is gone; the log continues after index
//               (written after installing a snapshot that replaces the log)
//
// Every segment starts with a hard-state record, so deleting older segments never loses the hard state.

import * as path from "node:path";
import type { Entry, HardState, Snapshot, SnapshotMeta } from "../raft/types";
import { NONE } from "../raft/types";
import { loadLatestSnapshot, type StorageLog } from "./snapshot";
import { readWholeFile, realDisk, type Disk } from "./disk";
import { crc32, getI64, getU64, isSafeIndex, setI64, setU64 } from "./util";

export const WAL_RECORD_HEADER_BYTES = 12;
/** Largest record payload accepted on append and on replay. */
export const WAL_MAX_RECORD_PAYLOAD_BYTES = 512 * 1024 * 1024;
export const WAL_DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;

const RECORD_ENTRY = 1;
const RECORD_HARD_STATE = 2;
const RECORD_LOG_RESET = 3;

const ENTRY_FIXED_BYTES = 16;
const HARD_STATE_PAYLOAD_BYTES = 24;
const LOG_RESET_PAYLOAD_BYTES = 16;

const INITIAL_PENDING_CAPACITY = 64 * 1024;
/** After a sync, a pending buffer grown past this is replaced by a small one. */
const MAX_RETAINED_PENDING_CAPACITY = 4 * 1024 * 1024;

const SEGMENT_NAME = /^wal-(\d{16})\.log$/;

export class WalCorruptError extends Error {
  override readonly name = "WalCorruptError";
  constructor(
    message: string,
    readonly file: string,
    readonly offset: number | null,
  ) {
    super(message);
  }
}

export interface WalOptions {
  /** A segment is closed and a new one started once it reaches this size. Default 64 MiB. */
  segmentBytes?: number;
  log?: StorageLog;
  /** The file operations to use (default: node:fs). */
  disk?: Disk;
}

export interface RecoveredState {
  hardState: HardState;
  /** Every entry after the snapshot index, in order. */
  entries: Entry[];
  snapshot: Snapshot | null;
}

interface Segment {
  seq: number;
  path: string;
  /** Bytes on disk (excluding anything still buffered). */
  size: number;
  /** Largest entry (or log reset) index ever written to this segment; 0 if none. */
  maxIndex: number;
}

export function walSegmentName(seq: number): string {
  return `wal-${String(seq).padStart(16, "0")}.log`;
}

function defaultLog(level: "warn" | "info", msg: string): void {
  console.error(`${level} storage: ${msg}`);
}

function corrupt(file: string, offset: number, reason: string): WalCorruptError {
  return new WalCorruptError(`corrupt WAL record in ${file} at offset ${offset}: ${reason}`, file, offset);
}

function isAllZero(bytes: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (bytes[i] !== 0) return false;
  return true;
}

function headerCheck(bytes: Uint8Array, offset: number): number {
  return crc32(bytes.subarray(offset, offset + 10)) & 0xffff;
}

function validateHardState(hs: HardState): void {
  if (!isSafeIndex(hs.term) || !isSafeIndex(hs.commit) || !Number.isSafeInteger(hs.vote) || hs.vote < NONE) {
    throw new RangeError(`invalid hard state ${JSON.stringify(hs)}`);
  }
}

// ---- replay ------------------------------------------------------------------------------------

/** Rebuilds the log from records in the order they were written. */
class Replay {
  readonly entries: Entry[] = [];
  hardState: HardState = { term: 0, vote: NONE, commit: 0 };
  /** Largest log-reset index seen, and where: a reset beyond the snapshot means the snapshot is lost. */
  maxReset = { index: 0, file: "", offset: 0 };

  constructor(readonly snapshotIndex: number) {}

  entry(entry: Entry, file: string, offset: number): void {
    const entries = this.entries;
    if (entries.length > 0) {
      const first = entries[0]!.index;
      const last = entries[entries.length - 1]!.index;
      if (entry.index > last + 1) {
        throw corrupt(file, offset, `entry ${entry.index} leaves a gap after entry ${last}`);
      }
      if (entry.index <= last) entries.length = Math.max(0, entry.index - first); // truncate a suffix
    }
    if (entry.index <= this.snapshotIndex) return; // covered by the snapshot
    if (entries.length === 0 && entry.index !== this.snapshotIndex + 1) {
      throw corrupt(
        file,
        offset,
        `entry ${entry.index} does not follow the snapshot index ${this.snapshotIndex} (lost segments or snapshot?)`,
      );
    }
    entries.push(entry);
  }

  reset(index: number, file: string, offset: number): void {
    this.entries.length = 0;
    if (index > this.maxReset.index) this.maxReset = { index, file, offset };
  }

  finish(): void {
    if (this.maxReset.index > this.snapshotIndex) {
      const { index, file, offset } = this.maxReset;
      throw corrupt(
        file,
        offset,
        `the log was reset to snapshot ${index} but the newest valid snapshot is at index ${this.snapshotIndex}`,
      );
    }
  }
}

/**
 * Parses the records of one segment into `replay`. Returns the number of valid bytes; when that is less
 * than the file size the rest is a torn tail (only allowed in the last segment) described by `tornReason`.
 */
function replaySegment(
  bytes: Uint8Array,
  file: string,
  isLastSegment: boolean,
  replay: Replay,
  segment: Segment,
): { validBytes: number; tornReason: string | null } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fileSize = bytes.length;
  let offset = 0;

  const tornOrCorrupt = (reason: string, tornAllowed: boolean) => {
    if (isLastSegment && tornAllowed) return { validBytes: offset, tornReason: reason };
    throw corrupt(file, offset, reason);
  };

  while (offset < fileSize) {
    const remaining = fileSize - offset;
    if (remaining < WAL_RECORD_HEADER_BYTES) {
      return tornOrCorrupt(`record header cut short (${remaining} of ${WAL_RECORD_HEADER_BYTES} bytes)`, true);
    }
    const payloadLength = view.getUint32(offset, true);
    const payloadCrc = view.getUint32(offset + 4, true);
    const type = view.getUint8(offset + 8);
    const reserved = view.getUint8(offset + 9);
    if (view.getUint16(offset + 10, true) !== headerCheck(bytes, offset)) {
      if (isAllZero(bytes, offset, fileSize)) return tornOrCorrupt("zero-filled tail", true);
      throw corrupt(file, offset, "header check mismatch");
    }
    if (payloadLength > WAL_MAX_RECORD_PAYLOAD_BYTES) {
      throw corrupt(file, offset, `absurd record length ${payloadLength}`);
    }
    const payloadStart = offset + WAL_RECORD_HEADER_BYTES;
    const recordEnd = payloadStart + payloadLength;
    if (recordEnd > fileSize) {
      return tornOrCorrupt(`record of ${payloadLength} payload bytes runs past the end of the file`, true);
    }
    if (crc32(bytes.subarray(payloadStart, recordEnd)) !== payloadCrc) {
      return tornOrCorrupt("crc mismatch", recordEnd === fileSize);
    }
    if (reserved !== 0) throw corrupt(file, offset, `reserved header byte is ${reserved}`);

    switch (type) {
      case RECORD_ENTRY: {
        if (payloadLength < ENTRY_FIXED_BYTES) throw corrupt(file, offset, `entry payload of ${payloadLength} bytes`);
        const index = getU64(view, payloadStart);
        const term = getU64(view, payloadStart + 8);
        if (!(index >= 1) || Number.isNaN(term)) throw corrupt(file, offset, `bad entry index ${index} / term ${term}`);
        const data = bytes.slice(payloadStart + ENTRY_FIXED_BYTES, recordEnd);
        replay.entry({ index, term, data }, file, offset);
        segment.maxIndex = Math.max(segment.maxIndex, index);
        break;
      }
      case RECORD_HARD_STATE: {
        if (payloadLength !== HARD_STATE_PAYLOAD_BYTES) {
          throw corrupt(file, offset, `hard state payload of ${payloadLength} bytes`);
        }
        const term = getU64(view, payloadStart);
        const vote = getI64(view, payloadStart + 8);
        const commit = getU64(view, payloadStart + 16);
        if (Number.isNaN(term) || Number.isNaN(commit) || !(vote >= NONE)) {
          throw corrupt(file, offset, "hard state field out of range");
        }
        replay.hardState = { term, vote, commit };
        break;
      }
      case RECORD_LOG_RESET: {
        if (payloadLength !== LOG_RESET_PAYLOAD_BYTES) {
          throw corrupt(file, offset, `log reset payload of ${payloadLength} bytes`);
        }
        const index = getU64(view, payloadStart);
        if (Number.isNaN(index)) throw corrupt(file, offset, "log reset index out of range");
        replay.reset(index, file, offset);
        segment.maxIndex = Math.max(segment.maxIndex, index);
        break;
      }
      default:
        throw corrupt(file, offset, `unknown record type ${type}`);
    }
    offset = recordEnd;
  }
  return { validBytes: offset, tornReason: null };
}

// ---- the log -----------------------------------------------------------------------------------

export class Wal {
  private pending = new Uint8Array(INITIAL_PENDING_CAPACITY);
  private pendingView = new DataView(this.pending.buffer);
  private pendingLength = 0;
  /** Largest entry/reset index among buffered records. */
  private pendingMaxIndex = 0;
  private failure: unknown = null;
  private closed = false;

  private constructor(
    private readonly disk: Disk,
    private readonly dir: string,
    private readonly segmentBytes: number,
    private readonly log: StorageLog,
    /** Oldest first; the last one is the segment being appended to. */
    private readonly segments: Segment[],
    private fd: number,
    private hardState: HardState,
    private lastEntryIndex: number,
  ) {}

  /**
   * Opens (creating if needed) the WAL in `dir`: loads the newest valid snapshot, replays the segments
   * and truncates a torn tail of the last segment. Throws WalCorruptError on any other damage.
   */
  static open(dir: string, opts: WalOptions = {}): { wal: Wal; state: RecoveredState } {
    const segmentBytes = opts.segmentBytes ?? WAL_DEFAULT_SEGMENT_BYTES;
    if (!Number.isSafeInteger(segmentBytes) || segmentBytes <= 0) {
      throw new RangeError(`segmentBytes must be a positive integer (got ${segmentBytes})`);
    }
    const log = opts.log ?? defaultLog;
    const disk = opts.disk ?? realDisk;
    disk.mkdir(dir);

    const snapshot = loadLatestSnapshot(dir, log, disk);
    const snapshotIndex = snapshot?.index ?? 0;

    const found: { seq: number; path: string }[] = [];
    for (const name of disk.readdir(dir)) {
      const match = SEGMENT_NAME.exec(name);
      if (match) found.push({ seq: Number(match[1]), path: path.join(dir, name) });
    }
    found.sort((a, b) => a.seq - b.seq);
    for (let i = 1; i < found.length; i++) {
      if (found[i]!.seq !== found[i - 1]!.seq + 1) {
        const missing = walSegmentName(found[i - 1]!.seq + 1);
        throw new WalCorruptError(
          `corrupt WAL in ${dir}: segment ${missing} is missing (found ${found[i]!.path} after ${found[i - 1]!.path})`,
          path.join(dir, missing),
          null,
        );
      }
    }

    const replay = new Replay(snapshotIndex);
    const segments: Segment[] = [];
    for (let i = 0; i < found.length; i++) {
      const { seq, path: file } = found[i]!;
      const bytes = readWholeFile(disk, file);
      const segment: Segment = { seq, path: file, size: bytes.length, maxIndex: 0 };
      const { validBytes, tornReason } = replaySegment(bytes, file, i === found.length - 1, replay, segment);
      if (tornReason !== null) {
        log(
          "warn",
          `truncating torn WAL tail in ${file} at offset ${validBytes}: ${tornReason} ` +
            `(${bytes.length - validBytes} bytes dropped)`,
        );
        const fd = disk.open(file, "r+");
        try {
          disk.truncate(fd, validBytes);
          disk.fdatasync(fd);
        } finally {
          disk.close(fd);
        }
        segment.size = validBytes;
      }
      segments.push(segment);
    }
    replay.finish();

    const entries = replay.entries;
    const lastEntryIndex = entries.length > 0 ? entries[entries.length - 1]!.index : snapshotIndex;
    const last = segments[segments.length - 1];
    let wal: Wal;
    if (last !== undefined && last.size > 0 && last.size < segmentBytes) {
      // Keep appending to the last segment (it already starts with a hard-state record).
      const fd = disk.open(last.path, "r+");
      wal = new Wal(disk, dir, segmentBytes, log, segments, fd, replay.hardState, lastEntryIndex);
    } else if (last !== undefined && last.size === 0) {
      // An empty last segment (crash right after it was created): give it its first record now.
      const fd = disk.open(last.path, "r+");
      wal = new Wal(disk, dir, segmentBytes, log, segments, fd, replay.hardState, lastEntryIndex);
      wal.startSegmentWithHardState();
    } else {
      wal = new Wal(disk, dir, segmentBytes, log, segments, -1, replay.hardState, lastEntryIndex);
      wal.createSegment(last === undefined ? 1 : last.seq + 1);
    }
    log(
      "info",
      `wal opened in ${dir}: ${segments.length} segment(s), ${entries.length} entries after snapshot ` +
        `${snapshotIndex}, last index ${lastEntryIndex}, term ${replay.hardState.term}`,
    );
    return { wal, state: { hardState: { ...replay.hardState }, entries, snapshot } };
  }

  /**
   * Buffers entries for the next sync(). They must be contiguous; if entries[0].index <= lastIndex()
   * the log is truncated from there first (a follower replacing a conflicting suffix).
   */
  append(entries: readonly Entry[]): void {
    this.checkUsable();
    if (entries.length === 0) return;
    const first = entries[0]!.index;
    if (!Number.isSafeInteger(first) || first < 1 || first > this.lastEntryIndex + 1) {
      throw new RangeError(
        `WAL append at index ${first} would leave a gap after last index ${this.lastEntryIndex} ` +
          `(after installing a snapshot, call resetLog first)`,
      );
    }
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      if (entry.index !== first + i) {
        throw new RangeError(`WAL append: entries not contiguous (${first + i} expected, got ${entry.index})`);
      }
      if (!isSafeIndex(entry.term)) throw new RangeError(`WAL append: bad term ${entry.term} at ${entry.index}`);
      const payloadLength = ENTRY_FIXED_BYTES + entry.data.length;
      if (payloadLength > WAL_MAX_RECORD_PAYLOAD_BYTES) {
        throw new RangeError(`WAL append: entry ${entry.index} of ${entry.data.length} bytes is too large`);
      }
      const payloadStart = this.beginRecord(payloadLength);
      setU64(this.pendingView, payloadStart, entry.index);
      setU64(this.pendingView, payloadStart + 8, entry.term);
      this.pending.set(entry.data, payloadStart + ENTRY_FIXED_BYTES);
      this.endRecord(RECORD_ENTRY, payloadStart, payloadLength);
    }
    this.lastEntryIndex = first + entries.length - 1;
    this.pendingMaxIndex = Math.max(this.pendingMaxIndex, this.lastEntryIndex);
  }

  /** Buffers a hard-state record for the next sync(). */
  setHardState(hardState: HardState): void {
    this.checkUsable();
    validateHardState(hardState);
    this.hardState = { term: hardState.term, vote: hardState.vote, commit: hardState.commit };
    this.bufferHardState();
  }

  /**
   * Buffers a record saying "the log now ends at snapshot.index; every earlier entry is gone". Write it
   * after durably writing a snapshot received from the leader that replaces the log; the next append
   * then starts at snapshot.index + 1. On replay, a reset beyond the newest valid snapshot is corruption.
   */
  resetLog(snapshot: SnapshotMeta): void {
    this.checkUsable();
    if (!isSafeIndex(snapshot.index) || !isSafeIndex(snapshot.term)) {
      throw new RangeError(`resetLog: bad snapshot index/term ${snapshot.index}/${snapshot.term}`);
    }
    const payloadStart = this.beginRecord(LOG_RESET_PAYLOAD_BYTES);
    setU64(this.pendingView, payloadStart, snapshot.index);
    setU64(this.pendingView, payloadStart + 8, snapshot.term);
    this.endRecord(RECORD_LOG_RESET, payloadStart, LOG_RESET_PAYLOAD_BYTES);
    this.lastEntryIndex = snapshot.index;
    this.pendingMaxIndex = Math.max(this.pendingMaxIndex, snapshot.index);
  }

  /**
   * Makes everything buffered durable: one write and one fdatasync. Rotates to a new segment when the
   * current one has reached segmentBytes. After an I/O error the WAL refuses further use.
   */
  sync(): void {
    this.checkUsable();
    if (this.pendingLength === 0) return;
    const segment = this.currentSegment();
    this.flushPending(segment);
    if (segment.size >= this.segmentBytes) this.rotate();
  }

  /** Index of the last entry appended (buffered or durable), or the snapshot index if there is none. */
  lastIndex(): number {
    return this.lastEntryIndex;
  }

  /** Bytes of all segment files on disk. */
  sizeBytes(): number {
    let total = 0;
    for (const segment of this.segments) total += segment.size;
    return total;
  }

  /** Bytes buffered and not yet synced. */
  pendingBytes(): number {
    return this.pendingLength;
  }

  /** Paths of the segment files, oldest first. */
  segmentPaths(): string[] {
    return this.segments.map((segment) => segment.path);
  }

  /**
   * Deletes the oldest segments (never the current one) whose entries all have index <= snapshotIndex.
   * It stops at the first segment that holds a later entry, so the remaining segments always replay to
   * the same log. Call it only after the snapshot at snapshotIndex is durable. Returns how many it deleted.
   */
  compact(snapshotIndex: number): number {
    this.checkUsable();
    let deleted = 0;
    while (this.segments.length > 1 && this.segments[0]!.maxIndex <= snapshotIndex) {
      const segment = this.segments[0]!;
      this.disk.unlink(segment.path);
      this.segments.shift();
      deleted++;
    }
    if (deleted > 0) {
      this.disk.fsyncDir(this.dir);
      this.log("info", `wal compacted to snapshot ${snapshotIndex}: deleted ${deleted} segment(s)`);
    }
    return deleted;
  }

  /** Syncs anything buffered (unless the WAL has failed) and closes the current segment. */
  close(): void {
    if (this.closed) return;
    try {
      if (this.failure === null && this.pendingLength > 0) this.sync();
    } finally {
      this.closed = true;
      if (this.fd >= 0) this.disk.close(this.fd);
      this.fd = -1;
    }
  }

  // ---- internals --------------------------------------------------------------------------------

  private checkUsable(): void {
    if (this.closed) throw new Error("WAL is closed");
    if (this.failure !== null) {
      throw new Error(`WAL failed earlier and cannot be used: ${String(this.failure)}`, { cause: this.failure });
    }
  }

  private currentSegment(): Segment {
    return this.segments[this.segments.length - 1]!;
  }

  /** Reserves room for a record in the pending buffer; returns where its payload starts. */
  private beginRecord(payloadLength: number): number {
    const needed = this.pendingLength + WAL_RECORD_HEADER_BYTES + payloadLength;
    if (needed > this.pending.length) {
      const grown = new Uint8Array(Math.max(needed, this.pending.length * 2));
      grown.set(this.pending.subarray(0, this.pendingLength));
      this.pending = grown;
      this.pendingView = new DataView(grown.buffer);
    }
    return this.pendingLength + WAL_RECORD_HEADER_BYTES;
  }

  /** Fills in the header of a record whose payload is already in place and commits it to the buffer. */
  private endRecord(type: number, payloadStart: number, payloadLength: number): void {
    const headerStart = payloadStart - WAL_RECORD_HEADER_BYTES;
    const view = this.pendingView;
    view.setUint32(headerStart, payloadLength, true);
    view.setUint32(headerStart + 4, crc32(this.pending.subarray(payloadStart, payloadStart + payloadLength)), true);
    view.setUint8(headerStart + 8, type);
    view.setUint8(headerStart + 9, 0);
    view.setUint16(headerStart + 10, headerCheck(this.pending, headerStart), true);
    this.pendingLength = payloadStart + payloadLength;
  }

  private bufferHardState(): void {
    const payloadStart = this.beginRecord(HARD_STATE_PAYLOAD_BYTES);
    setU64(this.pendingView, payloadStart, this.hardState.term);
    setI64(this.pendingView, payloadStart + 8, this.hardState.vote);
    setU64(this.pendingView, payloadStart + 16, this.hardState.commit);
    this.endRecord(RECORD_HARD_STATE, payloadStart, HARD_STATE_PAYLOAD_BYTES);
  }

  /** One write + one fdatasync of the pending buffer at the end of `segment`. */
  private flushPending(segment: Segment): void {
    try {
      this.disk.write(this.fd, this.pending.subarray(0, this.pendingLength), segment.size);
      this.disk.fdatasync(this.fd);
    } catch (err) {
      this.failure = err; // the file's state is unknown now: never write to it again
      throw err;
    }
    segment.size += this.pendingLength;
    segment.maxIndex = Math.max(segment.maxIndex, this.pendingMaxIndex);
    this.pendingLength = 0;
    this.pendingMaxIndex = 0;
    if (this.pending.length > MAX_RETAINED_PENDING_CAPACITY) {
      this.pending = new Uint8Array(INITIAL_PENDING_CAPACITY);
      this.pendingView = new DataView(this.pending.buffer);
    }
  }

  /** Writes the current hard state as the first record of the (empty) current segment, durably. */
  private startSegmentWithHardState(): void {
    this.bufferHardState();
    this.flushPending(this.currentSegment());
  }

  private createSegment(seq: number): void {
    const file = path.join(this.dir, walSegmentName(seq));
    try {
      this.fd = this.disk.open(file, "wx");
      this.disk.fsyncDir(this.dir);
    } catch (err) {
      this.failure = err;
      throw err;
    }
    this.segments.push({ seq, path: file, size: 0, maxIndex: 0 });
    this.startSegmentWithHardState();
  }

  private rotate(): void {
    const finished = this.currentSegment();
    this.disk.close(this.fd);
    this.fd = -1;
    this.createSegment(finished.seq + 1);
  }
}
