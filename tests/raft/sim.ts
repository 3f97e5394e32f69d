// A deterministic simulation of a Raft cluster in one process. Every run is a pure function of its
// seed: message loss, duplication, reordering and delay, partitions, crashes that lose whatever was
// not yet on disk, restarts from disk, snapshots and compaction. Safety checks run after every step.

import { RaftCore, type InitialState } from "../../src/raft/core";
import { NONE, type Entry, type HardState, type Message, type NodeId, type Ready, type Snapshot } from "../../src/raft/types";

import { mulberry32 } from "../rng";

export { mulberry32 };

export class SafetyViolation extends Error {}

function fail(msg: string): never {
  throw new SafetyViolation(msg);
}

function hashStep(h: number, data: Uint8Array): number {
  let x = Math.imul(h ^ data.length, 0x01000193) >>> 0;
  for (let i = 0; i < data.length; i++) x = Math.imul(x ^ data[i]!, 0x01000193) >>> 0;
  return x;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

interface Disk {
  hardState: HardState;
  entries: Entry[];
  snapshot: Snapshot | null;
}

/** The simulated state machine: how many entries applied and a rolling hash over their data. */
interface Machine {
  applied: number;
  hash: number;
}

function encodeMachine(m: Machine): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, m.applied);
  v.setUint32(4, m.hash);
  return b;
}

function decodeMachine(b: Uint8Array): Machine {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { applied: v.getUint32(0), hash: v.getUint32(4) };
}

interface SimNode {
  id: NodeId;
  core: RaftCore | null; // null while crashed
  disk: Disk;
  machine: Machine;
  wasLeaderInTerm: number;
}

interface InFlight {
  msg: Message;
  deliverAt: number;
}

export interface SimOptions {
  seed: number;
  nodes: number;
  steps: number;
  lossRate?: number;
  dupRate?: number;
  maxDelay?: number;
  partitionRate?: number;
  crashRate?: number;
  /** Probability that a crash happens in the middle of persisting a Ready (part of it lost). */
  tornCrash?: boolean;
  proposeRate?: number;
  readRate?: number;
  snapshotEvery?: number; // 0: never compact
}

export interface SimStats {
  committed: number;
  acked: number;
  readsConfirmed: number;
  leaderChanges: number;
  crashes: number;
  snapshotsInstalled: number;
  maxTerm: number;
}

const TICK = 10; // time units per tick

export class Sim {
  readonly rng: () => number;
  readonly nodes: SimNode[] = [];
  private net: InFlight[] = [];
  private now = 0;
  /** cut.has("a-b"): messages from a to b are dropped. */
  private cut = new Set<string>();
  private opt: Required<SimOptions>;

  // Global knowledge for the safety checks.
  private committed = new Map<number, { term: number; data: Uint8Array }>();
  /** Hash of the state machine after applying committed entries 1..i. */
  private committedHash = new Map<number, number>([[0, 0]]);
  private leaders = new Map<number, NodeId>();
  private proposals = new Map<string, { node: NodeId; term: number; index: number }>();
  private nextProposal = 1;
  private ackedMaxIndex = 0;
  private pendingReads = new Map<number, { node: NodeId; minIndex: number }>();
  private nextRead = 1;
  readonly stats: SimStats = { committed: 0, acked: 0, readsConfirmed: 0, leaderChanges: 0, crashes: 0, snapshotsInstalled: 0, maxTerm: 0 };

  constructor(opt: SimOptions) {
    this.opt = {
      lossRate: 0.05,
      dupRate: 0.02,
      maxDelay: 30,
      partitionRate: 0.002,
      crashRate: 0.001,
      tornCrash: true,
      proposeRate: 0.1,
      readRate: 0.03,
      snapshotEvery: 0,
      ...opt,
    };
    this.rng = mulberry32(opt.seed);
    for (let id = 0; id < opt.nodes; id++) {
      const node: SimNode = {
        id,
        core: null,
        disk: { hardState: { term: 0, vote: NONE, commit: 0 }, entries: [], snapshot: null },
        machine: { applied: 0, hash: 0 },
        wasLeaderInTerm: 0,
      };
      this.nodes.push(node);
    }
    for (const node of this.nodes) this.start(node);
  }

  private voters(): NodeId[] {
    return this.nodes.map((n) => n.id);
  }

  private start(node: SimNode): void {
    const d = node.disk;
    const init: InitialState = {
      hardState: { ...d.hardState },
      entries: d.entries.slice(),
      snapshot: d.snapshot ? { index: d.snapshot.index, term: d.snapshot.term } : null,
    };
    node.machine = d.snapshot ? decodeMachine(d.snapshot.data) : { applied: 0, hash: 0 };
    const nodeRng = mulberry32(Math.floor(this.rng() * 2 ** 32));
    node.core = new RaftCore(
      { id: node.id, voters: this.voters(), electionTicks: 10, heartbeatTicks: 1, rng: nodeRng, maxInflight: 8, maxEntriesPerAppend: 16 },
      init,
    );
  }

  private crash(node: SimNode): void {
    node.core = null;
    this.stats.crashes++;
    for (const [ctx, r] of this.pendingReads) if (r.node === node.id) this.pendingReads.delete(ctx);
  }

  leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes) {
      if (n.core?.role === "leader" && (!best || n.core.term > best.core!.term)) best = n;
    }
    return best;
  }

  private send(msg: Message): void {
    if (this.rng() < this.opt.lossRate) return;
    const deliverAt = this.now + 1 + Math.floor(this.rng() * this.opt.maxDelay);
    this.net.push({ msg, deliverAt });
    if (this.rng() < this.opt.dupRate) {
      this.net.push({ msg, deliverAt: deliverAt + Math.floor(this.rng() * this.opt.maxDelay) });
    }
  }

  /** Process every Ready of a node, persisting before sending, as the real runtime does. */
  private drain(node: SimNode, allowTornCrash: boolean): void {
    for (let guard = 0; node.core && node.core.hasReady(); guard++) {
      if (guard > 1000) fail(`node ${node.id} never stops producing Ready batches`);
      const core = node.core;
      const rd = core.ready();
      // As the runtime does: a leader whose term and vote are already on disk sends its appends
      // before writing its own log, in parallel with its followers.
      const d = node.disk.hardState;
      const sendFirst = core.role === "leader" && !rd.snapshot && (!rd.hardState || (rd.hardState.term === d.term && rd.hardState.vote === d.vote));
      if (sendFirst) for (const m of rd.messages) this.send(m.type === "snap" ? this.attachSnapshot(node, m) : m);
      if (allowTornCrash && this.opt.tornCrash && this.rng() < this.opt.crashRate * 5 && (rd.entries.length || rd.hardState)) {
        // Crash in the middle of the write: an arbitrary prefix of the batch reached the disk,
        // nothing else was sent.
        this.persist(node, rd, Math.floor(this.rng() * (rd.entries.length + 2)));
        this.crash(node);
        return;
      }
      this.persist(node, rd, Infinity);
      this.checkAcksAreDurable(node, rd);
      if (!sendFirst) for (const m of rd.messages) this.send(m.type === "snap" ? this.attachSnapshot(node, m) : m);
      this.apply(node, rd);
      core.advance(rd);
      this.maybeSnapshot(node);
    }
  }

  /** Persist the snapshot, hard state, then the first `limit` entries (limit < all: a torn write). */
  private persist(node: SimNode, rd: Ready, limit: number): void {
    const d = node.disk;
    if (rd.snapshot) {
      d.snapshot = { ...rd.snapshot };
      d.entries = [];
      this.stats.snapshotsInstalled++;
    }
    if (limit === 0) return;
    // The runtime does not fsync a batch that only moves the commit index: it may be lost.
    const commitOnly = rd.hardState && !rd.entries.length && !rd.snapshot && rd.hardState.term === d.hardState.term && rd.hardState.vote === d.hardState.vote;
    if (rd.hardState && !(commitOnly && this.rng() < 0.5)) d.hardState = { ...rd.hardState };
    const n = Math.min(rd.entries.length, limit - 1);
    if (n > 0) {
      const first = rd.entries[0]!.index;
      const base = d.snapshot?.index ?? 0;
      d.entries.length = Math.max(0, Math.min(d.entries.length, first - base - 1));
      for (let i = 0; i < n; i++) d.entries.push(rd.entries[i]!);
      for (let i = 0; i < d.entries.length; i++) {
        if (d.entries[i]!.index !== base + 1 + i) fail(`node ${node.id}: disk log not contiguous at ${d.entries[i]!.index}`);
      }
    }
  }

  /** A vote is granted and an append acknowledged only once what they depend on is on disk. */
  private checkAcksAreDurable(node: SimNode, rd: Ready): void {
    const d = node.disk;
    for (const m of rd.messages) {
      if (m.type === "voteResp" && m.granted && !m.preVote) {
        if (d.hardState.term !== m.term || d.hardState.vote !== m.to) {
          fail(`node ${node.id} granted a vote to ${m.to} in term ${m.term} before persisting it`);
        }
      }
      if (m.type === "appResp" && m.success) {
        const base = d.snapshot?.index ?? 0;
        const last = base + d.entries.length;
        if (m.matchIndex > last) fail(`node ${node.id} acknowledged index ${m.matchIndex} but has only ${last} on disk`);
        if (d.hardState.term < m.term) fail(`node ${node.id} answered in term ${m.term} before persisting it`);
      }
    }
  }

  private apply(node: SimNode, rd: Ready): void {
    if (rd.snapshot) {
      const m = decodeMachine(rd.snapshot.data);
      const expect = this.committedHash.get(rd.snapshot.index);
      if (expect !== undefined && expect !== m.hash) fail(`node ${node.id} installed a snapshot at ${rd.snapshot.index} that differs from the committed history`);
      node.machine = m;
    }
    const core = node.core!;
    for (const e of rd.committed) {
      if (e.index !== node.machine.applied + 1) fail(`node ${node.id} applied ${e.index} after ${node.machine.applied}`);
      const known = this.committed.get(e.index);
      if (known) {
        if (known.term !== e.term || !sameBytes(known.data, e.data)) {
          fail(`node ${node.id} applied a different entry at ${e.index} (term ${e.term} vs committed term ${known.term})`);
        }
      } else {
        this.committed.set(e.index, { term: e.term, data: e.data });
        this.stats.committed++;
      }
      node.machine.applied = e.index;
      node.machine.hash = hashStep(node.machine.hash, e.data);
      const h = this.committedHash.get(e.index);
      if (h === undefined) this.committedHash.set(e.index, node.machine.hash);
      else if (h !== node.machine.hash) fail(`node ${node.id} state machine diverged at ${e.index}`);
      if (e.data.length && core.role === "leader") {
        const key = new TextDecoder().decode(e.data);
        const p = this.proposals.get(key);
        if (p && p.node === node.id && p.term === e.term && p.index === e.index) {
          this.proposals.delete(key);
          this.stats.acked++;
          this.ackedMaxIndex = Math.max(this.ackedMaxIndex, e.index);
        }
      }
    }
    for (const rs of rd.readStates) {
      const r = this.pendingReads.get(rs.ctx);
      if (!r) continue;
      this.pendingReads.delete(rs.ctx);
      // A linearizable read must observe every write acknowledged before it began.
      if (rs.index < r.minIndex) fail(`read ${rs.ctx} on node ${node.id} got index ${rs.index} but a write at ${r.minIndex} was acknowledged before it started`);
      this.stats.readsConfirmed++;
    }
    for (const rf of rd.readFailures) this.pendingReads.delete(rf.ctx);
  }

  private maybeSnapshot(node: SimNode): void {
    const every = this.opt.snapshotEvery;
    if (!every || !node.core) return;
    const base = node.disk.snapshot?.index ?? 0;
    const applied = node.machine.applied;
    if (applied - base < every) return;
    const term = node.core.termAt(applied)!;
    node.disk.snapshot = { index: applied, term, data: encodeMachine(node.machine) };
    node.disk.entries = node.disk.entries.filter((e) => e.index > applied);
    node.core.compact(applied);
  }

  private checkInvariants(): void {
    for (const n of this.nodes) {
      const c = n.core;
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
          // Leader completeness: a new leader holds every committed entry.
          const snap = c.status().snapshotIndex;
          for (const [idx, e] of this.committed) {
            if (idx <= snap) continue;
            const t = c.termAt(idx);
            if (t !== e.term) fail(`leader ${n.id} of term ${c.term} lacks committed entry ${idx}`);
          }
        }
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
    const up = this.nodes.filter((n) => n.core);
    for (let a = 0; a < up.length; a++) {
      for (let b = a + 1; b < up.length; b++) {
        const x = up[a]!.core!;
        const y = up[b]!.core!;
        const lo = Math.max(x.firstIndex(), y.firstIndex());
        let hi = Math.min(x.lastIndex(), y.lastIndex());
        while (hi >= lo && x.termAt(hi) !== y.termAt(hi)) hi--;
        for (let i = hi; i >= lo; i--) {
          const ex = x.entryAt(i)!;
          const ey = y.entryAt(i)!;
          if (ex.term !== ey.term || !sameBytes(ex.data, ey.data)) {
            fail(`log matching broken between ${up[a]!.id} and ${up[b]!.id} at ${i} (agree at ${hi})`);
          }
        }
      }
    }
  }

  private randomFaults(): void {
    const r = this.rng;
    if (r() < this.opt.partitionRate) {
      this.cut.clear();
      const kind = r();
      if (kind < 0.4) {
        // isolate one node
        const v = Math.floor(r() * this.nodes.length);
        for (const n of this.nodes) if (n.id !== v) this.cut.add(`${v}-${n.id}`).add(`${n.id}-${v}`);
      } else if (kind < 0.8) {
        // split into two random groups
        const side = this.nodes.map(() => r() < 0.5);
        for (const a of this.nodes) for (const b of this.nodes) if (side[a.id] !== side[b.id]) this.cut.add(`${a.id}-${b.id}`);
      } else {
        // one-way cuts
        for (const a of this.nodes) for (const b of this.nodes) if (a !== b && r() < 0.3) this.cut.add(`${a.id}-${b.id}`);
      }
    } else if (this.cut.size && r() < this.opt.partitionRate * 3) {
      this.cut.clear();
    }
    for (const n of this.nodes) {
      if (n.core && r() < this.opt.crashRate) this.crash(n);
      else if (!n.core && r() < this.opt.crashRate * 20) this.start(n);
    }
  }

  private clientTraffic(): void {
    const leader = this.leader();
    if (!leader) return;
    const core = leader.core!;
    if (this.rng() < this.opt.proposeRate) {
      const key = `p${this.nextProposal++}`;
      const at = core.propose(new TextEncoder().encode(key));
      if (at) this.proposals.set(key, { node: leader.id, ...at });
    }
    if (this.rng() < this.opt.readRate) {
      const ctx = this.nextRead++;
      if (core.readIndex(ctx)) this.pendingReads.set(ctx, { node: leader.id, minIndex: this.ackedMaxIndex });
    }
  }

  step(faults = true): void {
    this.now++;
    if (faults) {
      this.randomFaults();
      this.clientTraffic();
    }
    // Deliver due messages in random order (reordering), skipping cut links and crashed nodes.
    const due: InFlight[] = [];
    const later: InFlight[] = [];
    for (const f of this.net) (f.deliverAt <= this.now ? due : later).push(f);
    this.net = later;
    for (let i = due.length - 1; i > 0; i--) {
      const j = Math.floor(this.rng() * (i + 1));
      [due[i], due[j]] = [due[j]!, due[i]!];
    }
    for (const { msg } of due) {
      const to = this.nodes[msg.to]!;
      if (!to.core || this.cut.has(`${msg.from}-${msg.to}`)) continue;
      to.core.step(msg);
      this.drain(to, faults);
    }
    if (this.now % TICK === 0) {
      for (const n of this.nodes) {
        if (!n.core) continue;
        n.core.tick();
        this.drain(n, faults);
      }
    }
    for (const n of this.nodes) this.drain(n, faults);
    this.checkInvariants();
    if (this.now % 25 === 0) this.checkLogMatching();
  }

  /** The runtime attaches the sender's snapshot bytes to a snapshot message as it sends it. */
  private attachSnapshot(sender: SimNode, m: Message): Message {
    if (m.type !== "snap") return m;
    const s = sender.disk.snapshot;
    if (!s || s.index !== m.snapshot.index) fail(`node ${sender.id} sent snapshot ${m.snapshot.index} but holds ${s?.index}`);
    return { ...m, snapshot: { ...s } };
  }

  run(): SimStats {
    for (let i = 0; i < this.opt.steps; i++) this.step(true);
    return this.stats;
  }

  /** Heal everything and check that the cluster converges: one leader, everyone applied the same. */
  healAndConverge(maxSteps = 4000): void {
    this.cut.clear();
    for (const n of this.nodes) if (!n.core) this.start(n);
    const savedLoss = this.opt.lossRate;
    this.opt.lossRate = 0;
    this.opt.dupRate = 0;
    let marker: string | undefined;
    for (let i = 0; i < maxSteps; i++) {
      this.step(false);
      const leader = this.leader();
      if (!leader) continue;
      if (!marker) {
        marker = `final${this.nextProposal++}`;
        const at = leader.core!.propose(new TextEncoder().encode(marker));
        if (at) this.proposals.set(marker, { node: leader.id, ...at });
        else marker = undefined;
        continue;
      }
      const pending = this.proposals.get(marker);
      if (pending) {
        // Re-propose if the leader that took it has been replaced: it may never commit.
        if (pending.node !== leader.id || pending.term !== leader.core!.term) marker = undefined;
        continue;
      }
      const target = leader.core!.commit;
      if (this.nodes.every((n) => n.core && n.machine.applied === target && n.core.leader === leader.id)) {
        this.opt.lossRate = savedLoss;
        this.checkLogMatching();
        return;
      }
    }
    const view = this.nodes.map((n) => (n.core ? `${n.id}:${n.core.role}/t${n.core.term}/c${n.core.commit}/a${n.machine.applied}` : `${n.id}:down`));
    fail(`cluster did not converge after healing: ${view.join(" ")}`);
  }
}
