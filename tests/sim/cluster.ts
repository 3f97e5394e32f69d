// A deterministic simulation of a raftkv cluster in one process, running the production runtime
// (src/server/runtime.ts, clients.ts, watches.ts, leases.ts) with the real key-value store. Only the
// clock, the network and the disk are simulated, all driven by one seeded PRNG: message loss,
// duplication, reordering and delay, partitions, paused nodes, clock drift, crashes (kill -9, and power
// loss that drops or tears what was not synced), failed fsyncs and a full disk. Clients put and read
// through any node that believes it leads. Safety checks run as things happen and after every step.

import type { NodeAddr } from "../../src/config";
import { configOf, isMember } from "../../src/raft/confchange";
import { majority } from "../../src/raft/quorum";
import type { ClusterConfig, Entry, Message, NodeId, Ready, Snapshot } from "../../src/raft/types";
import type { NodeStatus, ResponseFrame } from "../../src/protocol";
import { ClientService, type ClientConn } from "../../src/server/clients";
import { LEASE_CHECK_MS, LeaseKeeper } from "../../src/server/leases";
import { dropBootstrapConfig, handleMemberRequest, unwrapSnapshot, unwrapSnapshotData, wrapSnapshotData } from "../../src/server/membership";
import { Logger } from "../../src/server/log";
import { NodeRuntime, type Clock, type Transport } from "../../src/server/runtime";
import { Watches } from "../../src/server/watches";
import { mulberry32 } from "../rng";
import { SimStorage } from "./simstorage";

export class SafetyViolation extends Error {}

function fail(msg: string): never {
  throw new SafetyViolation(msg);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function hashStep(h: number, data: Uint8Array): number {
  let x = Math.imul(h ^ data.length, 0x01000193) >>> 0;
  for (let i = 0; i < data.length; i++) x = Math.imul(x ^ data[i]!, 0x01000193) >>> 0;
  return x;
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** Milliseconds per simulation step. */
const STEP_MS = 1;
const TICK_MS = 10;

/** One node's view of time: it runs at its own rate (drift) and stands still while paused. */
class SimClock implements Clock {
  local = 0;
  private timers: { next: number; ms: number; fn: () => void; cancelled: boolean }[] = [];
  deferred: (() => void)[] = [];

  constructor(readonly rate: number) {}

  now(): number {
    return this.local;
  }
  defer(fn: () => void): void {
    this.deferred.push(fn);
  }
  every(ms: number, fn: () => void): () => void {
    const t = { next: this.local + ms, ms, fn, cancelled: false };
    this.timers.push(t);
    return () => {
      t.cancelled = true;
    };
  }
  /** Advance local time by one step and fire what is due. */
  advance(): void {
    this.local += STEP_MS * this.rate;
    for (const t of this.timers) {
      if (!t.cancelled && t.next <= this.local) {
        t.next += t.ms;
        t.fn();
      }
    }
  }
}

interface SimNode {
  id: NodeId;
  storage: SimStorage;
  incarnation: number;
  rt: NodeRuntime | null; // null while down
  clock: SimClock | null;
  clients: ClientService | null;
  rate: number;
  pausedUntil: number;
  /** Applied prefix as this incarnation saw it: index and rolling hash. */
  applied: number;
  hash: number;
  wasLeaderInTerm: number;
  /** Async syncs of the current incarnation: when each completes. */
  syncDue: number[];
  /** The disk is full until then (0: not full). */
  diskFullUntil: number;
  /** A committed configuration has held this node (bootstrap members from the start; spares once added). */
  joined: boolean;
  /** Removed by a committed configuration: stopped at this step (0: not removed). */
  stopAt: number;
  /** Removed and stopped for good; its id is never used again. */
  retired: boolean;
  /** As leader: the term and commit index last checked against the acknowledgements it was sent. */
  checkedCommit: { term: number; commit: number };
}

type Delivery = { kind: "msg"; msg: Message } | { kind: "snap"; msg: Message; done: (ok: boolean) => void };

interface InFlight {
  d: Delivery;
  from: NodeId;
  fromIncarnation: number;
  to: NodeId;
  deliverAt: number;
}

export interface SimOptions {
  seed: number;
  nodes: number;
  steps: number;
  lossRate?: number;
  dupRate?: number;
  /** Largest network delay, in steps. */
  maxDelay?: number;
  partitionRate?: number;
  crashRate?: number;
  /** Of crashes, the share that are power losses (unsynced writes dropped or torn) rather than kill -9. */
  powerLossShare?: number;
  /** Chance per step that a node with an fsync in flight loses power right then. */
  crashDuringSyncRate?: number;
  /** Chance per step that a node loses power while a write that replaces log entries is not yet durable. */
  truncationCrashRate?: number;
  /** Chance per step that a node that is down restarts. */
  restartRate?: number;
  pauseRate?: number;
  /** Clock rates are drawn from [1 - drift, 1 + drift]. */
  drift?: number;
  /** Chance per step that some node's next fsync fails (that node must stop). */
  fsyncFailRate?: number;
  /** Chance per step that some node's disk fills up (it must stop at its next write). */
  diskFullRate?: number;
  writeRate?: number;
  readRate?: number;
  snapshotEntries?: number;
  /** Largest delay of an async fsync, in steps. */
  maxSyncDelay?: number;
  /**
   * Chance per step that the leader proposes a membership change: add a spare as a learner, promote a
   * learner, remove a voter (never below MIN_VOTERS, the leader included) or a learner. 0: membership is fixed.
   */
  memberChangeRate?: number;
}

/** Membership changes never leave fewer voters than this, nor add beyond MAX_VOTERS. */
const MIN_VOTERS = 3;
const MAX_VOTERS = 5;
/** A removed node is stopped within this many steps after its removal commits. */
const REMOVED_STOP_STEPS = 300;

export interface SimStats {
  committed: number;
  acked: number;
  readsConfirmed: number;
  leaderChanges: number;
  crashes: number;
  powerLosses: number;
  failStops: number;
  pauses: number;
  snapshotsInstalled: number;
  maxTerm: number;
  /** Committed membership changes. */
  adds: number;
  promotions: number;
  removals: number;
}

interface AckedWrite {
  key: string;
  value: string;
  revision: number;
}

const KEYS = 8;

export class Sim {
  /** The first safety violation, also one thrown where no one could catch it. */
  private violation: Error | null = null;
  readonly rng: () => number;
  readonly nodes: SimNode[] = [];
  private net: InFlight[] = [];
  private now = 0;
  /** cut.has("a-b"): messages from a to b are dropped. */
  private cut = new Set<string>();
  private readonly opt: Required<SimOptions>;
  private readonly addrs: NodeAddr[];

  // Global knowledge for the safety checks.
  private committed = new Map<number, { term: number; data: Uint8Array }>();
  private committedHash = new Map<number, number>([[0, 0]]);
  private leaders = new Map<number, NodeId>();
  /** Per key, the highest revision of a write acknowledged so far. */
  private ackedRev = new Map<string, number>();
  /** Every acknowledged write by revision: a revision acknowledged twice for different writes is a lost write. */
  private ackedByRev = new Map<number, AckedWrite>();
  private nextWrite = 1;
  private nextReqId = 1;
  readonly stats: SimStats = {
    committed: 0,
    acked: 0,
    readsConfirmed: 0,
    leaderChanges: 0,
    crashes: 0,
    powerLosses: 0,
    failStops: 0,
    pauses: 0,
    snapshotsInstalled: 0,
    maxTerm: 0,
    adds: 0,
    promotions: 0,
    removals: 0,
  };
  private readonly bootstrap: NodeId[];
  /** The configuration of the highest committed configuration entry. */
  private committedConfig: ClusterConfig;
  /** Vote grants sent, by term: candidate -> voters that granted. */
  private grants = new Map<number, Map<NodeId, Set<NodeId>>>();
  /** Highest index acknowledged to a leader: "term:leader:follower" -> match index. */
  private acks = new Map<string, number>();

  constructor(opt: SimOptions) {
    this.opt = {
      lossRate: 0.05,
      dupRate: 0.02,
      maxDelay: 30,
      partitionRate: 0.002,
      crashRate: 0.0005,
      powerLossShare: 0.5,
      crashDuringSyncRate: 0.001,
      restartRate: 0.02,
      truncationCrashRate: 0.5,
      pauseRate: 0.0005,
      drift: 0.05,
      fsyncFailRate: 0,
      diskFullRate: 0,
      writeRate: 0.1,
      readRate: 0.05,
      snapshotEntries: 0,
      maxSyncDelay: 3,
      memberChangeRate: 0,
      ...opt,
    };
    this.rng = mulberry32(opt.seed);
    this.addrs = [];
    this.bootstrap = Array.from({ length: opt.nodes }, (_, id) => id);
    this.committedConfig = { voters: this.bootstrap, learners: [] };
    for (let id = 0; id < opt.nodes; id++) this.addNode(true);
    for (const n of this.nodes) this.start(n);
  }

  /** A new node with an empty disk and the next unused id: a bootstrap member, or a spare outside the configuration. */
  private addNode(bootstrap: boolean): SimNode {
    const id = this.nodes.length;
    const drift = this.opt.drift;
    const node: SimNode = {
      id,
      storage: new SimStorage(mulberry32(Math.floor(this.rng() * 2 ** 32))),
      incarnation: 0,
      rt: null,
      clock: null,
      clients: null,
      rate: 1 - drift + 2 * drift * this.rng(),
      pausedUntil: 0,
      applied: 0,
      hash: 0,
      wasLeaderInTerm: 0,
      syncDue: [],
      diskFullUntil: 0,
      joined: bootstrap,
      stopAt: 0,
      retired: false,
      checkedCommit: { term: 0, commit: 0 },
    };
    this.nodes.push(node);
    this.addrs.push({ id, host: "127.0.0.1", port: 1000 + id });
    return node;
  }

  // ---- nodes ------------------------------------------------------------------------------

  /** Start a node from its disk; false if it refuses to start (its disk is full, say). */
  private start(node: SimNode): boolean {
    const quiet = new Logger(node.id, () => 0, "error", "text", () => {});
    let opened: ReturnType<SimStorage["open"]>;
    try {
      opened = node.storage.open(() => {});
    } catch (err) {
      // A full disk or a failing fsync: the node refuses to start; it is tried again later, after a
      // reboot or on the same page cache, every other time (see failStopped).
      const message = (err as Error).message;
      if (/EIO/.test(message)) node.storage.crash(node.incarnation % 2 === 0);
      if (/ENOSPC|EIO/.test(message)) return false;
      throw err;
    }
    // As node.ts does: a snapshot file carries the configuration ahead of the state machine's bytes.
    const bootstrapAddrs = this.addrs.slice(0, this.bootstrap.length);
    const forStorage = (snap: Snapshot): Snapshot => ({ index: snap.index, term: snap.term, data: wrapSnapshotData(dropBootstrapConfig(snap, bootstrapAddrs)) });
    const disk = opened.storage;
    const storage: typeof disk = {
      wal: disk.wal,
      writeSnapshot: (snap) => disk.writeSnapshot(forStorage(snap)),
      writeSnapshotAsync: (snap) => disk.writeSnapshotAsync(forStorage(snap)),
      openLatestSnapshot: () => disk.openLatestSnapshot(),
    };
    const recovered = { ...opened.recovered, snapshot: opened.recovered.snapshot && unwrapSnapshot(opened.recovered.snapshot) };
    node.incarnation++;
    const incarnation = node.incarnation;
    const clock = new SimClock(node.rate);
    const transport: Transport = {
      send: (m) => this.send(node, incarnation, { kind: "msg", msg: m }),
      // The file's bytes, read through the same reader production streams from (checked as read), and
      // delivered whole; on the wire with its configuration, as the TCP transport sends it (unwrapped on delivery).
      sendSnapshot: async (to, term, open) => {
        const reader = await open();
        if (!reader) return false;
        let data: Uint8Array;
        try {
          data = await reader.read(0, reader.size);
        } finally {
          reader.close();
        }
        return new Promise<boolean>((done) => {
          const msg: Message = { type: "snap", from: node.id, to, term, snapshot: { index: reader.index, term: reader.term, data } };
          if (!this.send(node, incarnation, { kind: "snap", msg, done })) done(false);
        });
      },
    };
    const rt = new NodeRuntime(
      {
        id: node.id,
        // Bootstrap members start from nodes.conf; a spare starts with no configuration, as `serve --join` does.
        voters: node.id < this.bootstrap.length ? this.bootstrap : [],
        heartbeatTicks: 1,
        electionTicks: 10,
        tickMs: TICK_MS,
        rng: mulberry32(Math.floor(this.rng() * 2 ** 32)),
        snapshotEntries: this.opt.snapshotEntries || Number.MAX_SAFE_INTEGER,
        groupCommit: true,
        core: { maxInflight: 8, maxEntriesPerAppend: 16 },
      },
      {
        clock,
        transport,
        storage,
        recovered,
        log: quiet,
        failStop: (reason) => this.failStopped(node, incarnation, reason),
      },
    );
    const watches = new Watches(rt.kv, node.id);
    rt.onSnapshotInstalled.push(() => watches.endAfterSnapshot());
    const leases = new LeaseKeeper(rt, clock, quiet);
    clock.every(LEASE_CHECK_MS, () => leases.expire());
    node.clients = new ClientService({ runtime: rt, watches, logNow: () => leases.now(), nodes: this.addrs, status: () => ({}) as NodeStatus });
    node.applied = recovered.snapshot?.index ?? 0;
    node.hash = node.applied === 0 ? 0 : this.committedHash.get(node.applied) ?? fail(`node ${node.id} recovered a snapshot at ${node.applied} no node applied`);
    node.syncDue = [];
    // Observe every Ready as the runtime takes it: what it applies must be the committed history.
    const core = rt.core;
    const takeReady = core.ready.bind(core);
    core.ready = () => {
      const rd = takeReady();
      this.observeReady(node, rd);
      return rd;
    };
    node.rt = rt;
    node.clock = clock;
    rt.start();
    return true;
  }

  private crash(node: SimNode, powerLoss: boolean, midWrite = false): void {
    if (!node.rt) return;
    node.rt = null;
    node.clock = null;
    node.clients = null;
    node.storage.crash(powerLoss, midWrite);
    this.stats.crashes++;
    if (powerLoss) this.stats.powerLosses++;
  }

  /**
   * The runtime stopped itself. A broken core invariant is a bug; a storage failure is the right
   * response. The node then restarts, every other time, after a reboot (page cache dropped) or on the same page
   * cache, which after a failed fsync holds pages marked clean that the disk never got.
   */
  private failStopped(node: SimNode, incarnation: number, reason: string): void {
    if (node.incarnation !== incarnation || !node.rt) return;
    if (!/storage failure/.test(reason)) fail(`node ${node.id} stopped: ${reason}`);
    this.stats.failStops++;
    this.crash(node, node.incarnation % 2 === 0);
  }

  leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes) {
      if (n.rt?.role === "leader" && (!best || n.rt.core.term > best.rt!.core.term)) best = n;
    }
    return best;
  }

  // ---- network ------------------------------------------------------------------------------

  /** Returns false if the message was dropped at once. */
  private send(from: SimNode, incarnation: number, d: Delivery): boolean {
    if (from.incarnation !== incarnation || !from.rt) return false;
    try {
      this.checkDurableBeforeSend(from, d.msg);
    } catch (err) {
      // A send from a promise continuation (a sync completing) throws where no one catches it: step()
      // rethrows it, so the run fails with its seed.
      this.violation ??= err as Error;
      throw err;
    }
    if (this.rng() < this.opt.lossRate) {
      if (d.kind === "snap") this.net.push({ d: { kind: "snap", msg: d.msg, done: d.done }, from: from.id, fromIncarnation: incarnation, to: -1, deliverAt: this.now + this.opt.maxDelay });
      return true;
    }
    const deliverAt = this.now + 1 + Math.floor(this.rng() * this.opt.maxDelay);
    this.net.push({ d, from: from.id, fromIncarnation: incarnation, to: d.msg.to, deliverAt });
    if (d.kind === "msg" && this.rng() < this.opt.dupRate) {
      this.net.push({ d, from: from.id, fromIncarnation: incarnation, to: d.msg.to, deliverAt: deliverAt + Math.floor(this.rng() * this.opt.maxDelay) });
    }
    return true;
  }

  /** Votes and acknowledgements leave a node only once what they promise is on its disk. */
  private checkDurableBeforeSend(node: SimNode, m: Message): void {
    const d = node.storage.durable;
    // A vote or campaign of an older term may leave after a newer term is durable: that term can no
    // longer be voted in again.
    if (m.type === "voteResp" && m.granted && !m.preVote) {
      if (d.hs.term < m.term || (d.hs.term === m.term && d.hs.vote !== m.to)) fail(`node ${node.id} granted a vote to ${m.to} in term ${m.term} before it was durable (durable: term ${d.hs.term}, vote ${d.hs.vote})`);
      let byCandidate = this.grants.get(m.term);
      if (!byCandidate) this.grants.set(m.term, (byCandidate = new Map()));
      let voters = byCandidate.get(m.to);
      if (!voters) byCandidate.set(m.to, (voters = new Set()));
      voters.add(node.id);
    }
    if (m.type === "appResp" && m.success) {
      if (m.matchIndex > d.lastIndex) fail(`node ${node.id} acknowledged index ${m.matchIndex} but has only ${d.lastIndex} durable`);
      if (d.hs.term < m.term) fail(`node ${node.id} answered in term ${m.term} before that term was durable`);
      const key = `${m.term}:${m.to}:${node.id}`;
      this.acks.set(key, Math.max(this.acks.get(key) ?? 0, m.matchIndex));
    }
    if (m.type === "vote" && !m.preVote && (d.hs.term < m.term || (d.hs.term === m.term && d.hs.vote !== node.id))) {
      fail(`node ${node.id} campaigned in term ${m.term} before its term and vote were durable`);
    }
  }

  private deliver(f: InFlight): void {
    const to = f.to >= 0 ? this.nodes[f.to]! : null;
    const ok = !!to?.rt && !this.cut.has(`${f.from}-${f.to}`);
    if (f.d.kind === "snap") {
      const m = f.d.msg as Message & { type: "snap" };
      if (ok) to!.rt!.step({ ...m, snapshot: { index: m.snapshot.index, term: m.snapshot.term, ...unwrapSnapshotData(m.snapshot.data!) } });
      f.d.done(ok);
      return;
    }
    if (ok) to!.rt!.step(f.d.msg);
  }

  // ---- observation --------------------------------------------------------------------------

  private observeReady(node: SimNode, rd: Ready): void {
    if (rd.snapshot) {
      const h = this.committedHash.get(rd.snapshot.index);
      if (h === undefined) fail(`node ${node.id} installed a snapshot at ${rd.snapshot.index} that no node applied`);
      node.applied = rd.snapshot.index;
      node.hash = h;
      this.stats.snapshotsInstalled++;
    }
    for (const e of rd.committed) this.observeApply(node, e);
  }

  private observeApply(node: SimNode, e: Entry): void {
    if (e.index !== node.applied + 1) fail(`node ${node.id} applied ${e.index} after ${node.applied}`);
    const known = this.committed.get(e.index);
    if (known) {
      if (known.term !== e.term || !sameBytes(known.data, e.data)) {
        fail(`node ${node.id} applied a different entry at ${e.index} (term ${e.term}, committed term ${known.term})`);
      }
    } else {
      this.committed.set(e.index, { term: e.term, data: e.data });
      this.stats.committed++;
      const cfg = configOf(e);
      if (cfg) this.configCommitted(cfg);
    }
    node.applied = e.index;
    node.hash = hashStep(node.hash, e.data);
    const h = this.committedHash.get(e.index);
    if (h === undefined) this.committedHash.set(e.index, node.hash);
    else if (h !== node.hash) fail(`node ${node.id} state machine diverged at ${e.index}`);
  }

  /** A configuration entry committed (first seen applied): count the change, schedule removed nodes' stop. */
  private configCommitted(cfg: ClusterConfig): void {
    const prev = this.committedConfig;
    this.committedConfig = cfg;
    for (const id of cfg.voters) if (!prev.voters.includes(id)) this.stats.promotions++;
    for (const id of cfg.learners) if (!isMember(prev, id)) this.stats.adds++;
    for (const n of this.nodes) {
      if (isMember(cfg, n.id)) n.joined = true;
      else if (n.joined && !n.retired && !n.stopAt) {
        this.stats.removals++;
        n.stopAt = this.now + 1 + Math.floor(this.rng() * REMOVED_STOP_STEPS);
      }
    }
  }

  /**
   * A leader won a majority of its own configuration's voters: the grants sent to it in its term by
   * voters of that configuration (itself included) must be a majority; votes of non-members never count.
   */
  private checkElectionQuorum(n: SimNode): void {
    const c = n.rt!.core;
    const voters = c.membership.config.voters;
    const granted = this.grants.get(c.term)?.get(n.id);
    const inConfig = voters.filter((v) => v === n.id || granted?.has(v));
    if (inConfig.length < majority(voters.length)) {
      fail(`node ${n.id} leads term ${c.term} with grants from ${inConfig.join(",") || "none"} of its voters ${voters.join(",")} (all grants: ${[...(granted ?? [])].join(",") || "none"})`);
    }
  }

  /**
   * A leader's commit index, when it advanced in the leader's term, is held by a majority of its own
   * configuration's voters: acknowledged to it in this term (or durable, for itself); acks of non-members never count.
   */
  private checkCommitQuorum(n: SimNode): void {
    const c = n.rt!.core;
    const seen = n.checkedCommit;
    if (seen.term === c.term && c.commit > seen.commit && c.termAt(c.commit) === c.term) {
      const voters = c.membership.config.voters;
      const holders = voters.filter((v) => (v === n.id ? n.storage.durable.lastIndex : (this.acks.get(`${c.term}:${n.id}:${v}`) ?? 0)) >= c.commit);
      if (holders.length < majority(voters.length)) {
        fail(`leader ${n.id} of term ${c.term} committed ${c.commit} held by only ${holders.join(",") || "none"} of its voters ${voters.join(",")}`);
      }
    }
    n.checkedCommit = { term: c.term, commit: c.commit };
  }

  private checkInvariants(): void {
    for (const n of this.nodes) {
      const c = n.rt?.core;
      if (!c) continue;
      this.stats.maxTerm = Math.max(this.stats.maxTerm, c.term);
      if (c.role === "leader") {
        const prev = this.leaders.get(c.term);
        if (prev !== undefined && prev !== n.id) fail(`two leaders in term ${c.term}: ${prev} and ${n.id}`);
        if (prev === undefined) {
          this.leaders.set(c.term, n.id);
          this.stats.leaderChanges++;
        }
        if (n.wasLeaderInTerm !== c.term) {
          n.wasLeaderInTerm = c.term;
          this.checkElectionQuorum(n);
          // Leader completeness: a new leader holds every committed entry.
          const snap = c.status().snapshotIndex;
          for (const [idx, e] of this.committed) {
            if (idx <= snap) continue;
            if (c.termAt(idx) !== e.term) fail(`leader ${n.id} of term ${c.term} lacks committed entry ${idx}`);
          }
        }
        this.checkCommitQuorum(n);
      }
      // Committed entries in each log are the committed history.
      for (let i = Math.max(c.firstIndex(), c.commit - 20); i <= c.commit; i++) {
        const e = c.entryAt(i);
        const k = this.committed.get(i);
        if (e && k && (e.term !== k.term || !sameBytes(e.data, k.data))) fail(`node ${n.id} holds a different committed entry at ${i}`);
      }
    }
  }

  /** Log matching: two logs with an entry of the same index and term are identical up to it. */
  checkLogMatching(): void {
    const up = this.nodes.filter((n) => n.rt);
    for (let a = 0; a < up.length; a++) {
      for (let b = a + 1; b < up.length; b++) {
        const x = up[a]!.rt!.core;
        const y = up[b]!.rt!.core;
        const lo = Math.max(x.firstIndex(), y.firstIndex());
        let hi = Math.min(x.lastIndex(), y.lastIndex());
        while (hi >= lo && x.termAt(hi) !== y.termAt(hi)) hi--;
        for (let i = hi; i >= lo; i--) {
          const ex = x.entryAt(i)!;
          const ey = y.entryAt(i)!;
          if (ex.term !== ey.term || !sameBytes(ex.data, ey.data)) fail(`log matching broken between ${up[a]!.id} and ${up[b]!.id} at ${i}`);
        }
      }
    }
  }

  // ---- clients ------------------------------------------------------------------------------

  /** A client connection that hands the reply to `onReply` (and nothing after the node is gone). */
  private conn(onReply: (res: ResponseFrame) => void): ClientConn {
    return {
      closed: false,
      send: (frame: unknown) => {
        const f = frame as ResponseFrame;
        if (f.k === "res") onReply(f);
        return true;
      },
      sendEncoded: () => true, // watch events: the simulation watches nothing
      close: () => {},
    };
  }

  private put(node: SimNode): void {
    const key = `k${Math.floor(this.rng() * KEYS)}`;
    const value = `w${this.nextWrite++}`;
    const incarnation = node.incarnation;
    node.clients!.onRequest(
      this.conn((res) => {
        if (node.incarnation !== incarnation || !res.ok) return;
        const revision = (res.result as { revision: number }).revision;
        const prev = this.ackedByRev.get(revision);
        if (prev && (prev.key !== key || prev.value !== value)) {
          fail(`revision ${revision} was acknowledged for ${prev.key}=${prev.value} and again for ${key}=${value}: an acknowledged write was lost`);
        }
        this.ackedByRev.set(revision, { key, value, revision });
        this.ackedRev.set(key, Math.max(this.ackedRev.get(key) ?? 0, revision));
        this.stats.acked++;
      }),
      { k: "req", id: this.nextReqId++, op: "write", cmd: { op: "put", key: enc(key), value: enc(value) } },
    );
  }

  private read(node: SimNode): void {
    const key = `k${Math.floor(this.rng() * KEYS)}`;
    // Every write acknowledged before the read began must be visible to it.
    const mustSee = this.ackedRev.get(key) ?? 0;
    const incarnation = node.incarnation;
    node.clients!.onRequest(
      this.conn((res) => {
        if (node.incarnation !== incarnation || !res.ok) return;
        const kv = (res.result as { kvs: { value: Uint8Array; modRevision: number }[] }).kvs[0];
        const rev = kv?.modRevision ?? 0;
        if (rev < mustSee) fail(`a read of ${key} on node ${node.id} returned revision ${rev}, but revision ${mustSee} was acknowledged before the read began`);
        const w = kv && this.ackedByRev.get(rev);
        if (w && (w.key !== key || w.value !== dec(kv.value))) fail(`a read of ${key} returned ${dec(kv.value)} at revision ${rev}, acknowledged as ${w.key}=${w.value}`);
        this.stats.readsConfirmed++;
      }),
      { k: "req", id: this.nextReqId++, op: "range", range: { key: enc(key) } },
    );
  }

  private clientTraffic(): void {
    // Clients talk to any node that believes it leads, stale leaders included.
    const leaders = this.nodes.filter((n) => n.rt?.role === "leader" && !this.paused(n));
    if (!leaders.length) return;
    const pick = () => leaders[Math.floor(this.rng() * leaders.length)]!;
    if (this.rng() < this.opt.writeRate) this.put(pick());
    if (this.rng() < this.opt.readRate) this.read(pick());
  }

  // ---- faults and time ------------------------------------------------------------------------

  private paused(n: SimNode): boolean {
    return n.pausedUntil > this.now;
  }

  private randomFaults(): void {
    const r = this.rng;
    if (r() < this.opt.partitionRate) {
      this.cut.clear();
      const kind = r();
      if (kind < 0.4) {
        const v = Math.floor(r() * this.nodes.length);
        for (const n of this.nodes) if (n.id !== v) this.cut.add(`${v}-${n.id}`).add(`${n.id}-${v}`);
      } else if (kind < 0.8) {
        const side = this.nodes.map(() => r() < 0.5);
        for (const a of this.nodes) for (const b of this.nodes) if (side[a.id] !== side[b.id]) this.cut.add(`${a.id}-${b.id}`);
      } else {
        for (const a of this.nodes) for (const b of this.nodes) if (a !== b && r() < 0.3) this.cut.add(`${a.id}-${b.id}`);
      }
    } else if (this.cut.size && r() < this.opt.partitionRate * 3) {
      this.cut.clear();
    }
    for (const n of this.nodes) {
      if (n.rt && r() < this.opt.crashRate) this.crash(n, r() < this.opt.powerLossShare);
      else if (n.rt && n.storage.queuedSyncs > 0 && r() < this.opt.crashDuringSyncRate) this.crash(n, true);
      else if (n.rt && n.storage.queuedSyncs > 0 && n.storage.truncationUnsynced && r() < this.opt.truncationCrashRate) this.crash(n, true, true);
      else if (!n.rt && !n.retired && r() < this.opt.restartRate) this.start(n);
      else if (n.rt && !this.paused(n) && r() < this.opt.pauseRate) {
        // A stop-the-world pause (GC, swapping, SIGSTOP): up to four election timeouts.
        n.pausedUntil = this.now + Math.floor(r() * 400);
        this.stats.pauses++;
      }
    }
    if (this.opt.memberChangeRate && r() < this.opt.memberChangeRate) this.changeMembership();
    if (this.opt.fsyncFailRate && r() < this.opt.fsyncFailRate) this.nodes[Math.floor(r() * this.nodes.length)]!.storage.disk.failNextFsync();
    if (this.opt.diskFullRate && r() < this.opt.diskFullRate) {
      // The disk fills up: the node stops at its next write and cannot start until space is freed.
      const n = this.nodes[Math.floor(r() * this.nodes.length)]!;
      n.storage.disk.setSpaceLimit(0);
      n.diskFullUntil = this.now + 500;
    }
    for (const n of this.nodes) {
      if (n.diskFullUntil && n.diskFullUntil <= this.now) {
        n.storage.disk.setSpaceLimit(null);
        n.diskFullUntil = 0;
      }
    }
  }

  /**
   * The leader proposes one membership change through the runtime's member request handler (the path of
   * `raftkv member add/promote/remove`); the core refuses it while another is pending or a learner lags.
   */
  private changeMembership(): void {
    const leader = this.leader();
    if (!leader || this.paused(leader)) return;
    const cfg = leader.rt!.core.membership.config;
    const choices: (() => { action: string; node: NodeId; addr?: string })[] = [];
    if (cfg.learners.length) {
      const pick = () => cfg.learners[Math.floor(this.rng() * cfg.learners.length)]!;
      if (cfg.voters.length < MAX_VOTERS) choices.push(() => ({ action: "promote", node: pick() }));
      choices.push(() => ({ action: "remove", node: pick() }));
    } else if (cfg.voters.length < MAX_VOTERS) {
      choices.push(() => {
        // A spare: running, never in a committed configuration, not in this one; else a new node, empty disk, new id.
        const spare = this.nodes.find((n) => n.rt && !n.joined && !n.retired && !isMember(cfg, n.id)) ?? this.addNode(false);
        if (!spare.rt) this.start(spare);
        const a = this.addrs[spare.id]!;
        return { action: "add", node: spare.id, addr: `${a.host}:${a.port}` };
      });
    }
    if (cfg.voters.length > MIN_VOTERS) choices.push(() => ({ action: "remove", node: cfg.voters[Math.floor(this.rng() * cfg.voters.length)]! }));
    if (!choices.length) return;
    const req = choices[Math.floor(this.rng() * choices.length)]!();
    const ignore = () => {};
    handleMemberRequest(leader.rt!, this.addrs, req, { ok: ignore, fail: ignore, notLeader: ignore });
  }

  /** Stop, for good, the removed nodes whose time has come. */
  private stopRemoved(): void {
    for (const n of this.nodes) {
      if (n.stopAt && n.stopAt <= this.now && !n.retired) {
        n.retired = true;
        n.rt = null;
        n.clock = null;
        n.clients = null;
      }
    }
  }

  /** Complete the async syncs whose simulated time has come, in order. */
  private completeSyncs(n: SimNode): void {
    const s = n.storage;
    while (n.syncDue.length < s.queuedSyncs) n.syncDue.push(this.now + 1 + Math.floor(this.rng() * this.opt.maxSyncDelay));
    while (n.syncDue.length && n.syncDue[0]! <= this.now) {
      n.syncDue.shift();
      s.disk.completeSyncs(1);
    }
  }

  private runDeferred(): void {
    for (let round = 0; round < 100; round++) {
      let any = false;
      for (const n of this.nodes) {
        const c = n.clock;
        if (!c || this.paused(n)) continue;
        while (c.deferred.length && n.clock === c) {
          any = true;
          c.deferred.shift()!();
        }
      }
      if (!any) return;
    }
    fail("a node never stops scheduling work");
  }

  async step(faults = true): Promise<void> {
    this.now++;
    if (faults) {
      this.randomFaults();
      this.clientTraffic();
    }
    this.stopRemoved();
    for (const n of this.nodes) if (n.rt && !this.paused(n)) this.completeSyncs(n);
    // Deliver due messages in random order; a paused node gets its messages when it resumes.
    const due: InFlight[] = [];
    const later: InFlight[] = [];
    for (const f of this.net) {
      const target = f.to >= 0 ? this.nodes[f.to]! : null;
      (f.deliverAt <= this.now && !(target && this.paused(target)) ? due : later).push(f);
    }
    this.net = later;
    for (let i = due.length - 1; i > 0; i--) {
      const j = Math.floor(this.rng() * (i + 1));
      [due[i], due[j]] = [due[j]!, due[i]!];
    }
    for (const f of due) this.deliver(f);
    for (const n of this.nodes) if (n.clock && !this.paused(n)) n.clock.advance();
    this.runDeferred();
    // Let promise continuations (sync completions, snapshot writes and transfers) run, then their work.
    for (let i = 0; i < 16; i++) await null;
    this.runDeferred();
    if (this.violation) throw this.violation;
    this.checkInvariants();
    if (this.now % 25 === 0) this.checkLogMatching();
  }

  async run(): Promise<SimStats> {
    for (let i = 0; i < this.opt.steps; i++) await this.step(true);
    return this.stats;
  }

  /** Heal everything and require convergence: one leader, every node applied the same, nothing acknowledged lost. */
  async healAndConverge(maxSteps = 6000): Promise<void> {
    this.cut.clear();
    for (const n of this.nodes) {
      n.pausedUntil = 0;
      n.diskFullUntil = 0;
      n.storage.disk.setSpaceLimit(null);
    }
    this.opt.lossRate = 0;
    this.opt.dupRate = 0;
    let markerAt = -1000;
    for (let i = 0; i < maxSteps; i++) {
      // A node that stopped itself (an fsync failure injected before the heal) is restarted.
      for (const n of this.nodes) if (!n.rt && !n.retired) this.start(n);
      await this.step(false);
      const leader = this.leader();
      if (!leader) continue;
      // Keep proposing until an entry of the current leader commits everywhere.
      if (this.now - markerAt > 200) {
        markerAt = this.now;
        this.put(leader);
      }
      const target = leader.rt!.core.commit;
      if (leader.rt!.core.termAt(target) !== leader.rt!.core.term) continue;
      // Every member of the leader's configuration (spares outside it, and removed nodes, do not count).
      const cfg = leader.rt!.core.membership.config;
      const members = this.nodes.filter((n) => isMember(cfg, n.id));
      if (members.every((n) => n.rt && n.applied === target && n.rt.leader === leader.id)) {
        this.checkLogMatching();
        this.checkNoAckedWriteLost(members);
        return;
      }
    }
    const view = this.nodes.map((n) => (n.retired ? `${n.id}:removed` : n.rt ? `${n.id}:${n.rt.role}/t${n.rt.core.term}/c${n.rt.core.commit}/a${n.applied}` : `${n.id}:down`));
    const cfg = this.leader()?.rt!.core.membership.config;
    fail(`cluster did not converge after healing: ${view.join(" ")}${cfg ? ` (leader's configuration: voters ${cfg.voters.join(",")}, learners ${cfg.learners.join(",") || "-"})` : ""}`);
  }

  /** Every node's state holds, for each key, the latest acknowledged write or a later one. */
  private checkNoAckedWriteLost(members: SimNode[]): void {
    for (const n of members) {
      for (const [key, rev] of this.ackedRev) {
        const kv = n.rt!.kv.range({ key: enc(key) }).kvs[0];
        const got = kv?.modRevision ?? 0;
        if (got < rev) fail(`node ${n.id} holds ${key} at revision ${got}; revision ${rev} was acknowledged: a write was lost`);
        const w = this.ackedByRev.get(got);
        if (w && w.value !== dec(kv!.value)) fail(`node ${n.id} holds ${key}=${dec(kv!.value)} at revision ${got}, acknowledged as ${w.value}`);
      }
    }
  }
}
