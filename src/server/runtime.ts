// The node runtime: drives the pure Raft core (the Ready loop, persistence ordering, apply, read
// serving, snapshot taking, sending and installing) with its clock, transport and storage injected,
// so the same code runs in production (node.ts) and in the deterministic simulation (tests/sim).

import { KvStore } from "../kv/store";
import type { ApplyResult } from "../kv/types";
import { AssertionError, RaftCore, type RaftConfig } from "../raft/core";
import type { ConfChange } from "../raft/confchange";
import { ENTRY_CONFIG, NONE, type ClusterConfig, type Entry, type HardState, type Message, type NodeId, type Ready, type Role, type Snapshot, type SnapshotMeta } from "../raft/types";
import type { RecoveredState, SnapshotReader } from "../storage";
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
   * Deliver a snapshot to `to` (the receiver steps it as a "snap" message of `term`). `open` opens the
   * file (null: there is none); call it only once the follower is reachable, and read it a piece at a
   * time (it is large). Resolves true once it was handed over completely, false (or rejects) if the
   * transfer failed; rejects with StaleSnapshotStream as soon as `stream.current()` turns false.
   */
  sendSnapshot(to: NodeId, term: number, open: () => Promise<SnapshotReader | null>, stream: SnapshotStream): Promise<boolean>;
}

/** What a snapshot transfer asks of the runtime while it streams. */
export interface SnapshotStream {
  /** Part of the snapshot got through: the follower is alive and the transfer not stalled. */
  progress(): void;
  /** This node still leads the term the transfer was started in (else the follower refuses it). */
  current(): boolean;
}

/** A snapshot transfer stopped because its sender no longer leads the term it was sent in. */
export class StaleSnapshotStream extends Error {
  constructor(readonly term: number) {
    super(`no longer the leader of term ${term}`);
  }
}

/** The write-ahead log operations the runtime uses (src/storage/wal.ts). */
export interface RuntimeWal {
  append(entries: readonly Entry[]): void;
  setHardState(hardState: HardState): void;
  resetLog(snapshot: SnapshotMeta): void;
  sync(): void;
  /**
   * Write what is buffered now and make it durable off the event loop; resolves once it is. Records
   * buffered meanwhile wait for the next call. Without it the runtime syncs on the event loop.
   */
  syncAsync?(): Promise<void>;
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
  /** The newest snapshot file opened for streaming to a follower, or null if there is none. */
  openLatestSnapshot(): Promise<SnapshotReader | null>;
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
  /** Stop the node at once (production: exit the process); the runtime does nothing more after it. */
  failStop(reason: string): void;
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
/** After a failed snapshot transfer to a follower, wait this long before the next (doubling up to the max). */
const SNAPSHOT_RETRY_MIN_MS = 1_000;
const SNAPSHOT_RETRY_MAX_MS = 30_000;

export class NodeRuntime {
  readonly id: NodeId;
  readonly core: RaftCore;
  readonly kv: KvStore;
  private readonly clock: Clock;
  private readonly transport: Transport;
  private readonly storage: RuntimeStorage;
  private readonly log: Logger;
  private readonly failStop: (reason: string) => void;
  private readonly metrics: NodeMetrics | undefined;
  private readonly opts: RuntimeOptions;

  private readyScheduled = false;
  private stopped = false;
  /** failStop was called. */
  private failed = false;
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
  /** Per follower: when a snapshot transfer may be tried again after one failed (doubling delay). */
  private readonly snapshotBackoff = new Map<NodeId, { retryAt: number; delayMs: number }>();

  /** Term and vote last handed to the WAL, and the ones known durable. */
  private writtenTerm: number;
  private writtenVote: number;
  private durableTerm: number;
  private durableVote: number;
  /** Readies written but not yet known durable, oldest first, with the messages held until they are. */
  private readonly unsynced: { rd: Ready; held: Message[]; needsSync: boolean }[] = [];
  /** An async sync is in flight. */
  private syncing = false;
  private lastRole: Role = "follower";
  private lastLeader = NONE;

  /** Called when this node becomes leader (after its first Ready as leader). */
  readonly onBecameLeader: (() => void)[] = [];
  /** Called after a snapshot from the leader replaced the state machine. */
  readonly onSnapshotInstalled: (() => void)[] = [];
  /** Called when the configuration in effect changed (it takes effect when appended, before it commits). */
  readonly onConfigChanged: ((config: ClusterConfig) => void)[] = [];
  private configSeen: ClusterConfig | null = null;

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
    this.writtenTerm = this.durableTerm = state.hardState.term;
    this.writtenVote = this.durableVote = state.hardState.vote;
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
    this.noticeConfigChange();
    this.cancelTick = this.clock.every(this.opts.tickMs, () => {
      this.guardCore(() => this.core.tick());
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
    this.guardCore(() => this.core.step(m));
    this.scheduleReady();
  }

  /** A chunk of a snapshot `from` streams to us arrived: contact from the leader. */
  snapshotChunkReceived(from: NodeId, term: number): void {
    this.guardCore(() => this.core.snapshotChunkReceived(from, term));
    this.scheduleReady();
  }

  /** Propose `data`; null when this node is not the leader. `cb` learns the outcome. */
  propose(data: Uint8Array, cb?: WriteCallbacks): { index: number; term: number } | null {
    const at = this.guardCore(() => this.core.propose(data));
    if (!at) return null;
    if (cb) this.pendingWrites.set(at.index, { term: at.term, cb });
    this.scheduleReady();
    return at;
  }

  /**
   * Leader: append a configuration change; `cb` learns when it is applied (committed). Returns why it
   * was refused, or null.
   */
  proposeConfChange(ch: ConfChange, cb: WriteCallbacks): string | null {
    const at = this.core.proposeConfChange(ch);
    if (typeof at === "string") return at;
    this.pendingWrites.set(at.index, { term: at.term, cb });
    this.scheduleReady();
    return null;
  }

  /** Leader: hand leadership to `target` (thesis 3.10). Returns why it cannot, or null once started. */
  transferLeadership(target: NodeId): string | null {
    const refused = this.core.transferLeadership(target);
    this.scheduleReady();
    return refused;
  }

  /** Start a linearizable read; false when this node is not the leader. */
  readIndex(cb: ReadCallbacks): boolean {
    const ctx = this.nextReadCtx++;
    if (!this.guardCore(() => this.core.readIndex(ctx))) return false;
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

  /**
   * A broken core invariant stops the node at once with the reason (fail-stop): a node whose core is
   * in an unknown state must not keep answering.
   */
  private guardCore<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof AssertionError) this.stopNow(err.message);
      throw err;
    }
  }

  /** Fail-stop, once: the first reason is the one that counts. */
  private stopNow(reason: string): void {
    if (this.failed) return;
    this.failed = true;
    this.stopped = true;
    this.cancelTick?.();
    this.failStop(reason);
  }

  private processReady(): void {
    const t0 = this.clock.now();
    let readies = 0;
    let applied = 0;
    let sent = 0;
    try {
      while (this.core.hasReady()) {
        const rd = this.core.ready();
        readies++;
        applied += rd.committed.length;
        sent += rd.messages.length;
        this.handleReady(rd);
      }
    } catch (err) {
      // Anything thrown here (requests' own failures are caught where they happen) leaves the Ready
      // loop half done: stop rather than limp on.
      this.stopNow(`the Ready loop failed: ${(err as Error).message}`);
      return;
    }
    this.startSync();
    this.noticeRoleChange();
    this.noticeConfigChange();
    this.maybeSnapshot();
    const ms = this.clock.now() - t0;
    // As long as two heartbeat intervals: the turn delayed heartbeats (StallWatch counts the stall).
    if (ms >= 2 * this.opts.heartbeatTicks * this.opts.tickMs) this.log.logAtMostEvery(1000, "warn", "slow Ready turn", { ms: Math.round(ms), readies, applied, messages: sent });
  }

  private noticeConfigChange(): void {
    const { config, index } = this.core.membership;
    if (config === this.configSeen) return;
    this.configSeen = config;
    this.log.info("configuration", { index, voters: config.voters.join(",") || "-", learners: config.learners.join(",") || "-" });
    for (const fn of this.onConfigChanged) fn(config);
  }

  private handleReady(rd: Ready): void {
    // A leader's messages depend on no unsynced term or vote (it made both durable before it won),
    // so it sends its appends before its own write is durable, while followers write theirs (Raft
    // thesis 10.2.1); it counts itself toward a commit only once the core is told its write is durable.
    const termOrVoteChanges = !!rd.hardState && (rd.hardState.term !== this.writtenTerm || rd.hardState.vote !== this.writtenVote);
    const sendNow =
      this.core.role === "leader" && !rd.snapshot && !termOrVoteChanges && this.writtenTerm === this.durableTerm && this.writtenVote === this.durableVote;
    if (sendNow) for (const m of rd.messages) this.sendMessage(m);
    let needsSync: boolean;
    try {
      needsSync = this.write(rd, termOrVoteChanges);
    } catch (err) {
      // A failed write leaves the disk state unknown: stop rather than risk lying.
      this.stopNow(`storage failure: ${(err as Error).message}`);
      throw err;
    }
    const held = sendNow ? [] : rd.messages;
    const applyStart = this.clock.now();
    this.apply(rd);
    this.metrics?.applied(rd.committed.length, this.clock.now() - applyStart);
    this.core.reportApplied(rd);
    if (needsSync || this.unsynced.length) {
      this.unsynced.push({ rd, held, needsSync });
    } else {
      // Nothing of this Ready needs a sync and nothing before it is waiting for one.
      this.durable(rd, held);
    }
  }

  /**
   * Hand `rd`'s writes to the WAL: entries first, then the hard state (a commit index must never reach
   * the disk ahead of the entries it covers). Returns whether they need an fdatasync before anything
   * that depends on them is sent. Without async syncs (or without group commit) they are synced here.
   */
  private write(rd: Ready, termOrVoteChanges: boolean): boolean {
    const wal = this.storage.wal;
    if (rd.snapshot) {
      this.storage.writeSnapshot(rd.snapshot);
      wal.resetLog({ index: rd.snapshot.index, term: rd.snapshot.term });
      this.snapshot = { index: rd.snapshot.index, term: rd.snapshot.term };
    }
    if (!this.opts.groupCommit) {
      for (const e of rd.entries) {
        wal.append([e]);
        this.syncWal();
      }
    } else if (rd.entries.length) wal.append(rd.entries);
    if (rd.hardState) {
      wal.setHardState(rd.hardState);
      this.writtenTerm = rd.hardState.term;
      this.writtenVote = rd.hardState.vote;
    }
    // Term, vote and entries must be durable before anything that depends on them is sent; the commit
    // index need not be (after a crash it is learned again from the leader), so a Ready that only moves
    // the commit index is written with the next sync instead of costing an fdatasync of its own.
    const needsSync = rd.entries.length > 0 || rd.snapshot !== null || termOrVoteChanges;
    if (!needsSync) return false;
    if (wal.syncAsync && this.opts.groupCommit) return true;
    this.syncWal();
    return false;
  }

  private syncWal(): void {
    const t0 = this.clock.now();
    this.storage.wal.sync();
    this.metrics?.walSynced(this.clock.now() - t0);
  }

  /** Start an fdatasync of everything written so far, if a written Ready needs one and none is in flight. */
  private startSync(): void {
    if (this.syncing || this.stopped || !this.unsynced.some((u) => u.needsSync)) return;
    const covered = this.unsynced.length;
    this.syncing = true;
    const t0 = this.clock.now();
    this.storage.wal.syncAsync!().then(
      () => {
        this.syncing = false;
        this.metrics?.walSynced(this.clock.now() - t0);
        if (this.stopped) return;
        for (const u of this.unsynced.splice(0, covered)) this.durable(u.rd, u.held);
        // Readies after those that need no sync of their own are durable now too.
        while (this.unsynced.length && !this.unsynced[0]!.needsSync) {
          const u = this.unsynced.shift()!;
          this.durable(u.rd, u.held);
        }
        this.startSync();
        this.scheduleReady();
      },
      (err: Error) => this.stopNow(`storage failure: ${err.message}`),
    );
  }

  /** `rd` is durable: tell the core, then send what waited for it. */
  private durable(rd: Ready, held: Message[]): void {
    if (rd.hardState) {
      this.durableTerm = rd.hardState.term;
      this.durableVote = rd.hardState.vote;
    }
    this.guardCore(() => this.core.reportPersisted(rd));
    for (const m of held) {
      // An acknowledgement of an older term's append vouches for entries that a newer leader may have
      // replaced before they were ever written (both appends stepped before this Ready was taken): the
      // old leader could count it toward a commit. Drop it, as the network may; only a new leader
      // truncates a follower's entries, so an acknowledgement of the current term is always true.
      if (m.type === "appResp" && m.success && m.term < this.core.term) continue;
      this.sendMessage(m);
    }
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
      try {
        if (e.data.length && e.type !== ENTRY_CONFIG) result = this.kv.applyEntry(e.index, e.data);
        else this.kv.markApplied(e.index);
      } catch (err) {
        // The state machine is deterministic: every node fails this entry the same way. It fails this
        // one request; the entry counts as applied (the store advanced its index before applying).
        this.log.error("applying an entry failed", { index: e.index, reason: (err as Error).message });
        result = { ok: false, error: { code: "INTERNAL", message: `applying entry ${e.index} failed: ${(err as Error).message}` } };
      }
      const p = this.pendingWrites.get(e.index);
      if (!p) continue;
      this.pendingWrites.delete(e.index);
      if (p.term !== e.term) {
        this.settle(p.cb, () => p.cb.failed({ code: "LEADERSHIP_LOST", message: "leadership changed before the write committed; it was not applied" }));
      } else {
        this.settle(p.cb, () => p.cb.applied(result));
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
      this.settle(r.cb, () => r.cb.failed({ code: "LEADERSHIP_LOST", message: `read not confirmed: ${rf.reason}`, leaderHint: true }));
    }
    if (this.readsAwaitingApply.length) {
      let lastApplied = Math.max(this.core.applied, rd.snapshot?.index ?? 0);
      if (rd.committed.length) lastApplied = rd.committed[rd.committed.length - 1]!.index;
      let keep = 0;
      for (const r of this.readsAwaitingApply) {
        if (r.index <= lastApplied) this.settle(r.cb, () => r.cb.ready());
        else this.readsAwaitingApply[keep++] = r;
      }
      this.readsAwaitingApply.length = keep;
    }
  }

  /**
   * Run one request's completion. If it throws (its reply cannot be built or sent), that request fails
   * with INTERNAL and the loop goes on: one request's failure is never the node's.
   */
  private settle(cb: { failed(f: Failure): void }, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.warn("a request failed while completing it", { reason: (err as Error).message });
      try {
        cb.failed({ code: "INTERNAL", message: `node ${this.id} could not complete the request: ${(err as Error).message}` });
      } catch {
        // The request's connection cannot take even an error reply: nothing more to do for it.
      }
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
      // Writes already committed (a leader that committed its own removal steps down before applying
      // it) are answered when applied, as usual.
      const commit = this.core.commit;
      for (const [index, p] of this.pendingWrites) {
        if (index <= commit) continue;
        this.pendingWrites.delete(index);
        this.settle(p.cb, () => p.cb.failed({ code: "LEADERSHIP_LOST", message: `node ${this.id} lost leadership; the write may or may not have been applied: retry it`, leaderHint: true }));
      }
      for (const r of this.readsAwaitingApply) this.settle(r.cb, () => r.cb.failed({ code: "LEADERSHIP_LOST", message: "leadership changed", leaderHint: true }));
      this.readsAwaitingApply.length = 0;
    }
  }

  private failAllPending(failure: Failure): void {
    const writes = [...this.pendingWrites.values()];
    const reads = [...this.pendingReads.values(), ...this.readsAwaitingApply];
    this.pendingWrites.clear();
    this.pendingReads.clear();
    this.readsAwaitingApply.length = 0;
    for (const p of writes) this.settle(p.cb, () => p.cb.failed(failure));
    for (const r of reads) this.settle(r.cb, () => r.cb.failed(failure));
  }

  // ---- snapshots and compaction -------------------------------------------------------------

  private maybeSnapshot(): void {
    // The encoder may also be busy with a `snapshot save` (server/snapshot-save.ts): try again later.
    if (this.snapshotInProgress || this.kv.encodingSnapshot) return;
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
    const config = this.core.configAt(applied);
    // Encoded in slices between which the node keeps serving (the state is captured now).
    this.kv
      .snapshotAsync()
      .then((data) => {
        encodeMs = this.clock.now() - t0;
        snap = { index: applied, term, data, config };
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
    const backoff = this.snapshotBackoff.get(peerId);
    if (!this.snapshot || (backoff && this.clock.now() < backoff.retryAt)) {
      // No snapshot file yet (being written), or the last transfer to this peer failed: retry later.
      this.core.reportSnapshot(peerId, false);
      return;
    }
    this.snapshotStreams.add(peerId);
    let reader: SnapshotReader | null = null;
    const t0 = this.clock.now();
    try {
      const stream: SnapshotStream = {
        progress: () => this.core.snapshotStreamProgress(peerId),
        current: () => !this.stopped && this.core.role === "leader" && this.core.term === term,
      };
      // The file is opened only once the follower answered: a follower that is down costs no read.
      const open = async () => (reader = await this.storage.openLatestSnapshot());
      if (!(await this.transport.sendSnapshot(peerId, term, open, stream))) throw new Error("transfer did not complete");
      const sent = reader as SnapshotReader | null;
      this.snapshotBackoff.delete(peerId);
      this.log.info("sent snapshot to follower", { peer: peerId, index: sent?.index, bytes: sent?.size, ms: Math.round(this.clock.now() - t0) });
      this.core.reportSnapshot(peerId, true);
    } catch (err) {
      if (err instanceof StaleSnapshotStream) {
        // A follower refuses a stream of an older term: stop at once (the new leader sends its own).
        this.log.info("stopped sending a snapshot: no longer the leader of its term", { peer: peerId, streamTerm: err.term });
        return;
      }
      const delayMs = Math.min(SNAPSHOT_RETRY_MAX_MS, Math.max(SNAPSHOT_RETRY_MIN_MS, 2 * (backoff?.delayMs ?? 0)));
      this.snapshotBackoff.set(peerId, { retryAt: this.clock.now() + delayMs, delayMs });
      this.log.warn("snapshot transfer failed", { peer: peerId, reason: (err as Error).message, retryInMs: delayMs });
      this.core.reportSnapshot(peerId, false);
    } finally {
      (reader as SnapshotReader | null)?.close();
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
