// One simulated node's storage: the real WAL and snapshot files (src/storage) on a SimDisk that loses
// what was not synced on a power loss, tears writes at any byte, fails fsyncs and fills up. Beside it, a
// model of what the runtime has been told is durable (a sync it waited for completed), against which the
// simulation checks every message the node sends (persist before send).

import type { Entry, HardState, SnapshotMeta } from "../../src/raft/types";
import { NONE } from "../../src/raft/types";
import type { RuntimeStorage } from "../../src/server/runtime";
import { openLatestSnapshot, SimDisk, Wal, writeSnapshot, writeSnapshotAsync, type PendingWrite, type RecoveredState, type WriteFate } from "../../src/storage";

const DIR = "/data";
/** Small segments, so rotation and compaction happen within a run. */
const SEGMENT_BYTES = 64 * 1024;

type Rec = { kind: "entries"; entries: readonly Entry[]; truncates: boolean } | { kind: "hs"; hs: HardState } | { kind: "reset"; meta: SnapshotMeta };

/** The log as a sequence of records says it is. */
export class LogView {
  hs: HardState = { term: 0, vote: NONE, commit: 0 };
  lastIndex = 0;

  apply(r: Rec): void {
    if (r.kind === "hs") this.hs = r.hs;
    else if (r.kind === "reset") this.lastIndex = r.meta.index;
    else if (r.entries.length) this.lastIndex = r.entries[r.entries.length - 1]!.index;
  }
}

export class SimStorage {
  readonly disk: SimDisk;
  /** What the runtime has been told is durable. */
  durable = new LogView();
  private epoch = 0;
  /** Writes that replace log entries and are not yet durable. */
  private truncationsUnsynced = 0;

  constructor(private readonly rng: () => number) {
    this.disk = new SimDisk({ rng, manualSyncs: true });
  }

  /** A write that replaces log entries is not yet durable: the riskiest moment to lose power. */
  get truncationUnsynced(): boolean {
    return this.truncationsUnsynced > 0;
  }

  get queuedSyncs(): number {
    return this.disk.queuedSyncCount();
  }

  /**
   * The process dies: kill -9 keeps the page cache, a power loss keeps only what was synced and, of each
   * unsynced write, all, none, a prefix or a suffix. `midWrite`: the power failed during the writes, so
   * each unsynced write is cut at a random byte.
   */
  crash(powerLoss: boolean, midWrite = false): void {
    this.epoch++;
    this.truncationsUnsynced = 0;
    const cut = (w: PendingWrite): WriteFate => ({ kind: "prefix", bytes: Math.floor(this.rng() * (w.length + 1)) });
    this.disk.crash({ keepPageCache: !powerLoss, ...(midWrite ? { fate: cut } : {}) });
  }

  /** Open the WAL (recovery makes what it keeps durable) and give the runtime its storage. */
  open(log: (level: "warn" | "info", msg: string) => void): { storage: RuntimeStorage; recovered: RecoveredState } {
    const disk = this.disk;
    const { wal, state } = Wal.open(DIR, { disk, log, segmentBytes: SEGMENT_BYTES });
    const epoch = this.epoch;
    this.durable = new LogView();
    this.durable.hs = { ...state.hardState };
    this.durable.lastIndex = state.entries.length ? state.entries[state.entries.length - 1]!.index : state.snapshot?.index ?? 0;
    let writtenLast = this.durable.lastIndex;
    let pending: Rec[] = [];
    const becameDurable = (recs: Rec[]) => {
      if (this.epoch !== epoch) return;
      for (const r of recs) {
        this.durable.apply(r);
        if (r.kind === "entries" && r.truncates) this.truncationsUnsynced--;
      }
    };
    const storage: RuntimeStorage = {
      wal: {
        append: (entries) => {
          wal.append(entries);
          if (!entries.length) return;
          const truncates = entries[0]!.index <= writtenLast;
          if (truncates) this.truncationsUnsynced++;
          writtenLast = entries[entries.length - 1]!.index;
          pending.push({ kind: "entries", entries, truncates });
        },
        setHardState: (hs) => {
          wal.setHardState(hs);
          pending.push({ kind: "hs", hs: { ...hs } });
        },
        resetLog: (meta) => {
          wal.resetLog(meta);
          writtenLast = meta.index;
          pending.push({ kind: "reset", meta: { ...meta } });
        },
        sync: () => {
          wal.sync();
          becameDurable(pending);
          pending = [];
        },
        syncAsync: () => {
          const recs = pending;
          pending = [];
          return wal.syncAsync().then(() => becameDurable(recs));
        },
        compact: (index) => wal.compact(index),
        sizeBytes: () => wal.sizeBytes(),
      },
      writeSnapshot: (snap) => writeSnapshot(DIR, snap, disk),
      writeSnapshotAsync: (snap) => writeSnapshotAsync(DIR, snap, disk),
      openLatestSnapshot: () => openLatestSnapshot(DIR, disk),
    };
    return { storage, recovered: state };
  }
}
