// The Raft consensus core: a deterministic state machine with no I/O, no timers and no wall clock.
// A runtime feeds it tick(), step(msg), propose(data) and readIndex(ctx), then collects a Ready batch
// (what to persist, what to send, what to apply) and acknowledges it with advance().

import { applyConfChange, configOf, describeChange, encodeConfig, isMember, isVoter, members, type ConfChange } from "./confchange";
import { addInflight, clearInflight, freeInflight, isPaused, newProgress, toProbe, type Progress, type ProgressState } from "./progress";
import { committedIndex, hasQuorum, voteResult } from "./quorum";
import {
  ENTRY_CONFIG,
  NONE,
  type ClusterConfig,
  type AppendRequest,
  type AppendResponse,
  type Entry,
  type HardState,
  type HeartbeatRequest,
  type Message,
  type NodeId,
  type ReadFailure,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  type SnapshotMeta,
  type SnapshotRequest,
  type TimeoutNow,
  type VoteRequest,
  type VoteResponse,
} from "./types";

export class AssertionError extends Error {}

export function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new AssertionError(`raft invariant violated: ${msg}`);
}

export interface RaftConfig {
  id: NodeId;
  /**
   * The voting members the cluster starts with (its bootstrap configuration). A configuration in the
   * log or in the snapshot replaces it. A node joining an existing cluster starts with none.
   */
  voters: NodeId[];
  /** Learners of the bootstrap configuration. */
  learners?: NodeId[];
  /** Base election timeout in ticks; each node waits a random time in [electionTicks, 2*electionTicks). */
  electionTicks: number;
  heartbeatTicks: number;
  /** Seeded randomness in [0, 1); injected so runs are reproducible. */
  rng: () => number;
  preVote?: boolean;
  checkQuorum?: boolean;
  maxEntriesPerAppend?: number;
  maxBytesPerAppend?: number;
  /** Append messages a leader keeps in flight to one follower before waiting for acknowledgements. */
  maxInflight?: number;
  /** Entry bytes a leader keeps in flight to one follower (progress.ts InflightLimits). */
  maxInflightBytes?: number;
}

export interface InitialState {
  hardState: HardState;
  /** Entries after the snapshot, contiguous. */
  entries: Entry[];
  snapshot: SnapshotMeta | null;
}

export const DEFAULT_MAX_ENTRIES_PER_APPEND = 512;
export const DEFAULT_MAX_BYTES_PER_APPEND = 1024 * 1024;
export const DEFAULT_MAX_INFLIGHT = 64;
export const DEFAULT_MAX_INFLIGHT_BYTES = 4 * 1024 * 1024;

/** A learner may be promoted once its log is at most this many entries behind the leader's commit index. */
export const PROMOTE_MAX_LAG = 1000;

interface PendingRead {
  ctx: number;
  index: number;
  round: number;
}

export interface StatusView {
  id: NodeId;
  role: Role;
  term: number;
  leader: NodeId;
  vote: NodeId;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  lastTerm: number;
  snapshotIndex: number;
  /** The configuration in effect (the latest in the log, committed or not) and the index that set it. */
  config: ClusterConfig;
  configIndex: number;
  /** Leader: the node leadership is being transferred to, or NONE. */
  transferee: NodeId;
  progress?: Record<number, { match: number; next: number; state: ProgressState }>;
}

export class RaftCore {
  readonly id: NodeId;
  private readonly cfg: Required<Omit<RaftConfig, "id" | "voters" | "learners" | "rng">>;
  private readonly rng: () => number;

  // Persistent state (mirrored in storage).
  term = 0;
  vote: NodeId = NONE;
  commit = 0;

  // The log: entries[i].index == snapIndex + 1 + i.
  private snapIndex = 0;
  private snapTerm = 0;
  /** The configuration in effect at snapIndex. */
  private snapConfig: ClusterConfig;
  private entries: Entry[] = [];

  /** The configuration in effect: the latest in the log (taking effect when appended), else snapConfig. */
  private config: ClusterConfig;
  /** Index of the entry that set `config` (at or below snapIndex: it came with the snapshot or the bootstrap). */
  private configIndex = 0;
  /** Entries at or below this index are on stable storage (the runtime said so with persisted()). */
  private stableIndex = 0;
  /** Entries at or below this index were handed to the runtime in a Ready (written or being written). */
  private acceptedIndex = 0;

  applied = 0;
  /** Committed entries at or below this index were handed to the runtime to apply. */
  private applyingIndex = 0;

  role: Role = "follower";
  leader: NodeId = NONE;
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTicks = 0;
  private votes = new Map<NodeId, boolean>();
  private progress = new Map<NodeId, Progress>();
  /** Leadership transfer in progress (thesis 3.10): its target, and ticks since it began. */
  private transferee: NodeId = NONE;
  private transferElapsed = 0;

  // ReadIndex.
  private readRound = 0;
  private readRoundRequested = false;
  private pendingReads: PendingRead[] = [];
  /** Reads that arrived before this leader committed an entry of its own term. */
  private readsAwaitingCommit: number[] = [];
  private pendingAppendBroadcast = false;

  // Output, drained by ready().
  private msgs: Message[] = [];
  private readStates: ReadState[] = [];
  private readFailures: ReadFailure[] = [];
  private pendingSnapshot: Snapshot | null = null;
  /** The hard state last handed out in a Ready. */
  private acceptedHardState: HardState;

  constructor(cfg: RaftConfig, init?: InitialState) {
    assert(cfg.electionTicks > cfg.heartbeatTicks, "election timeout must exceed the heartbeat interval");
    this.id = cfg.id;
    this.snapConfig = { voters: [...cfg.voters].sort((a, b) => a - b), learners: [...(cfg.learners ?? [])].sort((a, b) => a - b) };
    this.config = this.snapConfig;
    this.rng = cfg.rng;
    this.cfg = {
      electionTicks: cfg.electionTicks,
      heartbeatTicks: cfg.heartbeatTicks,
      preVote: cfg.preVote ?? true,
      checkQuorum: cfg.checkQuorum ?? true,
      maxEntriesPerAppend: cfg.maxEntriesPerAppend ?? DEFAULT_MAX_ENTRIES_PER_APPEND,
      maxBytesPerAppend: cfg.maxBytesPerAppend ?? DEFAULT_MAX_BYTES_PER_APPEND,
      maxInflight: cfg.maxInflight ?? DEFAULT_MAX_INFLIGHT,
      maxInflightBytes: cfg.maxInflightBytes ?? DEFAULT_MAX_INFLIGHT_BYTES,
    };
    if (init) {
      if (init.snapshot) {
        this.snapIndex = init.snapshot.index;
        this.snapTerm = init.snapshot.term;
        if (init.snapshot.config) this.snapConfig = init.snapshot.config;
      }
      this.entries = init.entries.filter((e) => e.index > this.snapIndex);
      for (let i = 0; i < this.entries.length; i++) {
        assert(this.entries[i]!.index === this.snapIndex + 1 + i, "initial entries must be contiguous after the snapshot");
      }
      this.term = init.hardState.term;
      this.vote = init.hardState.vote;
      this.commit = Math.max(Math.min(init.hardState.commit, this.lastIndex()), this.snapIndex);
      this.applied = this.snapIndex;
      this.applyingIndex = this.snapIndex;
      this.stableIndex = this.lastIndex();
      this.acceptedIndex = this.lastIndex();
    }
    this.restoreConfig();
    this.acceptedHardState = this.hardState();
    this.resetRandomizedElectionTimeout();
  }

  // ---- log helpers ----------------------------------------------------------------------

  lastIndex(): number {
    return this.snapIndex + this.entries.length;
  }

  lastTerm(): number {
    return this.entries.length ? this.entries[this.entries.length - 1]!.term : this.snapTerm;
  }

  firstIndex(): number {
    return this.snapIndex + 1;
  }

  /** Term of the entry at `index`, 0 for index 0, undefined when compacted away or beyond the log. */
  termAt(index: number): number | undefined {
    if (index === this.snapIndex) return this.snapTerm;
    if (index < this.snapIndex || index > this.lastIndex()) return index === 0 ? 0 : undefined;
    return this.entries[index - this.snapIndex - 1]!.term;
  }

  entryAt(index: number): Entry | undefined {
    if (index <= this.snapIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapIndex - 1];
  }

  private slice(from: number, toInclusive: number): Entry[] {
    const lo = Math.max(from, this.firstIndex()) - this.snapIndex - 1;
    const hi = Math.min(toInclusive, this.lastIndex()) - this.snapIndex;
    return lo < hi ? this.entries.slice(lo, hi) : [];
  }

  private truncateAndAppend(newEntries: Entry[]): void {
    if (newEntries.length === 0) return;
    const first = newEntries[0]!.index;
    assert(first > this.commit, `cannot overwrite committed entry ${first} (commit ${this.commit})`);
    assert(first <= this.lastIndex() + 1, `gap in log: appending ${first} after ${this.lastIndex()}`);
    if (first <= this.lastIndex()) {
      this.entries.length = first - this.snapIndex - 1;
      this.stableIndex = Math.min(this.stableIndex, first - 1);
      this.acceptedIndex = Math.min(this.acceptedIndex, first - 1);
      // A configuration entry cut from the log is no longer in effect: go back to the one before it.
      if (this.configIndex >= first) this.restoreConfig();
    }
    for (const e of newEntries) {
      this.entries.push(e);
      // A configuration takes effect as soon as it is in the log, committed or not (thesis 4.1).
      const c = configOf(e);
      if (c) this.setConfig(c, e.index);
    }
  }

  // ---- membership -----------------------------------------------------------------------

  /** The configuration in effect at `index` (the latest configuration entry at or below it). */
  configAt(index: number): ClusterConfig {
    for (let i = Math.min(index, this.lastIndex()); i > this.snapIndex; i--) {
      const c = configOf(this.entryAt(i)!);
      if (c) return c;
    }
    return this.snapConfig;
  }

  /** Recompute the configuration from the log (after a restart, a truncation or a snapshot). */
  private restoreConfig(): void {
    for (let i = this.lastIndex(); i > this.snapIndex; i--) {
      const c = configOf(this.entryAt(i)!);
      if (c) return this.setConfig(c, i);
    }
    this.setConfig(this.snapConfig, this.snapIndex);
  }

  private setConfig(c: ClusterConfig, index: number): void {
    this.config = c;
    this.configIndex = index;
    if (this.role !== "leader") return;
    // Replicate to every member, learners included; stop replicating to removed ones.
    // A new member is probed from the configuration entry itself; its refusal says where its log ends.
    for (const id of members(c)) if (id !== this.id && !this.progress.has(id)) this.progress.set(id, newProgress(index));
    for (const id of this.progress.keys()) if (!isMember(c, id)) this.progress.delete(id);
    if (this.transferee !== NONE && !isVoter(c, this.transferee)) this.transferee = NONE;
  }

  get voters(): NodeId[] {
    return this.config.voters;
  }

  /** The configuration in effect and the index of the entry that set it (cheap; status() has more). */
  get membership(): { config: ClusterConfig; index: number } {
    return { config: this.config, index: this.configIndex };
  }

  /** Whether this node may campaign and vote counts with: it is a voter of its configuration. */
  private promotable(): boolean {
    return isVoter(this.config, this.id);
  }

  /**
   * Leader: append a configuration change (one server at a time). Refused while another change is
   * not yet committed, before this leader has committed an entry of its term, during a leadership
   * transfer, or when the change is invalid. Returns where the change will commit, or why it was refused.
   */
  proposeConfChange(ch: ConfChange): { index: number; term: number } | string {
    if (this.role !== "leader") return `node ${this.id} is not the leader`;
    if (this.transferee !== NONE) return `leadership is being transferred to node ${this.transferee}`;
    if (this.configIndex > this.commit) return `a configuration change (entry ${this.configIndex}) is still pending; retry once it commits`;
    if (this.termAt(this.commit) !== this.term) return "the leader has not yet committed an entry of its term; retry shortly";
    if (ch.op === "promote") {
      const lag = this.learnerLag(ch.id);
      if (typeof lag === "string") return lag;
      if (lag > PROMOTE_MAX_LAG) return `node ${ch.id} is ${lag} entries behind the commit index (at most ${PROMOTE_MAX_LAG} to promote); wait until it catches up`;
    }
    const next = applyConfChange(this.config, ch);
    if (typeof next === "string") return `cannot ${describeChange(ch)}: ${next}`;
    const entry: Entry = { index: this.lastIndex() + 1, term: this.term, data: encodeConfig(next), type: ENTRY_CONFIG };
    this.truncateAndAppend([entry]);
    this.pendingAppendBroadcast = true;
    if (this.maybeCommit()) this.pendingAppendBroadcast = true; // a change that leaves this node the only voter
    return { index: entry.index, term: entry.term };
  }

  /** Leader: how many entries the learner `id` is behind the commit index, or why it has no lag to speak of. */
  learnerLag(id: NodeId): number | string {
    if (this.role !== "leader") return `node ${this.id} is not the leader`;
    if (!this.config.learners.includes(id)) return `node ${id} is not a learner`;
    const pr = this.progress.get(id)!;
    if (pr.state !== "replicate") return `node ${id} has not caught up yet (its log is being ${pr.state === "snapshot" ? "sent as a snapshot" : "probed"})`;
    return Math.max(0, this.commit - pr.match);
  }

  /** Leader removed by a committed configuration: hand over to the most up-to-date voter and step down. */
  private maybeStepDownRemoved(): void {
    if (this.role !== "leader" || this.promotable() || this.configIndex > this.commit) return;
    let best = NONE;
    let bestMatch = -1;
    for (const v of this.config.voters) {
      const pr = this.progress.get(v);
      if (pr && pr.match > bestMatch) [best, bestMatch] = [v, pr.match];
    }
    // Tell the best voter to campaign at once, rather than leave the cluster waiting for a timeout.
    if (best !== NONE && bestMatch === this.lastIndex()) this.send({ type: "timeoutNow", from: this.id, to: best, term: this.term });
    this.becomeFollower(this.term, NONE);
  }

  /**
   * Leader: hand leadership to voter `target` (thesis 3.10). New proposals are refused until the
   * transfer ends; the target is brought up to date and then told to campaign at once. The transfer is
   * abandoned after an election timeout. Returns null when started, or why it cannot be.
   */
  transferLeadership(target: NodeId): string | null {
    if (this.role !== "leader") return `node ${this.id} is not the leader`;
    if (target === this.id) return `node ${target} is already the leader`;
    if (!isVoter(this.config, target)) return `node ${target} is not a voter`;
    if (this.transferee !== NONE) return `leadership is already being transferred to node ${this.transferee}`;
    this.transferee = target;
    this.transferElapsed = 0;
    const pr = this.progress.get(target)!;
    if (pr.match === this.lastIndex()) this.sendTimeoutNow(target);
    else this.sendAppend(target, pr);
    return null;
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send({ type: "timeoutNow", from: this.id, to, term: this.term });
  }

  /** Leader: whether new proposals are refused because leadership is being transferred. */
  get transferring(): boolean {
    return this.transferee !== NONE;
  }

  private isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.commit };
  }

  status(): StatusView {
    const view: StatusView = {
      id: this.id,
      role: this.role,
      term: this.term,
      leader: this.leader,
      vote: this.vote,
      commitIndex: this.commit,
      appliedIndex: this.applied,
      lastIndex: this.lastIndex(),
      lastTerm: this.lastTerm(),
      snapshotIndex: this.snapIndex,
      config: this.config,
      configIndex: this.configIndex,
      transferee: this.transferee,
    };
    if (this.role === "leader") {
      view.progress = {};
      for (const [id, pr] of this.progress) view.progress[id] = { match: pr.match, next: pr.next, state: pr.state };
    }
    return view;
  }

  // ---- role transitions -----------------------------------------------------------------

  private resetRandomizedElectionTimeout(): void {
    const base = this.cfg.electionTicks;
    this.randomizedElectionTicks = base + Math.floor(this.rng() * base);
  }

  private reset(term: number): void {
    if (term !== this.term) {
      assert(term > this.term, `term must not go backwards (${this.term} -> ${term})`);
      this.term = term;
      this.vote = NONE;
    }
    this.leader = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.votes.clear();
    this.failPendingReads("leadership changed");
    this.pendingAppendBroadcast = false;
    this.transferee = NONE;
  }

  private becomeFollower(term: number, leader: NodeId): void {
    this.reset(term);
    this.role = "follower";
    this.leader = leader;
  }

  private becomePreCandidate(): void {
    assert(this.role !== "leader", "a leader does not pre-campaign");
    // Pre-vote changes neither term nor vote: a node cut off from the cluster must not inflate terms.
    this.failPendingReads("leadership changed");
    this.votes.clear();
    this.role = "precandidate";
    this.leader = NONE;
    this.electionElapsed = 0;
    this.resetRandomizedElectionTimeout();
  }

  private becomeCandidate(): void {
    assert(this.role !== "leader", "a leader does not campaign");
    this.reset(this.term + 1);
    this.role = "candidate";
    this.vote = this.id;
  }

  private becomeLeader(): void {
    assert(this.role === "candidate", "only a candidate becomes leader");
    this.reset(this.term);
    this.role = "leader";
    this.leader = this.id;
    this.progress.clear();
    for (const p of members(this.config)) if (p !== this.id) this.progress.set(p, newProgress(this.lastIndex() + 1));
    // A no-op of the new term lets entries of earlier terms commit (Raft paper, figure 8).
    this.truncateAndAppend([{ index: this.lastIndex() + 1, term: this.term, data: new Uint8Array(0) }]);
    this.maybeCommit();
    this.pendingAppendBroadcast = true;
  }

  /** Campaign (only voters do); `transfer`: at the leader's request, so voters ignore their lease. */
  private campaign(preVote: boolean, transfer = false): void {
    if (!this.promotable()) return;
    if (preVote) this.becomePreCandidate();
    else this.becomeCandidate();
    this.votes.set(this.id, true);
    if (voteResult(this.config.voters, this.votes) === "won") {
      if (preVote) this.campaign(false);
      else this.becomeLeader();
      return;
    }
    const term = preVote ? this.term + 1 : this.term;
    for (const p of this.config.voters) {
      if (p === this.id) continue;
      this.send({
        type: "vote",
        from: this.id,
        to: p,
        term,
        preVote,
        lastLogIndex: this.lastIndex(),
        lastLogTerm: this.lastTerm(),
        ...(transfer ? { transfer: true } : {}),
      });
    }
  }

  // ---- inputs ---------------------------------------------------------------------------

  tick(): void {
    this.electionElapsed++;
    if (this.role === "leader") {
      this.tickLeader();
      return;
    }
    if (this.electionElapsed >= this.randomizedElectionTicks) {
      if (this.promotable()) this.campaign(this.cfg.preVote);
      else this.electionElapsed = 0; // learners and non-members never campaign
    }
  }

  private tickLeader(): void {
    if (this.transferee !== NONE && ++this.transferElapsed >= this.cfg.electionTicks) {
      // The target did not take over within an election timeout: take proposals again.
      this.transferee = NONE;
    }
    if (this.electionElapsed >= this.cfg.electionTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum) {
        const active = hasQuorum(this.config.voters, (id) => id === this.id || this.progress.get(id)?.recentActive === true);
        for (const pr of this.progress.values()) pr.recentActive = false;
        if (!active) {
          // A leader that cannot reach a majority steps down instead of serving alone.
          this.becomeFollower(this.term, NONE);
          return;
        }
      }
    }
    const stallLimit = Math.max(2 * this.cfg.heartbeatTicks, Math.floor(this.cfg.electionTicks / 2));
    for (const pr of this.progress.values()) {
      if (pr.state === "snapshot" || pr.match < this.lastIndex()) pr.stallTicks++;
      else pr.stallTicks = 0;
      if (pr.state === "snapshot" && pr.stallTicks >= 4 * this.cfg.electionTicks) {
        // The snapshot transfer seems lost: start over from a probe.
        toProbe(pr, pr.match + 1);
      } else if (pr.state === "replicate" && pr.stallTicks >= stallLimit) {
        // Appends in flight were probably lost: resend from the last acknowledged index.
        toProbe(pr, pr.match + 1);
      }
    }
    this.heartbeatElapsed++;
    if (this.heartbeatElapsed >= this.cfg.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      for (const [peer, pr] of this.progress) {
        if (pr.state === "probe") pr.probeSent = false;
        this.sendHeartbeat(peer, pr);
      }
    }
  }

  /** Propose a command. Returns the index and term it will commit at if it commits, or null if not leader. */
  propose(data: Uint8Array): { index: number; term: number } | null {
    if (this.role !== "leader" || this.transferee !== NONE) return null;
    const entry: Entry = { index: this.lastIndex() + 1, term: this.term, data };
    this.truncateAndAppend([entry]);
    this.pendingAppendBroadcast = true;
    return { index: entry.index, term: entry.term };
  }

  /**
   * Start a linearizable read. The read is confirmed through a ReadState once a majority has
   * acknowledged this node as leader after the request; the caller then waits for applied >= index.
   * Returns false when this node is not the leader.
   */
  readIndex(ctx: number): boolean {
    if (this.role !== "leader") return false;
    if (this.termAt(this.commit) !== this.term) {
      // Until an entry of this term commits, the commit index may lag what an earlier leader committed.
      this.readsAwaitingCommit.push(ctx);
      return true;
    }
    this.addPendingRead(ctx);
    return true;
  }

  private addPendingRead(ctx: number): void {
    if (this.config.voters.length === 1 && this.config.voters[0] === this.id) {
      this.readStates.push({ index: this.commit, ctx });
      return;
    }
    this.pendingReads.push({ ctx, index: this.commit, round: this.readRound + 1 });
    this.readRoundRequested = true;
  }

  private failPendingReads(reason: string): void {
    for (const r of this.pendingReads) this.readFailures.push({ ctx: r.ctx, reason });
    for (const ctx of this.readsAwaitingCommit) this.readFailures.push({ ctx, reason });
    this.pendingReads = [];
    this.readsAwaitingCommit = [];
    this.readRoundRequested = false;
  }

  step(m: Message): void {
    assert(m.to === this.id, `message for ${m.to} delivered to ${this.id}`);
    if (m.from === this.id) return;

    if (m.term > this.term) {
      if (m.type === "vote") {
        // Leader lease (with check-quorum): while we hear from a live leader, ignore campaigns, so a
        // node that was cut off and returns cannot depose a healthy leader.
        // A campaign the leader asked for (leadership transfer) is the exception.
        const inLease = this.cfg.checkQuorum && !m.transfer && this.leader !== NONE && this.electionElapsed < this.cfg.electionTicks;
        if (inLease) return;
        if (m.preVote) {
          this.handleVote(m);
          return;
        }
        this.becomeFollower(m.term, NONE);
      } else if (m.type === "voteResp" && m.preVote && m.granted) {
        // A granted pre-vote carries the proposed term; it does not move ours.
      } else {
        const leader = m.type === "app" || m.type === "snap" || m.type === "hb" || m.type === "timeoutNow" ? m.from : NONE;
        this.becomeFollower(m.term, leader);
      }
    } else if (m.term < this.term) {
      if ((this.cfg.checkQuorum || this.cfg.preVote) && (m.type === "app" || m.type === "snap" || m.type === "hb")) {
        // Tell a stale leader about the newer term so it steps down.
        this.send(this.appResp(m.from, false, 0, 0, 0, 0));
      } else if (m.type === "vote" && m.preVote) {
        this.send({ type: "voteResp", from: this.id, to: m.from, term: this.term, preVote: true, granted: false });
      }
      return;
    }

    switch (m.type) {
      case "vote":
        this.handleVote(m);
        return;
      case "voteResp":
        this.handleVoteResp(m);
        return;
      case "app":
        if (this.role === "leader") {
          assert(false, `two leaders in term ${this.term}: ${this.id} and ${m.from}`);
        }
        this.acceptLeader(m.from);
        this.handleAppend(m);
        return;
      case "snap":
        assert(this.role !== "leader", `two leaders in term ${this.term}`);
        this.acceptLeader(m.from);
        this.handleSnapshot(m);
        return;
      case "hb":
        this.handleHeartbeat(m);
        return;
      case "timeoutNow":
        this.handleTimeoutNow(m);
        return;
      case "appResp":
        if (this.role === "leader") this.handleAppendResp(m);
        return;
      case "hbResp": {
        const pr = this.role === "leader" ? this.progress.get(m.from) : undefined;
        if (pr) this.heardFrom(pr, m.readRound);
        return;
      }
    }
  }

  /** The leader hands over (thesis 3.10): campaign at once, skipping pre-vote. */
  private handleTimeoutNow(m: TimeoutNow): void {
    if (this.role === "leader" || !this.promotable()) return;
    this.leader = m.from;
    this.campaign(false, true);
  }

  private handleHeartbeat(m: HeartbeatRequest): void {
    assert(this.role !== "leader", `two leaders in term ${this.term}: ${this.id} and ${m.from}`);
    this.acceptLeader(m.from);
    this.send({ type: "hbResp", from: this.id, to: m.from, term: this.term, readRound: m.readRound });
  }

  /** A message of the current term from the leader: follow it and restart the election timer. */
  private acceptLeader(leader: NodeId): void {
    if (this.role !== "follower") this.becomeFollower(this.term, leader);
    this.leader = leader;
    this.electionElapsed = 0;
  }

  /** Leader: `pr`'s peer answered; `readRound` is the ReadIndex round it echoed. */
  private heardFrom(pr: Progress, readRound: number): void {
    pr.recentActive = true;
    if (readRound > pr.readRoundAcked) {
      pr.readRoundAcked = readRound;
      this.confirmReads();
    }
  }

  private handleVote(m: VoteRequest): void {
    const canVote =
      this.vote === m.from ||
      (this.vote === NONE && this.leader === NONE) ||
      (m.preVote && m.term > this.term);
    const granted = canVote && this.isUpToDate(m.lastLogIndex, m.lastLogTerm);
    if (granted && !m.preVote) {
      this.vote = m.from;
      this.electionElapsed = 0;
    }
    const resp: VoteResponse = {
      type: "voteResp",
      from: this.id,
      to: m.from,
      // A granted pre-vote answers with the proposed term; anything else with our own.
      term: granted && m.preVote ? m.term : this.term,
      preVote: m.preVote,
      granted,
    };
    this.send(resp);
  }

  private handleVoteResp(m: VoteResponse): void {
    const expecting = (this.role === "precandidate" && m.preVote) || (this.role === "candidate" && !m.preVote);
    if (!expecting) return;
    if (!this.votes.has(m.from)) this.votes.set(m.from, m.granted);
    const result = voteResult(this.config.voters, this.votes);
    if (result === "won") {
      if (this.role === "precandidate") this.campaign(false);
      else this.becomeLeader();
    } else if (result === "lost") {
      this.becomeFollower(this.term, NONE);
    }
  }

  private appResp(to: NodeId, success: boolean, matchIndex: number, hintIndex: number, hintTerm: number, readRound: number): AppendResponse {
    return { type: "appResp", from: this.id, to, term: this.term, success, matchIndex, hintIndex, hintTerm, readRound };
  }

  private handleAppend(m: AppendRequest): void {
    if (m.prevIndex < this.commit) {
      // Everything up to our commit index already matches the leader. Skip what we have.
      const fresh = m.entries.filter((e) => e.index > this.commit);
      if (fresh.length === 0 || fresh[0]!.index !== this.commit + 1) {
        this.send(this.appResp(m.from, true, this.commit, 0, 0, m.readRound));
        return;
      }
      m = { ...m, prevIndex: this.commit, prevTerm: this.termAt(this.commit)!, entries: fresh };
    }
    const localPrevTerm = this.termAt(m.prevIndex);
    if (localPrevTerm !== m.prevTerm) {
      // Reject with a hint so the leader skips back a whole term, not one entry at a time.
      let hintIndex: number;
      let hintTerm: number;
      if (localPrevTerm === undefined) {
        hintIndex = this.lastIndex() + 1;
        hintTerm = 0;
      } else {
        hintTerm = localPrevTerm;
        hintIndex = m.prevIndex;
        while (hintIndex - 1 > this.commit && this.termAt(hintIndex - 1) === hintTerm) hintIndex--;
      }
      this.send(this.appResp(m.from, false, m.prevIndex, hintIndex, hintTerm, m.readRound));
      return;
    }
    // Find the first entry we do not already hold. Truncate only on a real conflict: an old, shorter
    // append that arrives late must not cut entries a newer append already delivered.
    let i = 0;
    for (; i < m.entries.length; i++) {
      const e = m.entries[i]!;
      const t = this.termAt(e.index);
      if (t === undefined) break; // beyond our log
      if (t !== e.term) break; // conflict
    }
    if (i < m.entries.length) this.truncateAndAppend(m.entries.slice(i));
    const lastNew = m.prevIndex + m.entries.length;
    const newCommit = Math.min(m.commit, lastNew);
    if (newCommit > this.commit) this.commit = newCommit;
    this.send(this.appResp(m.from, true, lastNew, 0, 0, m.readRound));
  }

  private handleSnapshot(m: SnapshotRequest): void {
    const s = m.snapshot;
    if (s.index <= this.commit) {
      this.send(this.appResp(m.from, true, this.commit, 0, 0, 0));
      return;
    }
    if (this.termAt(s.index) === s.term) {
      // We already hold the snapshot's last entry: the log is consistent up to it, just commit.
      this.commit = s.index;
      this.send(this.appResp(m.from, true, s.index, 0, 0, 0));
      return;
    }
    assert(s.data !== undefined, "a snapshot message reaching the core must carry its data");
    this.snapIndex = s.index;
    this.snapTerm = s.term;
    this.entries = [];
    if (s.config) this.snapConfig = s.config;
    this.restoreConfig();
    this.commit = s.index;
    this.stableIndex = s.index;
    this.acceptedIndex = s.index;
    this.pendingSnapshot = { index: s.index, term: s.term, data: s.data, config: this.snapConfig };
    this.send(this.appResp(m.from, true, s.index, 0, 0, 0));
  }

  private handleAppendResp(m: AppendResponse): void {
    const pr = this.progress.get(m.from);
    if (!pr) return;
    this.heardFrom(pr, m.readRound);
    if (!m.success) {
      const rejected = m.matchIndex;
      if (rejected === pr.match && pr.match > 0 && m.hintTerm === 0 && m.hintIndex <= pr.match) {
        // A heartbeat at the index the follower acknowledged was refused: it lost its log (a wiped
        // data directory). Start over from what it still has, or from a snapshot.
        pr.match = m.hintIndex - 1;
        toProbe(pr, m.hintIndex);
        this.sendAppend(m.from, pr);
        return;
      }
      const stale =
        (pr.state === "replicate" && rejected <= pr.match) ||
        (pr.state === "probe" && rejected !== pr.next - 1) ||
        pr.state === "snapshot";
      if (stale) return;
      let next = m.hintIndex;
      if (m.hintTerm > 0) {
        // If we hold entries of the follower's conflicting term, resume just after our last one of it.
        const ourLast = this.lastIndexOfTerm(m.hintTerm, rejected);
        if (ourLast !== undefined) next = ourLast + 1;
      }
      next = Math.max(pr.match + 1, Math.min(next, rejected));
      toProbe(pr, next);
      this.sendAppend(m.from, pr);
      return;
    }
    if (m.matchIndex > pr.match) {
      pr.match = m.matchIndex;
      pr.stallTicks = 0;
      if (pr.next <= pr.match) pr.next = pr.match + 1;
      freeInflight(pr, pr.match);
      if (pr.state === "probe" || (pr.state === "snapshot" && pr.match >= pr.pendingSnapshot)) {
        pr.state = "replicate";
        clearInflight(pr);
        pr.probeSent = false;
      }
      if (this.maybeCommit()) this.pendingAppendBroadcast = true;
      if (this.role !== "leader") return; // it committed its own removal
      if (m.from === this.transferee && pr.match === this.lastIndex()) this.sendTimeoutNow(m.from);
    } else if (pr.state === "probe") {
      pr.probeSent = false;
    }
    this.sendAppendsWhileOpen(m.from, pr);
  }

  private lastIndexOfTerm(term: number, atOrBelow: number): number | undefined {
    for (let i = Math.min(atOrBelow, this.lastIndex()); i > this.snapIndex; i--) {
      const t = this.termAt(i)!;
      if (t === term) return i;
      if (t < term) return undefined;
    }
    return undefined;
  }

  /**
   * Commit the highest index a majority of the voters holds, if it is of the current term. Returns
   * true if it moved (false too when this leader committed its own removal and stepped down).
   */
  private maybeCommit(): boolean {
    // A leader that is not a voter (its removal is pending) manages the log but does not count itself.
    const candidate = committedIndex(this.config.voters, (id) => (id === this.id ? this.stableIndex : (this.progress.get(id)?.match ?? 0)));
    // Only entries of the current term are committed by counting replicas (Raft paper, figure 8).
    if (candidate > this.commit && this.termAt(candidate) === this.term) {
      this.commit = candidate;
      if (this.readsAwaitingCommit.length) {
        const waiting = this.readsAwaitingCommit;
        this.readsAwaitingCommit = [];
        for (const ctx of waiting) this.addPendingRead(ctx);
      }
      this.maybeStepDownRemoved();
      return this.role === "leader";
    }
    return false;
  }

  private confirmReads(): void {
    while (this.pendingReads.length) {
      const r = this.pendingReads[0]!;
      const acked = hasQuorum(this.config.voters, (id) => id === this.id || (this.progress.get(id)?.readRoundAcked ?? 0) >= r.round);
      if (!acked) return;
      this.pendingReads.shift();
      this.readStates.push({ index: r.index, ctx: r.ctx });
    }
  }

  // ---- sending --------------------------------------------------------------------------

  private send(m: Message): void {
    this.msgs.push(m);
  }

  private sendAppendsWhileOpen(peer: NodeId, pr: Progress): void {
    while (!isPaused(pr, this.cfg) && pr.next <= this.lastIndex()) {
      if (!this.sendAppend(peer, pr)) break;
    }
  }

  /** Send entries from pr.next (or a snapshot when they are compacted). Returns false if nothing was sent. */
  private sendAppend(peer: NodeId, pr: Progress, allowEmpty = false): boolean {
    if (isPaused(pr, this.cfg)) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.termAt(prevIndex);
    if (prevTerm === undefined || pr.next < this.firstIndex()) {
      // What the follower needs is compacted away: send the snapshot (the runtime attaches its bytes).
      pr.state = "snapshot";
      pr.pendingSnapshot = this.snapIndex;
      pr.stallTicks = 0;
      clearInflight(pr);
      this.send({ type: "snap", from: this.id, to: peer, term: this.term, snapshot: { index: this.snapIndex, term: this.snapTerm, config: this.snapConfig } });
      return true;
    }
    const entries: Entry[] = [];
    let bytes = 0;
    for (let i = pr.next; i <= this.lastIndex() && entries.length < this.cfg.maxEntriesPerAppend; i++) {
      const e = this.entryAt(i)!;
      if (entries.length > 0 && bytes + e.data.length > this.cfg.maxBytesPerAppend) break;
      entries.push(e);
      bytes += e.data.length;
    }
    if (entries.length === 0 && !allowEmpty) return false;
    this.send({
      type: "app",
      from: this.id,
      to: peer,
      term: this.term,
      prevIndex,
      prevTerm,
      entries,
      commit: this.commit,
      readRound: this.readRound,
    });
    if (entries.length) {
      const last = entries[entries.length - 1]!.index;
      if (pr.state === "replicate") {
        addInflight(pr, last, bytes);
        pr.next = last + 1;
      } else {
        pr.probeSent = true;
      }
    } else if (pr.state === "probe") {
      pr.probeSent = true;
    }
    return true;
  }

  /**
   * A heartbeat carries the commit index (bounded by what the follower holds) and the ReadIndex round.
   * A follower that cannot take an append (it is being sent a snapshot, or what it acknowledged was
   * compacted away) still gets one that needs nothing from the log, so check-quorum counts it alive.
   */
  private sendHeartbeat(peer: NodeId, pr: Progress): void {
    if (pr.state !== "snapshot" && !isPaused(pr, this.cfg) && pr.next <= this.lastIndex()) {
      if (this.sendAppend(peer, pr)) return;
    }
    const prevIndex = pr.match;
    const prevTerm = pr.state === "snapshot" ? undefined : this.termAt(prevIndex);
    if (prevTerm === undefined) {
      if (pr.state !== "snapshot" && this.sendAppend(peer, pr, true)) return;
      this.send({ type: "hb", from: this.id, to: peer, term: this.term, readRound: this.readRound });
      return;
    }
    this.send({
      type: "app",
      from: this.id,
      to: peer,
      term: this.term,
      prevIndex,
      prevTerm,
      entries: [],
      commit: Math.min(this.commit, pr.match),
      readRound: this.readRound,
    });
  }

  private flushLeaderOutput(): void {
    if (this.role !== "leader") return;
    if (this.readRoundRequested) {
      // One heartbeat round confirms every read that arrived since the last round.
      this.readRoundRequested = false;
      this.readRound++;
      for (const [peer, pr] of this.progress) this.sendHeartbeat(peer, pr);
      this.pendingAppendBroadcast = false;
      return;
    }
    if (this.pendingAppendBroadcast) {
      this.pendingAppendBroadcast = false;
      for (const [peer, pr] of this.progress) {
        if (pr.next <= this.lastIndex()) this.sendAppendsWhileOpen(peer, pr);
        else if (pr.state !== "snapshot") this.sendHeartbeat(peer, pr);
      }
    }
  }

  // ---- output ---------------------------------------------------------------------------

  hasReady(): boolean {
    if (this.readRoundRequested || this.pendingAppendBroadcast) return true;
    const hs = this.acceptedHardState;
    return (
      this.msgs.length > 0 ||
      this.readStates.length > 0 ||
      this.readFailures.length > 0 ||
      this.pendingSnapshot !== null ||
      this.lastIndex() > this.acceptedIndex ||
      this.commit > this.applyingIndex ||
      hs.term !== this.term ||
      hs.vote !== this.vote ||
      hs.commit !== this.commit
    );
  }

  /**
   * Collect what the runtime must do: everything since the previous Ready. Inputs may keep arriving
   * before the runtime reports back (etcd's asynchronous storage writes): the runtime calls
   * reportApplied(rd) once it applied rd's snapshot and committed entries, and reportPersisted(rd) once rd's hard state and
   * entries are durable, in the order of the Readies. advance(rd) is both at once.
   */
  ready(): Ready {
    this.flushLeaderOutput();
    const hs = this.hardState();
    const p = this.acceptedHardState;
    const hardStateChanged = hs.term !== p.term || hs.vote !== p.vote || hs.commit !== p.commit;
    const applyFrom = Math.max(this.applyingIndex, this.pendingSnapshot?.index ?? 0) + 1;
    const rd: Ready = {
      hardState: hardStateChanged ? hs : null,
      entries: this.slice(this.acceptedIndex + 1, this.lastIndex()),
      snapshot: this.pendingSnapshot,
      messages: this.msgs,
      committed: this.slice(applyFrom, this.commit),
      readStates: this.readStates,
      readFailures: this.readFailures,
    };
    this.msgs = [];
    this.readStates = [];
    this.readFailures = [];
    this.acceptedHardState = hs;
    this.acceptedIndex = this.lastIndex();
    this.applyingIndex = Math.max(this.applyingIndex, this.commit, this.pendingSnapshot?.index ?? 0);
    this.pendingSnapshot = null;
    return rd;
  }

  /** The runtime has persisted, sent and applied everything in `rd`. */
  advance(rd: Ready): void {
    this.reportApplied(rd);
    this.reportPersisted(rd);
  }

  /** The runtime has applied the snapshot and the committed entries of `rd`. */
  reportApplied(rd: Ready): void {
    if (rd.snapshot) this.applied = Math.max(this.applied, rd.snapshot.index);
    if (rd.committed.length) this.applied = Math.max(this.applied, rd.committed[rd.committed.length - 1]!.index);
  }

  /** The hard state and entries of `rd` (and of every earlier Ready) are durable. */
  reportPersisted(rd: Ready): void {
    if (!rd.entries.length) return;
    const last = rd.entries[rd.entries.length - 1]!;
    // A later Ready may have replaced these entries (a follower's log truncated meanwhile).
    if (this.termAt(last.index) !== last.term || last.index > this.acceptedIndex) return;
    this.stableIndex = Math.max(this.stableIndex, last.index);
    if (this.role === "leader" && this.maybeCommit()) this.pendingAppendBroadcast = true;
  }

  /** The state machine was snapshotted at `index` (<= applied): drop the log up to it. */
  compact(index: number): void {
    assert(index <= this.applied, `cannot compact beyond applied (${index} > ${this.applied})`);
    if (index <= this.snapIndex) return;
    const term = this.termAt(index)!;
    this.snapConfig = this.configAt(index);
    this.entries = this.entries.slice(index - this.snapIndex);
    this.snapIndex = index;
    this.snapTerm = term;
  }

  /** The runtime reports whether a snapshot it was sending to `peer` got there. */
  reportSnapshot(peer: NodeId, ok: boolean): void {
    const pr = this.progress.get(peer);
    if (!pr || pr.state !== "snapshot") return;
    // On success, probe from the snapshot's index: the follower answers once it has installed it, and
    // until then it gets cheap probes, never the snapshot again (a follower installing a 270 MB snapshot
    // takes seconds; waiting in snapshot state timed out and streamed the whole snapshot a second time).
    toProbe(pr, ok ? Math.max(pr.match + 1, pr.pendingSnapshot + 1) : pr.match + 1);
  }

  /**
   * Follower: the runtime received a chunk of a snapshot that `leader` streams in `term`. It counts as
   * contact from the leader (a long transfer must not time the follower out into an election).
   */
  snapshotChunkReceived(leader: NodeId, term: number): void {
    if (leader === this.id || term < this.term) return;
    if (term > this.term) this.becomeFollower(term, leader);
    else if (this.role === "leader") return; // a confused peer; the chunk itself will be refused
    this.acceptLeader(leader);
  }

  /** Leader: the snapshot stream to `peer` made progress, so the peer is alive and the transfer not stalled. */
  snapshotStreamProgress(peer: NodeId): void {
    const pr = this.role === "leader" ? this.progress.get(peer) : undefined;
    if (!pr || pr.state !== "snapshot") return;
    pr.recentActive = true;
    pr.stallTicks = 0;
  }

  /** Start an election now instead of waiting for the timeout (used by tests). */
  campaignNow(): void {
    if (this.role !== "leader") this.campaign(this.cfg.preVote);
  }
}
