// Public API of the storage layer: the WAL, snapshot files, the data-dir lock and the Disk they use.

export { realDisk, type Disk, type OpenMode } from "./disk";
export { SimDisk, type CrashOptions, type PendingWrite, type SimDiskOptions, type WriteFate } from "./simdisk";
export { DataDirLockedError, LOCK_FILE_NAME, lockDataDir, type DataDirLock } from "./lock";
export {
  SNAPSHOTS_KEPT,
  SnapshotCorruptError,
  loadLatestSnapshot,
  openLatestSnapshot,
  snapshotReaderOf,
  snapshotFileName,
  snapshotFiles,
  writeSnapshot,
  writeSnapshotAsync,
  type SnapshotFile,
  type SnapshotReader,
  type StorageLog,
} from "./snapshot";
export {
  CORRUPTION_ADVICE,
  WAL_DEFAULT_SEGMENT_BYTES,
  WAL_MAX_RECORD_PAYLOAD_BYTES,
  WAL_RECORD_HEADER_BYTES,
  WAL_SYNC_MARK_RECORD_BYTES,
  Wal,
  WalCorruptError,
  walSegmentName,
  type RecoveredState,
  type WalOptions,
} from "./wal";
