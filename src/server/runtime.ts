// The node runtime: drives the pure Raft core (the Ready loop, persistence ordering, apply, read
// serving, snapshot taking, sending and installing) with its clock, transport and storage injected,
// so the same code runs in production (node.ts) and in the deterministic simulation (tests/sim).

import { KvStore } from "../kv/store";
import type { ApplyResult } from "../kv/types";
import { RaftCore, type RaftConfig } from "../raft/core";
import { NONE, type Entry, type HardState, type Message, type NodeId, type Ready, type Role, type Snapshot, type SnapshotMeta } from "../raft/types";
import type { RecoveredState } from "../storage";
import type { ErrorCode } from "../protocol";
import type { Logger } from "./log";
import type { NodeMetrics } from "./metrics";

/**
 * Time as the runtime sees it. Production: performance.now / setImmediate / setInterval. There is no wall
 * clock: durations, and the times stamped into log commands (LeaseKeeper.now), are monotonic.
 */
export interface Clock {
  /** Monotonic milliseconds, for durations. */
  now(): number;
  /** Run `fn` after the inputs of the current turn (production: setImmediate). */
  defer(fn: () => void): void;
  /** Run `fn` every `ms` milliseconds until the returned function is called. */
  every(ms: number, fn: () => void): () => void;
}

/** How Raft messages leave the node. Incoming messages are pushed in with NodeRuntime.step. */
export interface Transport {
  /** Send one message (never a snapshot) to `m.to`; it may be lost. */
  send(m: Message): void;
  /**
   * Deliver a snapshot to `to` (the receiver steps it as a "snap" message of `term`). Resolves true once
   * it was handed over completely, false (or rejects) if the transfer failed. `onProgress` is called
   * whenever part of it got through (the follower is alive and the transfer not stalled).
   */
  sendSnapshot(to: NodeId, term: number, snap: Snapshot, onProgress: () => void): Promise<boolean>;
}

/** The write-ahead log operations the runtime uses (src/storage/wal.ts). */
export interface RuntimeWal {
  append(entries: readonly Entry[]): void;
  setHardState(hardState: HardState): void;
  resetLog(snapshot: SnapshotMeta): void;
  sync(): void;
  compact(snapshotIndex: number): number;
  sizeBytes(): number;
}

/** Durable state: the WAL and the snapshot files. */
export interface RuntimeStorage {
  wal: RuntimeWal;
  /** Write a snapshot durably (temp file, fsync, rename, fsync of the directory). */
  writeSnapshot(snap: Snapshot): void;
  /** The same without blocking the event loop. */
  writeSnapshotAsync(snap: Snapshot): Promise<unknown>;
  /** The newest valid snapshot on disk, with its bytes. */
  loadLatestSnapshot(): Snapshot | null;
}

export interface RuntimeOptions {
  id: NodeId;
  voters: NodeId[];
  heartbeatTicks: number;
  electionTicks: number;
  /** Milliseconds per Raft tick. */
  tickMs: number;
  rng: () => number;
  /** Take a snapshot and compact the log once this many entries were applied since the last one. */
  snapshotEntries: number;
  /** false: one fsync per log entry instead of one per batch (only to measure group commit). */
  groupCommit: boolean;
  /** Core tuning, for the simulation. */
  core?: Pick<RaftConfig, "maxInflight" | "maxEntriesPerAppend" | "maxBytesPerAppend">;
}

export interface RuntimeDeps {
  clock: Clock;
  transport: Transport;
  storage: RuntimeStorage;
  /** What the storage recovered at startup. */
  recovered: RecoveredState;
  log: Logger;
  /** Stop the node at once (production: exit the process). Never returns. */
  failStop(reason: string): never;
  /** Told of messages, fsyncs, applies, snapshots and leaders (production: /metrics). */
  metrics?: NodeMetrics;
}

/** Why a request could not complete; `leaderHint` asks the caller to add where the leader is. */
export interface Failure {
  code: ErrorCode;
  message: string;
  leaderHint?: boolean;
}

export interface WriteCallbacks {
  /** The entry was applied with the term it was proposed in; `result` is what the state machine said. */
  applied(result: ApplyResult | null): void;
  failed(failure: Failure): void;
}

export interface ReadCallbacks {
  /** Leadership was confirmed and the state machine has caught up: serve the read now. */
  ready(): void;
  failed(failure: Failure): void;
}

interface PendingWrite {
  term: number;
  cb: WriteCallbacks;
}

interface PendingRead {
  cb: ReadCallbacks;
  index: number; // -1 until confirmed
}

/** Entries kept in memory after a snapshot so slightly slow followers catch up without one. */
const CATCH_UP_ENTRIES = 5_000;

export class NodeRuntime {
  readonly id: NodeId;
  readonly core: RaftCore;
  readonly kv: KvStore;
  private readonly clock: Clock;
  private readonly transport: Transport;
  private readonly storage: RuntimeStorage;
  private readonly log: Logger;
  private readonly failStop: (reason: string) => never;
  private readonly metrics: NodeMetrics | undefined;
  private readonly opts: RuntimeOptions;

  private readyScheduled = false;
  private stopped = false;
  private cancelTick: (() => void) | null = null;

  private readonly pendingWrites = new Map<number, PendingWrite>();
  private readonly pendingReads = new Map<number, PendingRead>();
  /** Confirmed reads waiting for the state machine to catch up to their index, by index. */
  private readonly readsAwaitingApply: PendingRead[] = [];
  private nextReadCtx = 1;

  /** The latest snapshot on disk (its bytes stay there: read back only to send to a follower). */
  snapshot: SnapshotMeta | null;
  private snapshotInProgress = false;
  private logBytesSinceSnapshot = 0;
  private readonly snapshotStreams = new Set<number>();

  private persistedTerm: number;
  private persistedVote: number;
  private lastRole: Role = "follower";
  private lastLeader = NONE;

  /** Called when this node becomes leader (after its first Ready as leader). */
  readonly onBecameLeader: (() => void)[] = [];
  /** Called after a snapshot from the leader replaced the state machine. */
  readonly onSnapshotInstalled: (() => void)[] = [];

  constructor(opts: RuntimeOptions, deps: RuntimeDeps) {
    this.id = opts.id;
    this.opts = opts;
    this.clock = deps.clock;
    this.transport = deps.transport;
    this.storage = deps.storage;
    this.log = deps.log;
    this.failStop = deps.failStop;
    this.metrics = deps.metrics;
    const state = deps.recovered;
    this.snapshot = state.snapshot && { index: state.snapshot.index, term: state.snapshot.term };
    this.persistedTerm = state.hardState.term;
    this.persistedVote = state.hardState.vote;
    this.kv = state.snapshot ? KvStore.restore(state.snapshot.data) : new KvStore();
    this.core = new RaftCore(
      {
        id: opts.id,
        voters: opts.voters,
        heartbeatTicks: opts.heartbeatTicks,
        electionTicks: opts.electionTicks,
        rng: opts.rng,
        ...opts.core,
      },
      { hardState: state.hardState, entries: state.entries, snapshot: state.snapshot },
    );
  }

  /** Start ticking. */
  start(): void {
    this.cancelTick = this.clock.every(this.opts.tickMs, () => {
      this.core.tick();
      this.scheduleReady();
    });
  }

  /** Stop ticking and fail every pending request with `failure`. */
  stop(failure: Failure): void {
    if (this.stopped) return;
    this.stopped = true;
    this.cancelTick?.();
    this.failAllPending(failure);
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  get role(): Role {
    return this.core.role;
  }

  get leader(): NodeId {
    return this.core.leader;
  }

  get applied(): number {
    return this.core.applied;
  }

  get pendingWriteCount(): number {
    return this.pendingWrites.size;
  }

  get pendingReadCount(): number {
    return this.pendingReads.size + this.readsAwaitingApply.length;
  }

  // ---- inputs -----------------------------------------------------------------------------

  /** A Raft message from a peer (a snapshot arrives whole, with its data). */
  step(m: Message): void {
    this.metrics?.messageReceived(m);
    this.core.step(m);
    this.scheduleReady();
  }

  /** A chunk of a snapshot `from` streams to us arrived: contact from the leader. */
  snapshotChunkReceived(from: NodeId, term: number): void {
    this.core.snapshotChunkReceived(from, term);
    this.scheduleReady();
  }

  /** Propose `data`; null when this node is not the leader. `cb` learns the outcome. */
  propose(data: Uint8Array, cb?: WriteCallbacks): { index: number; term: number } | null {
    const at = this.core.propose(data);
    if (!at) return null;
    if (cb) this.pendingWrites.set(at.index, { term: at.term, cb });
    this.scheduleReady();
    return at;
  }

  /** Start a linearizable read; false when this node is not the leader. */
  readIndex(cb: ReadCallbacks): boolean {
    const ctx = this.nextReadCtx++;
    if (!this.core.readIndex(ctx)) return false;
    this.pendingReads.set(ctx, { cb, index: -1 });
    this.scheduleReady();
    return true;
  }

  // ---- the Ready loop -----------------------------------------------------------------------

  scheduleReady(): void {
    if (this.readyScheduled || this.stopped) return;
    this.readyScheduled = true;
    // Deferred past this turn's I/O callbacks: everything that arrived together is persisted with
    // one fsync (group commit) and sent in one batch.
    this.clock.defer(() => {
      this.readyScheduled = false;
      if (!this.stopped) this.processReady();
    });
  }

  private processReady(): void {
    while (this.core.hasReady()) {
      const rd = this.core.ready();
      // A leader's messages depend on no unpersisted term or vote (it persisted both before it won),
      // so it may send its appends first and write its own log while followers write theirs (Raft
      // thesis 10.2.1). It still counts itself toward a commit only after its own fsync.
      const sendFirst =
        this.core.role === "leader" && !rd.snapshot && (!rd.hardState || (rd.hardState.term === this.persistedTerm && rd.hardState.vote === this.persistedVote));
      if (sendFirst) for (const m of rd.messages) this.sendMessage(m);
      try {
        this.persist(rd);
      } catch (err) {
        // A failed write or fsync leaves the disk state unknown: stop rather than risk lying.
        this.log.error("storage failure, stopping the node", { reason: (err as Error).message });
        this.failStop(`storage failure: ${(err as Error).message}`);
      }
      if (!sendFirst) for (const m of rd.messages) this.sendMessage(m);
      const applyStart = this.clock.now();
      this.apply(rd);
      this.metrics?.applied(rd.committed.length, this.clock.now() - applyStart);
      this.core.advance(rd);
    }
    this.noticeRoleChange();
    this.maybeSnapshot();
  }

  private persist(rd: Ready): void {
    const wal = this.storage.wal;
    if (rd.snapshot) {
      this.storage.writeSnapshot(rd.snapshot);
      wal.resetLog({ index: rd.snapshot.index, term: rd.snapshot.term });
      this.snapshot = { index: rd.snapshot.index, term: rd.snapshot.term };
    }
    // Term and vote must be on disk before anything that depends on them is sent; the commit index
    // need not be (after a crash it is learned again from the leader), so a batch that only moves
    // the commit index is written with the next sync instead of costing an fsync of its own.
    let mustSync = rd.entries.length > 0 || rd.snapshot !== null;
    if (rd.hardState) {
      wal.setHardState(rd.hardState);
      mustSync ||= rd.hardState.term !== this.persistedTerm || rd.hardState.vote !== this.persistedVote;
      this.persistedTerm = rd.hardState.term;
      this.persistedVote = rd.hardState.vote;
    }
    if (!this.opts.groupCommit) {
      for (const e of rd.entries) {
        wal.append([e]);
        this.syncWal();
      }
    } else if (rd.entries.length) wal.append(rd.entries);
    if (mustSync) this.syncWal();
  }

  private syncWal(): void {
    const t0 = this.clock.now();
    this.storage.wal.sync();
    this.metrics?.walSynced(this.clock.now() - t0);
  }

  private apply(rd: Ready): void {
    if (rd.snapshot) {
      this.kv.load(rd.snapshot.data);
      this.log.info("installed snapshot from leader", { index: rd.snapshot.index, bytes: rd.snapshot.data.length });
      for (const fn of this.onSnapshotInstalled) fn();
    }
    for (const e of rd.committed) {
      this.logBytesSinceSnapshot += e.data.length;
      let result: ApplyResult | null = null;
      if (e.data.length) result = this.kv.applyEntry(e.index, e.data);
      else this.kv.markApplied(e.index);
      const p = this.pendingWrites.get(e.index);
      if (!p) continue;
      this.pendingWrites.delete(e.index);
      if (p.term !== e.term) {
        p.cb.failed({ code: "LEADERSHIP_LOST", message: "leadership changed before the write committed; it was not applied" });
      } else {
        p.cb.applied(result);
      }
    }
    for (const rs of rd.readStates) {
      const r = this.pendingReads.get(rs.ctx);
      if (!r) continue;
      this.pendingReads.delete(rs.ctx);
      r.index = rs.index;
      this.readsAwaitingApply.push(r);
    }
    for (const rf of rd.readFailures) {
      const r = this.pendingReads.get(rf.ctx);
      if (!r) continue;
      this.pendingReads.delete(rf.ctx);
      r.cb.failed({ code: "LEADERSHIP_LOST", message: `read not confirmed: ${rf.reason}`, leaderHint: true });
    }
    if (this.readsAwaitingApply.length) {
      let lastApplied = Math.max(this.core.applied, rd.snapshot?.index ?? 0);
      if (rd.committed.length) lastApplied = rd.committed[rd.committed.length - 1]!.index;
      let keep = 0;
      for (const r of this.readsAwaitingApply) {
        if (r.index <= lastApplied) r.cb.ready();
        else this.readsAwaitingApply[keep++] = r;
      }
      this.readsAwaitingApply.length = keep;
    }
  }

  private noticeRoleChange(): void {
    const role = this.core.role;
    const leader = this.core.leader;
    if (role === this.lastRole && leader === this.lastLeader) return;
    if (leader !== this.lastLeader) this.metrics?.leaderSeen(this.core.term, leader);
    const wasLeader = this.lastRole === "leader";
    if (role === "leader" && !wasLeader) this.log.info("became leader");
    else if (leader !== this.lastLeader && leader !== NONE && role !== "leader") this.log.info("following leader", { leader });
    else if (role !== this.lastRole) this.log.info(`became ${role}`);
    this.lastRole = role;
    this.lastLeader = leader;
    if (role === "leader" && !wasLeader) for (const fn of this.onBecameLeader) fn();
    if (wasLeader && role !== "leader") {
      // Writes we proposed may or may not commit under the next leader; the client retries them
      // with the same sequence number and the session table applies each at most once.
      for (const [index, p] of this.pendingWrites) {
        this.pendingWrites.delete(index);
        p.cb.failed({ code: "LEADERSHIP_LOST", message: `node ${this.id} lost leadership; the write may or may not have been applied: retry it`, leaderHint: true });
      }
      for (const r of this.readsAwaitingApply) r.cb.failed({ code: "LEADERSHIP_LOST", message: "leadership changed", leaderHint: true });
      this.readsAwaitingApply.length = 0;
    }
  }

  private failAllPending(failure: Failure): void {
    const writes = [...this.pendingWrites.values()];
    const reads = [...this.pendingReads.values(), ...this.readsAwaitingApply];
    this.pendingWrites.clear();
    this.pendingReads.clear();
    this.readsAwaitingApply.length = 0;
    for (const p of writes) p.cb.failed(failure);
    for (const r of reads) r.cb.failed(failure);
  }

  // ---- snapshots and compaction -------------------------------------------------------------

  private maybeSnapshot(): void {
    if (this.snapshotInProgress) return;
    const applied = this.core.applied;
    const base = this.snapshot?.index ?? 0;
    if (applied - base < this.opts.snapshotEntries) return;
    // A snapshot costs time proportional to the whole state; take one only once the log since the
    // last one is a good fraction of the state too, so the cost per write stays constant as it grows.
    if (this.logBytesSinceSnapshot < this.kv.stats().approxBytes / 4) return;
    const term = this.core.termAt(applied);
    if (term === undefined) return;
    this.snapshotInProgress = true;
    this.logBytesSinceSnapshot = 0;
    const t0 = this.clock.now();
    const previous = this.snapshot;
    let encodeMs = 0;
    let snap: Snapshot;
    // Encoded in slices between which the node keeps serving (the state is captured now).
    this.kv
      .snapshotAsync()
      .then((data) => {
        encodeMs = this.clock.now() - t0;
        snap = { index: applied, term, data };
        return this.storage.writeSnapshotAsync(snap);
      })
      .then(() => {
        // Meanwhile a newer snapshot may have been installed from the leader: never step back.
        if (this.stopped || (this.snapshot && this.snapshot.index >= snap.index)) return;
        this.snapshot = { index: snap.index, term: snap.term };
        // Keep the log back to the previous snapshot on disk (a fallback if the newest is damaged),
        // and a tail of entries in memory so a briefly slow follower needs no snapshot.
        const deleted = this.storage.wal.compact(previous?.index ?? 0);
        const keep = Math.min(CATCH_UP_ENTRIES, this.opts.snapshotEntries);
        this.core.compact(Math.max(this.core.status().snapshotIndex, applied - keep));
        this.metrics?.snapshotWritten(snap.data.length, this.clock.now() - t0);
        this.log.info("snapshot written", { index: applied, bytes: snap.data.length, encodeMs: Math.round(encodeMs), segmentsDeleted: deleted });
      })
      .catch((err: Error) => this.log.error("snapshot failed", { reason: err.message }))
      .finally(() => {
        this.snapshotInProgress = false;
      });
  }

  /** Send our latest snapshot to a follower (the transport streams it on its own connection). */
  private async sendSnapshot(peerId: NodeId, term: number): Promise<void> {
    if (this.snapshotStreams.has(peerId)) return;
    const snap = this.snapshot && this.storage.loadLatestSnapshot();
    if (!snap) {
      // Compacted only in memory so far (the snapshot file is being written): retry later.
      this.core.reportSnapshot(peerId, false);
      return;
    }
    this.snapshotStreams.add(peerId);
    try {
      const progress = () => this.core.snapshotStreamProgress(peerId);
      if (!(await this.transport.sendSnapshot(peerId, term, snap, progress))) throw new Error("transfer did not complete");
      this.log.info("sent snapshot to follower", { peer: peerId, index: snap.index, bytes: snap.data.length });
      this.core.reportSnapshot(peerId, true);
    } catch (err) {
      this.log.warn("snapshot transfer failed", { peer: peerId, reason: (err as Error).message });
      this.core.reportSnapshot(peerId, false);
    } finally {
      this.snapshotStreams.delete(peerId);
      this.scheduleReady();
    }
  }

  private sendMessage(m: Message): void {
    if (m.type === "snap") {
      void this.sendSnapshot(m.to, m.term);
      return;
    }
    this.metrics?.messageSent(m);
    this.transport.send(m);
  }
}
