// An in-memory stand-in for the WAL and snapshot files, for the simulation: records are buffered,
// written and made durable by sync; a crash keeps what was synced plus, on a power loss, an arbitrary
// prefix of what was not (a write torn between or inside records). It also keeps a view of what is
// durable, which the simulation checks every message against (persist before send).

import type { Entry, HardState, Snapshot, SnapshotMeta } from "../../src/raft/types";
import { NONE } from "../../src/raft/types";
import type { RuntimeStorage, RuntimeWal } from "../../src/server/runtime";
import type { RecoveredState } from "../../src/storage";

type Rec = { kind: "entries"; entries: Entry[] } | { kind: "hs"; hs: HardState } | { kind: "reset"; meta: SnapshotMeta };

/** What a log of records says, replayed in order. */
export class LogView {
  hs: HardState = { term: 0, vote: NONE, commit: 0 };
  entries: Entry[] = []; // contiguous, after `base`
  base = 0;
  baseTerm = 0;

  apply(r: Rec): void {
    if (r.kind === "hs") this.hs = r.hs;
    else if (r.kind === "reset") {
      this.base = r.meta.index;
      this.baseTerm = r.meta.term;
      this.entries = [];
    } else if (r.entries.length) {
      const first = r.entries[0]!.index;
      this.entries.length = Math.max(0, Math.min(this.entries.length, first - this.base - 1));
      for (const e of r.entries) if (e.index > this.base) this.entries.push(e);
    }
  }

  get lastIndex(): number {
    return this.base + this.entries.length;
  }
}

interface QueuedSync {
  target: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class MemStorage {
  private log: Rec[] = [];
  private durableCount = 0;
  private snapshots: Snapshot[] = [];
  /** What is durable, replayed incrementally. */
  readonly durable = new LogView();
  private queued: QueuedSync[] = [];
  private failSyncs = 0;
  /** Entries the log may hold in total before appends fail with ENOSPC (null: no limit). */
  spaceLimitEntries: number | null = null;
  private epoch = 0;
  /** Last index of the log as written (page cache), and the position of the last record that truncated it. */
  private writtenLast = 0;
  private lastTruncation = -1;

  constructor(private readonly opts: { syncOnRecover: boolean }) {}

  /** The next sync fails (EIO): the node must stop. */
  failNextSync(): void {
    this.failSyncs++;
  }

  /** A write that replaces log entries (a truncation) is not yet durable: the riskiest moment to lose power. */
  get truncationUnsynced(): boolean {
    return this.lastTruncation >= this.durableCount;
  }

  /** Async syncs not yet completed. */
  get queuedSyncs(): number {
    return this.queued.length;
  }

  /** Complete the oldest queued async sync; returns false if there was none. */
  completeOneSync(): boolean {
    const q = this.queued.shift();
    if (!q) return false;
    if (this.failSyncs > 0) {
      this.failSyncs--;
      q.reject(new Error("EIO: fdatasync failed (injected)"));
      return true;
    }
    this.makeDurable(q.target);
    q.resolve();
    return true;
  }

  private makeDurable(count: number): void {
    while (this.durableCount < count) this.durable.apply(this.log[this.durableCount++]!);
  }

  /**
   * The process dies. kill -9 (keepPageCache) keeps what was written; a power loss keeps what was
   * synced and a random prefix of the rest, the last record it keeps possibly cut inside.
   */
  crash(rng: () => number, keepPageCache: boolean): void {
    this.epoch++;
    this.queued = [];
    if (keepPageCache) return;
    this.lastTruncation = -1;
    const unsynced = this.log.length - this.durableCount;
    const keep = Math.floor(rng() * (unsynced + 1));
    this.log.length = this.durableCount + keep;
    const last = this.log[this.log.length - 1];
    if (keep > 0 && last?.kind === "entries" && last.entries.length > 1 && rng() < 0.5) {
      this.log[this.log.length - 1] = { kind: "entries", entries: last.entries.slice(0, 1 + Math.floor(rng() * (last.entries.length - 1))) };
    }
    const view = new LogView();
    for (const r of this.log) view.apply(r);
    this.writtenLast = view.lastIndex;
  }

  /** Replay what survived; with syncOnRecover it is made durable before the node may act on it. */
  recover(): RecoveredState {
    const view = new LogView();
    for (const r of this.log) view.apply(r);
    if (this.opts.syncOnRecover) this.makeDurable(this.log.length);
    const snap = this.snapshots[this.snapshots.length - 1] ?? null;
    const entries = view.entries.filter((e) => e.index > (snap?.index ?? 0));
    const base = snap?.index ?? 0;
    // Entries must continue right after the snapshot; anything else is not usable.
    const usable: Entry[] = [];
    for (const e of entries) {
      if (e.index !== base + 1 + usable.length) break;
      usable.push(e);
    }
    if (view.base > base) throw new Error(`log reset to ${view.base} beyond the newest snapshot ${base}`);
    return { hardState: { ...view.hs }, entries: usable, snapshot: snap ? { ...snap } : null };
  }

  /** The storage one incarnation of a node uses; it stops working when that incarnation crashes. */
  forRuntime(): RuntimeStorage & { wal: RuntimeWal & { syncAsync(): Promise<void> } } {
    const epoch = this.epoch;
    const live = () => {
      if (this.epoch !== epoch) throw new Error("the process is gone");
    };
    let pending: Rec[] = [];
    const write = () => {
      for (const r of pending) {
        if (r.kind === "reset") this.writtenLast = r.meta.index;
        else if (r.kind === "entries") {
          if (r.entries[0]!.index <= this.writtenLast) this.lastTruncation = this.log.length;
          this.writtenLast = r.entries[r.entries.length - 1]!.index;
        }
        this.log.push(r);
      }
      pending = [];
    };
    const self = this;
    return {
      wal: {
        append(entries) {
          live();
          if (self.spaceLimitEntries !== null) {
            let n = 0;
            for (const r of self.log) if (r.kind === "entries") n += r.entries.length;
            if (n + entries.length > self.spaceLimitEntries) throw new Error("ENOSPC: no space left on device (injected)");
          }
          if (entries.length) pending.push({ kind: "entries", entries: entries.slice() });
        },
        setHardState(hs) {
          live();
          pending.push({ kind: "hs", hs: { ...hs } });
        },
        resetLog(meta) {
          live();
          pending.push({ kind: "reset", meta: { ...meta } });
        },
        sync() {
          live();
          write();
          if (self.failSyncs > 0) {
            self.failSyncs--;
            throw new Error("EIO: fdatasync failed (injected)");
          }
          self.makeDurable(self.log.length);
        },
        syncAsync() {
          live();
          write();
          const target = self.log.length;
          return new Promise<void>((resolve, reject) => self.queued.push({ target, resolve, reject }));
        },
        compact: () => 0,
        sizeBytes: () => 0,
      },
      writeSnapshot(snap) {
        live();
        self.snapshots.push({ ...snap });
      },
      async writeSnapshotAsync(snap) {
        live();
        self.snapshots.push({ ...snap });
      },
      loadLatestSnapshot() {
        const s = self.snapshots[self.snapshots.length - 1];
        return s ? { ...s } : null;
      },
    };
  }
}
