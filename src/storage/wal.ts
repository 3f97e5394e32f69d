// The write-ahead log: a directory of segment files wal-<seq, 16 digits>.log, appended in batches.
//
// ---- API ------------------------------------------------------------------------------------------
//
//   Wal.open(dir, { disk?, log?, segmentBytes? }) -> { wal, state }
//       Loads the newest snapshot, replays the segments, truncates a torn tail, and makes everything it
//       returns durable (fdatasync of the segments and the snapshot, fsync of the directory) before it
//       returns: the caller may act on `state` at once. Throws WalCorruptError / SnapshotCorruptError.
//   append(entries), setHardState(hs), resetLog(snapshotMeta)
//       Buffer records for the next batch. Within a batch, entries and log resets keep their order and
//       the hard state is written after them, whatever order the caller used.
//   sync()
//       flush() + fdatasync, blocking the event loop (the synchronous path).
//   flush()
//       Writes the buffered batch to the current segment without syncing (page cache only).
//   syncAsync(): Promise<void>
//       flush(), then an fdatasync that runs off the JS thread; resolves once everything written before
//       the call is durable. Several may be in flight. On SimDisk it resolves when the simulation lets it.
//   A failed write or sync poisons the WAL: that call and every later one throws (never retry an fsync:
//   after a failure the kernel may have dropped the dirty pages and a second fsync would "succeed").
//
// ---- format (version 2) ---------------------------------------------------------------------------
//
// Record layout (little-endian), a WAL_RECORD_HEADER_BYTES = 12 byte header then the payload:
//   0  u32 payload length
//   4  u32 crc32 of the payload
//   8  u8  record type
//   9  u8  reserved, 0
//  10  u16 header check: low 16 bits of crc32 of header bytes 0..9
//
// Payloads by record type:
//   1 entry        u64 index, u64 term, then the entry data
//   2 hard state   u64 term, i64 vote, u64 commit
//   3 log reset    u64 index, u64 term: every earlier entry is gone; the log continues after index
//   4 typed entry  u64 index, u64 term, u8 entry type (non-zero, e.g. 1 = configuration change), data
//   5 sync mark    u64 syncedTo, u64 at: when this record was written at offset `at`, bytes [0, syncedTo)
//                  of this segment were durable (a completed fdatasync covered them)
//
// Every batch starts with a sync mark; every segment starts with a sync mark and a hard state (so
// deleting older segments never loses the hard state). A batch is
//   [sync mark] [hard state: new term/vote, old commit (only when term or vote changed)] [entries and
//   log resets, in the caller's order] [hard state (when it changed)]
// so a write torn after any prefix leaves a state that was once true: never a commit index covering
// entries that are not on disk, never entries of a term the node had not yet recorded.
//
// Recovery tells a torn tail from corruption by what the disk could have lost (docs/ARCHITECTURE.md,
// "Storage"): damage in the last segment at or after the synced offset that the sync marks claim, with
// no valid sync mark after it claiming more, is a torn write (never acknowledged): it is truncated and
// logged. Damage anywhere else is corruption: WalCorruptError naming the file and offset.
// Segments written by version 1 (no sync marks; their first record is a hard state) are still read,
// with version 1's rule for their torn tail (damage that runs to the end of the file).

import * as path from "node:path";
import type { Entry, HardState, Snapshot, SnapshotMeta } from "../raft/types";
import { NONE } from "../raft/types";
import { readWholeFile, realDisk, type Disk } from "./disk";
import { cleanSnapshotTempFiles, loadLatestSnapshot, snapshotFileName, type StorageLog } from "./snapshot";
import { crc32, getI64, getU64, isSafeIndex, setI64, setU64 } from "./util";

export const WAL_RECORD_HEADER_BYTES = 12;
/** Largest record payload accepted on append and on replay. */
export const WAL_MAX_RECORD_PAYLOAD_BYTES = 512 * 1024 * 1024;
export const WAL_DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;

const RECORD_ENTRY = 1;
const RECORD_HARD_STATE = 2;
const RECORD_LOG_RESET = 3;
const RECORD_TYPED_ENTRY = 4;
const RECORD_SYNC_MARK = 5;

const ENTRY_FIXED_BYTES = 16;
const TYPED_ENTRY_FIXED_BYTES = 17;
const HARD_STATE_PAYLOAD_BYTES = 24;
const LOG_RESET_PAYLOAD_BYTES = 16;
const SYNC_MARK_PAYLOAD_BYTES = 16;
/** Bytes of a sync mark record, which opens every batch. */
export const WAL_SYNC_MARK_RECORD_BYTES = WAL_RECORD_HEADER_BYTES + SYNC_MARK_PAYLOAD_BYTES;
const HARD_STATE_RECORD_BYTES = WAL_RECORD_HEADER_BYTES + HARD_STATE_PAYLOAD_BYTES;
/** Room kept at the front of the batch buffer for the records that open a batch (sync mark, hard state). */
const BATCH_HEAD_BYTES = WAL_SYNC_MARK_RECORD_BYTES + HARD_STATE_RECORD_BYTES;
/** Largest entry type that fits its byte. */
const MAX_ENTRY_TYPE = 255;

const INITIAL_PENDING_CAPACITY = 64 * 1024;
/** After a flush, a pending buffer grown past this is replaced by a small one. */
const MAX_RETAINED_PENDING_CAPACITY = 4 * 1024 * 1024;

const SEGMENT_NAME = /^wal-(\d{16})\.log$/;

/** What the operator can do when recovery refuses to start (also in the README, "Durability"). */
export const CORRUPTION_ADVICE =
  "The node will not start on it. Do not edit or truncate the files. Options: move the whole data dir aside " +
  "(keep it for inspection) and restore this node's data dir from a backup, or replace this node with a new " +
  "member restored from a healthy peer (membership change); never restart it with an empty data dir while the " +
  "cluster runs (it could vote twice in one term).";

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
  /** Bytes written to the file (maybe only in the page cache). */
  size: number;
  /** Bytes covered by a completed fdatasync. */
  syncedSize: number;
  /** Whether the segment's directory entry is durable. */
  dirSynced: boolean;
  /** Largest entry (or log reset) index ever written to this segment; 0 if none. */
  maxIndex: number;
  /** The syncedTo of the last sync mark in the segment (written or recovered). */
  claimedSynced: number;
}

export function walSegmentName(seq: number): string {
  return `wal-${String(seq).padStart(16, "0")}.log`;
}

function defaultLog(level: "warn" | "info", msg: string): void {
  console.error(`${level} storage: ${msg}`);
}

function corrupt(file: string, offset: number, reason: string): WalCorruptError {
  return new WalCorruptError(
    `corrupt WAL record in ${file} at offset ${offset}: ${reason}. This data was synced earlier, so this is ` +
      `corruption, not a torn write. ${CORRUPTION_ADVICE}`,
    file,
    offset,
  );
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

/** A valid sync mark at `offset` (header, crc and its own position all check out), or null. */
function syncMarkAt(bytes: Uint8Array, view: DataView, offset: number): { syncedTo: number } | null {
  if (offset + WAL_SYNC_MARK_RECORD_BYTES > bytes.length) return null;
  if (bytes[offset + 8] !== RECORD_SYNC_MARK || bytes[offset + 9] !== 0) return null;
  if (view.getUint32(offset, true) !== SYNC_MARK_PAYLOAD_BYTES) return null;
  if (view.getUint16(offset + 10, true) !== headerCheck(bytes, offset)) return null;
  const payloadStart = offset + WAL_RECORD_HEADER_BYTES;
  if (crc32(bytes.subarray(payloadStart, payloadStart + SYNC_MARK_PAYLOAD_BYTES)) !== view.getUint32(offset + 4, true)) {
    return null;
  }
  const syncedTo = getU64(view, payloadStart);
  const at = getU64(view, payloadStart + 8);
  return at === offset && syncedTo <= at ? { syncedTo } : null;
}

/** The first valid sync mark after `damage` that says the file was synced beyond `damage`, or null. */
function laterSyncClaim(bytes: Uint8Array, view: DataView, damage: number): { at: number; syncedTo: number } | null {
  for (let at = damage + 1; at + WAL_SYNC_MARK_RECORD_BYTES <= bytes.length; at++) {
    if (bytes[at + 8] !== RECORD_SYNC_MARK) continue;
    const mark = syncMarkAt(bytes, view, at);
    if (mark !== null && mark.syncedTo > damage) return { at, syncedTo: mark.syncedTo };
  }
  return null;
}

/**
 * Parses the records of one segment into `replay`. Returns the number of valid bytes; when that is less
 * than the file size the rest is a torn tail (only ever in the last segment) described by `tornReason`.
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
  /** Version 1 segments have no sync marks: null until the first record tells. */
  let legacy: boolean | null = null;

  /**
   * Damage at `offset`. `legacyTorn`: version 1's rule would call it a torn tail. Returns the torn-tail
   * result or throws WalCorruptError.
   */
  const damaged = (reason: string, legacyTorn: boolean) => {
    if (!isLastSegment) {
      throw corrupt(file, offset, `${reason} (a segment is fully synced before the next one starts)`);
    }
    if (legacy === true) {
      if (legacyTorn) return { validBytes: offset, tornReason: reason };
      throw corrupt(file, offset, reason);
    }
    if (offset < segment.claimedSynced) {
      throw corrupt(file, offset, `${reason}, in data synced earlier (the log was synced to offset ${segment.claimedSynced})`);
    }
    const later = laterSyncClaim(bytes, view, offset);
    if (later !== null) {
      throw corrupt(
        file,
        offset,
        `${reason}; the record at offset ${later.at} says the log was synced to offset ${later.syncedTo}`,
      );
    }
    return { validBytes: offset, tornReason: reason };
  };

  while (offset < fileSize) {
    const remaining = fileSize - offset;
    if (remaining < WAL_RECORD_HEADER_BYTES) {
      return damaged(`record header cut short (${remaining} of ${WAL_RECORD_HEADER_BYTES} bytes)`, true);
    }
    const payloadLength = view.getUint32(offset, true);
    const payloadCrc = view.getUint32(offset + 4, true);
    const type = view.getUint8(offset + 8);
    const reserved = view.getUint8(offset + 9);
    if (view.getUint16(offset + 10, true) !== headerCheck(bytes, offset)) {
      const zeros = isAllZero(bytes, offset, fileSize);
      return damaged(zeros ? "zero-filled tail" : "header check mismatch", zeros);
    }
    if (payloadLength > WAL_MAX_RECORD_PAYLOAD_BYTES) {
      throw corrupt(file, offset, `absurd record length ${payloadLength}`);
    }
    const payloadStart = offset + WAL_RECORD_HEADER_BYTES;
    const recordEnd = payloadStart + payloadLength;
    if (recordEnd > fileSize) {
      return damaged(`record of ${payloadLength} payload bytes runs past the end of the file`, true);
    }
    if (crc32(bytes.subarray(payloadStart, recordEnd)) !== payloadCrc) {
      return damaged("crc mismatch", recordEnd === fileSize);
    }
    // From here on the record is intact as written: anything wrong with it is corruption, never a tear.
    if (reserved !== 0) throw corrupt(file, offset, `reserved header byte is ${reserved}`);
    if (legacy === null) legacy = type !== RECORD_SYNC_MARK;
    switch (type) {
      case RECORD_ENTRY:
      case RECORD_TYPED_ENTRY: {
        const fixed = type === RECORD_ENTRY ? ENTRY_FIXED_BYTES : TYPED_ENTRY_FIXED_BYTES;
        if (payloadLength < fixed) throw corrupt(file, offset, `entry payload of ${payloadLength} bytes`);
        const index = getU64(view, payloadStart);
        const term = getU64(view, payloadStart + 8);
        if (!(index >= 1) || Number.isNaN(term)) throw corrupt(file, offset, `bad entry index ${index} / term ${term}`);
        const data = bytes.slice(payloadStart + fixed, recordEnd);
        const entry: Entry = { index, term, data };
        if (type === RECORD_TYPED_ENTRY) {
          entry.type = view.getUint8(payloadStart + ENTRY_FIXED_BYTES);
          if (entry.type === 0) throw corrupt(file, offset, "typed entry of type 0");
        }
        replay.entry(entry, file, offset);
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
      case RECORD_SYNC_MARK: {
        const mark = syncMarkAt(bytes, view, offset);
        if (mark === null) throw corrupt(file, offset, "sync mark with a wrong position or synced offset");
        segment.claimedSynced = Math.max(segment.claimedSynced, mark.syncedTo);
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
  /** The batch being built: BATCH_HEAD_BYTES reserved at the front, then entry and log-reset records. */
  private pending = new Uint8Array(INITIAL_PENDING_CAPACITY);
  private pendingView = new DataView(this.pending.buffer);
  private pendingLength = BATCH_HEAD_BYTES;
  /** Largest entry/reset index among buffered records. */
  private pendingMaxIndex = 0;
  /** The hard state to write at the end of the next batch, if it changed. */
  private pendingHardState: HardState | null = null;
  /** The hard state most recently written to the file. */
  private writtenHardState: HardState;
  /** Async syncs in flight; the segment is not rotated meanwhile. */
  private syncsInFlight = 0;
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
    hardState: HardState,
    private lastEntryIndex: number,
  ) {
    this.writtenHardState = hardState;
  }

  /**
   * Opens (creating if needed) the WAL in `dir`: loads the newest snapshot, replays the segments,
   * truncates a torn tail of the last segment, and makes all of it durable before returning. Throws
   * WalCorruptError on any other damage, and SnapshotCorruptError for a damaged newest snapshot.
   */
  static open(dir: string, opts: WalOptions = {}): { wal: Wal; state: RecoveredState } {
    const segmentBytes = opts.segmentBytes ?? WAL_DEFAULT_SEGMENT_BYTES;
    if (!Number.isSafeInteger(segmentBytes) || segmentBytes <= 0) {
      throw new RangeError(`segmentBytes must be a positive integer (got ${segmentBytes})`);
    }
    const log = opts.log ?? defaultLog;
    const disk = opts.disk ?? realDisk;
    disk.mkdir(dir);

    cleanSnapshotTempFiles(dir, log, disk);
    const snapshot = loadLatestSnapshot(dir, log, disk);
    const snapshotIndex = snapshot?.index ?? 0;

    const found: { seq: number; path: string }[] = [];
    for (const name of disk.readdir(dir)) {
      const match = SEGMENT_NAME.exec(name);
      if (match) found.push({ seq: Number(match[1]), path: path.join(dir, name) });
    }
    found.sort((a, b) => a.seq - b.seq);
    if (found.length === 0 && snapshot !== null) {
      const snapshotPath = path.join(dir, snapshotFileName(snapshot.index));
      throw new WalCorruptError(
        `no WAL in ${dir}, but there is a snapshot (${snapshotPath}): the log, with this node's term and vote, ` +
          `is missing, and starting without it could vote twice in one term. ${CORRUPTION_ADVICE}`,
        dir,
        null,
      );
    }
    for (let i = 1; i < found.length; i++) {
      if (found[i]!.seq !== found[i - 1]!.seq + 1) {
        const missing = walSegmentName(found[i - 1]!.seq + 1);
        throw new WalCorruptError(
          `corrupt WAL in ${dir}: segment ${missing} is missing (found ${found[i]!.path} after ${found[i - 1]!.path}). ` +
            CORRUPTION_ADVICE,
          path.join(dir, missing),
          null,
        );
      }
    }

    const replay = new Replay(snapshotIndex);
    const segments: Segment[] = [];
    let lastIsLegacy = false;
    for (let i = 0; i < found.length; i++) {
      const { seq, path: file } = found[i]!;
      const bytes = readWholeFile(disk, file);
      const segment: Segment = {
        seq,
        path: file,
        size: bytes.length,
        syncedSize: 0,
        dirSynced: false,
        maxIndex: 0,
        claimedSynced: 0,
      };
      const isLast = i === found.length - 1;
      const { validBytes, tornReason } = replaySegment(bytes, file, isLast, replay, segment);
      if (isLast) lastIsLegacy = validBytes > 0 && bytes[8] !== RECORD_SYNC_MARK;
      // Bytes no sync mark claims may be only in the page cache: after kill -9, or after a failed fsync,
      // when the kernel marks pages clean that never reached the disk (an fdatasync now would then write
      // nothing). Write them again so the fdatasync below really puts them on the disk.
      const claimedEnd = Math.min(segment.claimedSynced, validBytes);
      const fd = disk.open(file, isLast || claimedEnd < validBytes ? "r+" : "r");
      try {
        if (tornReason !== null) {
          log(
            "warn",
            `truncating torn WAL tail in ${file} at offset ${validBytes}: ${tornReason} ` +
              `(${bytes.length - validBytes} bytes dropped; they were written after the last completed ` +
              `fdatasync, so nothing in them was acknowledged)`,
          );
          disk.truncate(fd, validBytes);
          segment.size = validBytes;
        }
        if (claimedEnd < validBytes) disk.write(fd, bytes.subarray(claimedEnd, validBytes), claimedEnd);
        // Recovery may have read data that was only in the page cache (kill -9 before an fdatasync):
        // make it durable before anyone acts on it.
        disk.fdatasync(fd);
      } finally {
        disk.close(fd);
      }
      segment.syncedSize = segment.size;
      segments.push(segment);
    }
    replay.finish();
    if (snapshot !== null) {
      const fd = disk.open(path.join(dir, snapshotFileName(snapshot.index)), "r");
      try {
        disk.fdatasync(fd);
      } finally {
        disk.close(fd);
      }
    }
    disk.fsyncDir(dir); // names of segments and snapshots created before a kill -9
    for (const segment of segments) segment.dirSynced = true;

    const entries = replay.entries;
    const lastEntryIndex = entries.length > 0 ? entries[entries.length - 1]!.index : snapshotIndex;
    const last = segments[segments.length - 1];
    const fd = last === undefined ? -1 : disk.open(last.path, "r+");
    const wal = new Wal(disk, dir, segmentBytes, log, segments, fd, replay.hardState, lastEntryIndex);
    // A version 1 segment is finished as it is: new batches go to a new segment with sync marks.
    if (last === undefined || lastIsLegacy) wal.startSegment();
    wal.markSynced();
    log(
      "info",
      `wal opened in ${dir}: ${segments.length} segment(s), ${entries.length} entries after snapshot ` +
        `${snapshotIndex}, last index ${lastEntryIndex}, term ${replay.hardState.term}`,
    );
    return { wal, state: { hardState: { ...replay.hardState }, entries, snapshot } };
  }

  /**
   * Buffers entries for the next batch. They must be contiguous; if entries[0].index <= lastIndex()
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
      const entryType = entry.type ?? 0;
      if (!Number.isInteger(entryType) || entryType < 0 || entryType > MAX_ENTRY_TYPE) {
        throw new RangeError(`WAL append: bad entry type ${entryType} at ${entry.index}`);
      }
      const fixed = entryType === 0 ? ENTRY_FIXED_BYTES : TYPED_ENTRY_FIXED_BYTES;
      const payloadLength = fixed + entry.data.length;
      if (payloadLength > WAL_MAX_RECORD_PAYLOAD_BYTES) {
        throw new RangeError(`WAL append: entry ${entry.index} of ${entry.data.length} bytes is too large`);
      }
      const payloadStart = this.beginRecord(payloadLength);
      setU64(this.pendingView, payloadStart, entry.index);
      setU64(this.pendingView, payloadStart + 8, entry.term);
      if (entryType !== 0) this.pendingView.setUint8(payloadStart + ENTRY_FIXED_BYTES, entryType);
      this.pending.set(entry.data, payloadStart + fixed);
      this.endRecord(entryType === 0 ? RECORD_ENTRY : RECORD_TYPED_ENTRY, payloadStart, payloadLength);
    }
    this.lastEntryIndex = first + entries.length - 1;
    this.pendingMaxIndex = Math.max(this.pendingMaxIndex, this.lastEntryIndex);
  }

  /** Sets the hard state written at the end of the next batch (after its entries). */
  setHardState(hardState: HardState): void {
    this.checkUsable();
    validateHardState(hardState);
    this.pendingHardState = { term: hardState.term, vote: hardState.vote, commit: hardState.commit };
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
   * Writes the buffered batch to the current segment, without syncing: one write of
   * [sync mark][term/vote][entries and resets][hard state]. Starts a new segment first when the current
   * one is full and fully synced.
   */
  flush(): void {
    this.checkUsable();
    const hasBody = this.pendingLength > BATCH_HEAD_BYTES;
    if (!hasBody && this.pendingHardState === null) return;
    const segment = this.currentSegment();
    if (segment.size >= this.segmentBytes && segment.syncedSize === segment.size && this.syncsInFlight === 0) {
      this.startSegment();
    }
    const next = this.pendingHardState;
    const written = this.writtenHardState;
    // A new term or vote goes before the entries (with the old commit index), the new commit after them.
    const termOrVoteChanged = next !== null && (next.term !== written.term || next.vote !== written.vote);
    const lead = hasBody && termOrVoteChanged ? { term: next.term, vote: next.vote, commit: written.commit } : null;
    if (next !== null && !(lead !== null && lead.commit === next.commit)) this.bufferHardState(next);
    this.writeBatch(lead);
    if (next !== null) this.writtenHardState = next;
    this.pendingHardState = null;
  }

  /**
   * flush() + fdatasync, blocking the event loop. Every later call fails once a write or sync has failed.
   */
  sync(): void {
    this.flush();
    const segment = this.currentSegment();
    if (segment.syncedSize === segment.size) return;
    const target = segment.size;
    try {
      if (!segment.dirSynced) this.disk.fsyncDir(this.dir);
      segment.dirSynced = true;
      this.disk.fdatasync(this.fd);
    } catch (err) {
      this.failure = err; // the file's state is unknown now: never trust a later sync
      throw err;
    }
    segment.syncedSize = Math.max(segment.syncedSize, target);
  }

  /**
   * flush(), then an fdatasync off the JS thread. Resolves once everything written before the call is
   * durable; rejects (and poisons the WAL) if the sync fails, or if any sync failed meanwhile.
   */
  async syncAsync(): Promise<void> {
    this.flush();
    const segment = this.currentSegment();
    if (segment.syncedSize === segment.size) return;
    const target = segment.size;
    const fd = this.fd;
    this.syncsInFlight++;
    try {
      if (!segment.dirSynced) await this.disk.fsyncDirAsync(this.dir);
      segment.dirSynced = true;
      await this.disk.fdatasyncAsync(fd);
    } catch (err) {
      this.failure ??= err;
      throw err;
    } finally {
      this.syncsInFlight--;
    }
    // Another sync may have failed while this one ran: its lost pages may be below `target`.
    if (this.failure !== null) {
      throw new Error(`WAL failed earlier and cannot be used: ${String(this.failure)}`, { cause: this.failure });
    }
    segment.syncedSize = Math.max(segment.syncedSize, target);
  }

  /** Index of the last entry appended (buffered or durable), or the snapshot index if there is none. */
  lastIndex(): number {
    return this.lastEntryIndex;
  }

  /** Bytes of all segment files (written, synced or not). */
  sizeBytes(): number {
    let total = 0;
    for (const segment of this.segments) total += segment.size;
    return total;
  }

  /** Bytes buffered and not yet written. */
  pendingBytes(): number {
    return this.pendingLength - BATCH_HEAD_BYTES + (this.pendingHardState === null ? 0 : HARD_STATE_RECORD_BYTES);
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

  /**
   * Syncs anything buffered (unless the WAL has failed), records that all of it is synced, and closes
   * the current segment.
   */
  close(): void {
    if (this.closed) return;
    try {
      if (this.failure === null) {
        this.sync();
        this.markSynced();
      }
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

  /**
   * Writes a batch with no records but its sync mark, and syncs it, when the segment holds synced data
   * that no sync mark claims yet: the next recovery then knows all of it was synced.
   */
  private markSynced(): void {
    const segment = this.currentSegment();
    if (segment.size > 0 && segment.size <= segment.claimedSynced + WAL_SYNC_MARK_RECORD_BYTES) return;
    this.writeBatch(null);
    this.sync();
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
    this.pendingLength = payloadStart + payloadLength;
    encodeHeader(this.pending, this.pendingView, payloadStart - WAL_RECORD_HEADER_BYTES, type, payloadLength);
  }

  private bufferHardState(hs: HardState): void {
    const payloadStart = this.beginRecord(HARD_STATE_PAYLOAD_BYTES);
    encodeHardState(this.pendingView, payloadStart, hs);
    this.endRecord(RECORD_HARD_STATE, payloadStart, HARD_STATE_PAYLOAD_BYTES);
  }

  /**
   * Writes the buffered records at the end of the current segment, after the records that open a batch:
   * a sync mark, then (in a new segment) the last written hard state or `lead`, whichever is set.
   */
  private writeBatch(lead: HardState | null): void {
    const segment = this.currentSegment();
    const view = this.pendingView;
    const headHardState = lead ?? (segment.size === 0 ? this.writtenHardState : null);
    let start = BATCH_HEAD_BYTES;
    if (headHardState !== null) {
      start -= HARD_STATE_RECORD_BYTES;
      encodeHardState(view, start + WAL_RECORD_HEADER_BYTES, headHardState);
      encodeHeader(this.pending, view, start, RECORD_HARD_STATE, HARD_STATE_PAYLOAD_BYTES);
    }
    start -= WAL_SYNC_MARK_RECORD_BYTES;
    setU64(view, start + WAL_RECORD_HEADER_BYTES, segment.syncedSize);
    setU64(view, start + WAL_RECORD_HEADER_BYTES + 8, segment.size);
    encodeHeader(this.pending, view, start, RECORD_SYNC_MARK, SYNC_MARK_PAYLOAD_BYTES);

    const length = this.pendingLength - start;
    try {
      this.disk.write(this.fd, this.pending.subarray(start, this.pendingLength), segment.size);
    } catch (err) {
      this.failure = err; // part of the batch may be in the file: never write after it
      throw err;
    }
    segment.claimedSynced = segment.syncedSize;
    segment.size += length;
    segment.maxIndex = Math.max(segment.maxIndex, this.pendingMaxIndex);
    this.pendingLength = BATCH_HEAD_BYTES;
    this.pendingMaxIndex = 0;
    if (this.pending.length > MAX_RETAINED_PENDING_CAPACITY) {
      this.pending = new Uint8Array(INITIAL_PENDING_CAPACITY);
      this.pendingView = new DataView(this.pending.buffer);
    }
  }

  /** Creates the next segment and makes it current; its first batch starts with the hard state. */
  private startSegment(): void {
    const previous = this.segments[this.segments.length - 1];
    const seq = previous === undefined ? 1 : previous.seq + 1;
    const file = path.join(this.dir, walSegmentName(seq));
    let fd: number;
    try {
      fd = this.disk.open(file, "wx");
    } catch (err) {
      this.failure = err;
      throw err;
    }
    if (this.fd >= 0) this.disk.close(this.fd);
    this.fd = fd;
    this.segments.push({ seq, path: file, size: 0, syncedSize: 0, dirSynced: false, maxIndex: 0, claimedSynced: 0 });
  }
}

function encodeHeader(bytes: Uint8Array, view: DataView, headerStart: number, type: number, payloadLength: number): void {
  const payloadStart = headerStart + WAL_RECORD_HEADER_BYTES;
  view.setUint32(headerStart, payloadLength, true);
  view.setUint32(headerStart + 4, crc32(bytes.subarray(payloadStart, payloadStart + payloadLength)), true);
  view.setUint8(headerStart + 8, type);
  view.setUint8(headerStart + 9, 0);
  view.setUint16(headerStart + 10, headerCheck(bytes, headerStart), true);
}

function encodeHardState(view: DataView, payloadStart: number, hs: HardState): void {
  setU64(view, payloadStart, hs.term);
  setI64(view, payloadStart + 8, hs.vote);
  setU64(view, payloadStart + 16, hs.commit);
}
