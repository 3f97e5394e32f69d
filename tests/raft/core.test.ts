// One test per protocol rule. Each drives RaftCore by hand, so the rule it names is the only thing
// that can make it pass.
import { describe, expect, test } from "bun:test";
import { RaftCore, type InitialState, type RaftConfig } from "../../src/raft/core";
import { NONE, type Entry, type Message, type Ready } from "../../src/raft/types";
import { mulberry32 } from "../rng";
import { deliverAll, drain } from "./helpers";

const enc = (s: string) => new TextEncoder().encode(s);

function node(id: number, voters = [1, 2, 3], init?: InitialState, opts: Partial<Pick<RaftConfig, "preVote" | "checkQuorum" | "maxInflightBytes" | "maxBytesPerAppend">> = {}) {
  return new RaftCore({ id, voters, electionTicks: 10, heartbeatTicks: 1, rng: mulberry32(id), ...opts }, init);
}

function entries(...terms: number[]): Entry[] {
  return terms.map((term, i) => ({ index: i + 1, term, data: enc(`e${i + 1}`) }));
}

function init(term: number, log: Entry[], commit = 0): InitialState {
  return { hardState: { term, vote: NONE, commit }, entries: log, snapshot: null };
}

let readsSeen: { node: number; ctx: number; index: number }[] = [];

function msgs(n: RaftCore): Message[] {
  const rds = drain(n);
  for (const r of rds) for (const s of r.readStates) readsSeen.push({ node: n.id, ...s });
  return rds.flatMap((r) => r.messages);
}

/** Deliver messages among `nodes` until quiet (optionally dropping some); returns confirmed reads. */
function exchange(nodes: Map<number, RaftCore>, first: Message[], drop: (m: Message) => boolean = () => false) {
  readsSeen = [];
  deliverAll(nodes, first, drop, msgs);
  return readsSeen;
}

function cluster(ids = [1, 2, 3], opts = {}) {
  const nodes = new Map(ids.map((id) => [id, node(id, ids, undefined, opts)] as const));
  return nodes;
}

function electFirst(nodes: Map<number, RaftCore>, id: number, drop?: (m: Message) => boolean): RaftCore {
  const n = nodes.get(id)!;
  n.campaignNow();
  exchange(nodes, msgs(n), drop);
  return n;
}

describe("elections", () => {
  test("a node that times out pre-votes, then campaigns, and wins with a majority", () => {
    const nodes = cluster();
    const n1 = nodes.get(1)!;
    let out: Message[] = [];
    for (let i = 0; i < 20 && out.length === 0; i++) {
      n1.tick();
      out = msgs(n1);
    }
    expect(n1.role).toBe("precandidate");
    expect(n1.term).toBe(0); // pre-vote does not raise the term
    expect(out.every((m) => m.type === "vote" && m.preVote && m.term === 1)).toBe(true);
    exchange(nodes, out);
    expect(n1.role).toBe("leader");
    expect(n1.term).toBe(1);
    expect(nodes.get(2)!.leader).toBe(1);
    expect(nodes.get(3)!.leader).toBe(1);
  });

  test("a new leader appends a no-op of its own term", () => {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1);
    const last = n1.entryAt(n1.lastIndex())!;
    expect(last.term).toBe(1);
    expect(last.data.length).toBe(0);
    expect(n1.commit).toBe(1);
  });

  test("a node grants one vote per term", () => {
    const n = node(1);
    n.step({ type: "vote", from: 2, to: 1, term: 1, preVote: false, lastLogIndex: 0, lastLogTerm: 0 });
    n.step({ type: "vote", from: 3, to: 1, term: 1, preVote: false, lastLogIndex: 0, lastLogTerm: 0 });
    const resps = msgs(n).filter((m) => m.type === "voteResp");
    expect(resps.map((m) => [m.to, m.type === "voteResp" && m.granted])).toEqual([
      [2, true],
      [3, false],
    ]);
  });

  test("a node refuses a candidate whose log is behind its own", () => {
    const n = node(1, [1, 2, 3], init(2, entries(1, 2)));
    n.step({ type: "vote", from: 2, to: 1, term: 3, preVote: false, lastLogIndex: 5, lastLogTerm: 1 });
    n.step({ type: "vote", from: 3, to: 1, term: 4, preVote: false, lastLogIndex: 1, lastLogTerm: 2 });
    const resps = msgs(n).filter((m) => m.type === "voteResp");
    expect(resps.every((m) => m.type === "voteResp" && !m.granted)).toBe(true);
    expect(n.vote).toBe(NONE);
  });

  test("pre-vote: a node cut off from the cluster does not raise its term", () => {
    const n = node(1);
    for (let i = 0; i < 200; i++) {
      n.tick();
      drain(n); // its messages go nowhere
    }
    expect(n.term).toBe(0);
    const plain = node(1, [1, 2, 3], undefined, { preVote: false });
    for (let i = 0; i < 200; i++) {
      plain.tick();
      drain(plain);
    }
    expect(plain.term).toBeGreaterThan(0); // what pre-vote prevents
  });

  test("leader lease: a follower hearing from its leader ignores a higher-term campaign", () => {
    const nodes = cluster();
    electFirst(nodes, 1);
    const n2 = nodes.get(2)!;
    const termBefore = n2.term;
    n2.step({ type: "vote", from: 3, to: 2, term: termBefore + 5, preVote: false, lastLogIndex: 100, lastLogTerm: 100 });
    expect(n2.term).toBe(termBefore);
    expect(n2.leader).toBe(1);
    expect(msgs(n2).some((m) => m.type === "voteResp")).toBe(false);
  });

  test("check-quorum: a leader that cannot reach a majority steps down", () => {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1);
    for (let i = 0; i < 25; i++) {
      n1.tick();
      drain(n1); // nobody answers
    }
    expect(n1.role).toBe("follower");
    expect(n1.leader).toBe(NONE);
  });

  test("any message with a higher term turns a leader into a follower of that term", () => {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1);
    n1.step({ type: "appResp", from: 2, to: 1, term: 7, success: false, matchIndex: 0, hintIndex: 0, hintTerm: 0, readRound: 0 });
    expect(n1.role).toBe("follower");
    expect(n1.term).toBe(7);
  });
});

describe("replication", () => {
  test("an entry commits once a majority holds it and is then applied", () => {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1);
    const at = n1.propose(enc("x"))!;
    const rds = drain(n1);
    // The leader persists its own entry in the same Ready that sends it.
    expect(rds[0]!.entries.map((e) => e.index)).toContain(at.index);
    exchange(nodes, rds.flatMap((r) => r.messages), (m) => m.to === 3 || m.from === 3);
    expect(n1.commit).toBe(at.index);
    expect(n1.applied).toBe(at.index);
  });

  test("figure 8: a leader does not commit an earlier term's entry by counting replicas", () => {
    // Node 1 holds entry 2 from term 2 (never committed) and becomes leader in term 3.
    const n1 = node(1, [1, 2, 3], init(2, entries(1, 2), 1));
    n1.campaignNow();
    drain(n1);
    n1.step({ type: "voteResp", from: 2, to: 1, term: 3, preVote: true, granted: true });
    drain(n1);
    n1.step({ type: "voteResp", from: 2, to: 1, term: 3, preVote: false, granted: true });
    expect(n1.role).toBe("leader");
    drain(n1);
    // Node 2 reports it holds index 2 (the old-term entry) but not yet the new no-op at 3.
    n1.step({ type: "appResp", from: 2, to: 1, term: 3, success: true, matchIndex: 2, hintIndex: 0, hintTerm: 0, readRound: 0 });
    drain(n1);
    expect(n1.commit).toBe(1); // a majority holds entry 2, but it is of term 2: not committed
    n1.step({ type: "appResp", from: 2, to: 1, term: 3, success: true, matchIndex: 3, hintIndex: 0, hintTerm: 0, readRound: 0 });
    drain(n1);
    expect(n1.commit).toBe(3); // the no-op of term 3 commits, and entry 2 with it
  });

  test("a follower rejects a mismatched append with a hint that skips a whole term", () => {
    const f = node(2, [1, 2, 3], init(2, entries(1, 1, 1, 2, 2, 2, 2)));
    f.step({ type: "app", from: 1, to: 2, term: 3, prevIndex: 7, prevTerm: 3, entries: [], commit: 0, readRound: 0 });
    const r = msgs(f).find((m) => m.type === "appResp")!;
    expect(r).toMatchObject({ success: false, matchIndex: 7, hintTerm: 2, hintIndex: 4 });
  });

  test("the leader backs up a term at a time, not an entry at a time", () => {
    // Follower 2 has 40 entries of term 2 that the leader never had; the leader has term 3 from 2 on.
    const followerLog = entries(1, ...Array(40).fill(2));
    const leaderLog = entries(1, ...Array(10).fill(3));
    const n1 = node(1, [1, 2, 3], init(3, leaderLog, 1));
    const n2 = node(2, [1, 2, 3], init(3, followerLog, 1));
    const n3 = node(3, [1, 2, 3], init(3, leaderLog, 1));
    const nodes = new Map([
      [1, n1],
      [2, n2],
      [3, n3],
    ]);
    n1.campaignNow();
    let appendsTo2 = 0;
    exchange(nodes, msgs(n1), (m) => {
      if (m.type === "app" && m.to === 2) appendsTo2++;
      return false;
    });
    expect(n2.lastIndex()).toBe(n1.lastIndex());
    expect(n2.termAt(2)).toBe(3);
    expect(appendsTo2).toBeLessThanOrEqual(4);
  });

  test("a late, shorter append never truncates entries a newer append delivered", () => {
    const f = node(2);
    const log = entries(1, 1, 1, 1, 1);
    f.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: log, commit: 0, readRound: 0 });
    drain(f);
    f.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: log.slice(0, 3), commit: 0, readRound: 0 });
    const rds = drain(f);
    expect(f.lastIndex()).toBe(5);
    expect(rds.flatMap((r) => r.entries)).toEqual([]); // nothing rewritten on disk either
  });

  test("a follower's commit is min(leader commit, index of the last new entry of the append)", () => {
    // Entries 4 and 5 are of an old term and may conflict with the leader's log: the append covers
    // only up to 3, so the leader's commit of 5 must not commit them.
    const f = node(2, [1, 2, 3], init(1, entries(1, 1, 1, 1, 1)));
    f.step({ type: "app", from: 1, to: 2, term: 2, prevIndex: 2, prevTerm: 1, entries: entries(1, 1, 1).slice(2), commit: 5, readRound: 0 });
    drain(f);
    expect(f.lastIndex()).toBe(5);
    expect(f.commit).toBe(3);
    // A heartbeat (no entries) commits only up to its previous entry, which it proved matches.
    f.step({ type: "app", from: 1, to: 2, term: 2, prevIndex: 4, prevTerm: 1, entries: [], commit: 5, readRound: 0 });
    drain(f);
    expect(f.commit).toBe(4);
  });

  test("stale-append filter: a late append below the commit index truncates nothing and is not refused", () => {
    // Log 1..8, commit 5. A late append of 3..6 (prevIndex 2) overlaps the commit index: nothing is cut.
    const f = node(2, [1, 2, 3], init(1, entries(1, 1, 1, 1, 1, 1, 1, 1), 5));
    f.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 2, prevTerm: 1, entries: entries(1, 1, 1, 1, 1, 1).slice(2), commit: 5, readRound: 0 });
    let rds = drain(f);
    expect(f.lastIndex()).toBe(8);
    expect(rds.flatMap((r) => r.entries)).toEqual([]);
    expect(rds.flatMap((r) => r.messages)).toEqual([expect.objectContaining({ type: "appResp", success: true, matchIndex: 6 })]);
    // A follower that installed a snapshot at 10 no longer holds entry 3: a late append at prevIndex 3
    // is answered with what it has committed, not refused (which would send the leader probing back).
    const g = node(2, [1, 2, 3], { hardState: { term: 1, vote: NONE, commit: 10 }, entries: [], snapshot: { index: 10, term: 1 } });
    g.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 3, prevTerm: 1, entries: entries(1, 1, 1, 1, 1).slice(3), commit: 4, readRound: 0 });
    rds = drain(g);
    expect(g.lastIndex()).toBe(10);
    expect(rds.flatMap((r) => r.entries)).toEqual([]);
    expect(rds.flatMap((r) => r.messages)).toEqual([expect.objectContaining({ type: "appResp", success: true, matchIndex: 10 })]);
  });

  test("a real conflict truncates the follower's suffix and the Ready says to rewrite from there", () => {
    const f = node(2, [1, 2, 3], init(1, entries(1, 1, 1, 1, 1)));
    const fresh: Entry[] = [
      { index: 3, term: 2, data: enc("n3") },
      { index: 4, term: 2, data: enc("n4") },
    ];
    f.step({ type: "app", from: 1, to: 2, term: 2, prevIndex: 2, prevTerm: 1, entries: fresh, commit: 0, readRound: 0 });
    const rds = drain(f);
    expect(f.lastIndex()).toBe(4);
    expect(rds[0]!.entries.map((e) => [e.index, e.term])).toEqual([
      [3, 2],
      [4, 2],
    ]);
  });

  test("persist before send: a vote and an acknowledgement travel in the Ready that persists them", () => {
    const f = node(2);
    f.step({ type: "vote", from: 1, to: 2, term: 1, preVote: false, lastLogIndex: 0, lastLogTerm: 0 });
    const rd = f.ready();
    expect(rd.hardState).toEqual({ term: 1, vote: 1, commit: 0 });
    expect(rd.messages.some((m) => m.type === "voteResp" && m.granted)).toBe(true);
    f.advance(rd);
    f.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: entries(1), commit: 0, readRound: 0 });
    const rd2 = f.ready();
    expect(rd2.entries.map((e) => e.index)).toEqual([1]);
    expect(rd2.messages.find((m) => m.type === "appResp")).toMatchObject({ success: true, matchIndex: 1 });
    f.advance(rd2);
  });

  test("a leader counts its own entries only once they are on its disk", () => {
    const n = node(1, [1]);
    n.campaignNow();
    const rd = n.ready();
    expect(n.role).toBe("leader");
    expect(n.commit).toBe(0); // the no-op is not yet persisted
    n.advance(rd);
    expect(n.commit).toBe(1);
  });

  test("asynchronous writes: inputs between ready() and reportPersisted(); each Ready hands out only what is new", () => {
    const f = node(2);
    f.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: entries(1, 1), commit: 0, readRound: 0 });
    const rd1 = f.ready();
    expect(rd1.entries.map((e) => e.index)).toEqual([1, 2]);
    f.reportApplied(rd1);
    // rd1 is not durable yet; the next append is taken and handed out on its own.
    f.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 2, prevTerm: 1, entries: [{ index: 3, term: 1, data: enc("e3") }], commit: 2, readRound: 0 });
    const rd2 = f.ready();
    expect(rd2.entries.map((e) => e.index)).toEqual([3]);
    expect(rd2.committed.map((e) => e.index)).toEqual([1, 2]);
    expect(rd2.hardState).toEqual({ term: 1, vote: NONE, commit: 2 });
    f.reportApplied(rd2);
    f.reportPersisted(rd1);
    f.reportPersisted(rd2);
    expect(f.applied).toBe(2);
    expect(f.hasReady()).toBe(false);
  });

  test("asynchronous writes: a leader counts itself toward a commit only up to what it reported persisted", () => {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1);
    const before = n1.commit;
    n1.propose(enc("x"));
    const rd = n1.ready();
    const index = rd.entries[rd.entries.length - 1]!.index;
    n1.reportApplied(rd);
    // Only follower 2 acknowledges: with its own write still pending the leader has no majority.
    n1.step({ type: "appResp", from: 2, to: 1, term: n1.term, success: true, matchIndex: index, hintIndex: 0, hintTerm: 0, readRound: 0 });
    n1.reportApplied(n1.ready());
    expect(n1.commit).toBe(before);
    n1.reportPersisted(rd);
    expect(n1.commit).toBe(index);
  });

  test("a follower that lost its log (wiped disk) is detected by a refused heartbeat and caught up", () => {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1);
    for (let i = 0; i < 5; i++) n1.propose(enc(`v${i}`));
    exchange(nodes, msgs(n1));
    expect(nodes.get(3)!.lastIndex()).toBe(6);
    nodes.set(3, node(3)); // node 3 restarts with an empty disk
    n1.tick();
    exchange(nodes, msgs(n1));
    expect(nodes.get(3)!.lastIndex()).toBe(6);
    expect(nodes.get(3)!.commit).toBe(6);
  });

  test("flow control: a follower far behind gets at most maxInflightBytes of entries per turn, then the rest as it acknowledges", () => {
    const nodes = cluster([1, 2, 3], { maxInflightBytes: 10_000, maxBytesPerAppend: 3_000 });
    const cut = (m: Message) => m.to === 3 || m.from === 3;
    const n1 = electFirst(nodes, 1, cut);
    for (let i = 0; i < 40; i++) n1.propose(new Uint8Array(1000));
    exchange(nodes, msgs(n1), cut);
    // Node 3 is back: deliver everything, noting the entry bytes the leader sends it in any one turn.
    let worst = 0;
    n1.tick();
    let queue = msgs(n1);
    while (queue.length) {
      const next: Message[] = [];
      for (const m of queue) {
        const to = nodes.get(m.to)!;
        to.step(m);
        const out = msgs(to);
        const bytes = out.reduce((sum, x) => sum + (x.type === "app" && x.to === 3 ? x.entries.reduce((b, e) => b + e.data.length, 0) : 0), 0);
        if (to === n1) worst = Math.max(worst, bytes);
        next.push(...out);
      }
      queue = next;
    }
    expect(nodes.get(3)!.lastIndex()).toBe(n1.lastIndex());
    expect(worst).toBeGreaterThan(0);
    // The limit, overshot by at most the append that crossed it.
    expect(worst).toBeLessThanOrEqual(10_000 + 3_000);
  });

  test("a follower whose next entry was compacted away is sent a snapshot", () => {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1, (m) => m.to === 3 || m.from === 3);
    for (let i = 0; i < 5; i++) n1.propose(enc(`v${i}`));
    exchange(nodes, msgs(n1), (m) => m.to === 3 || m.from === 3);
    n1.compact(n1.applied);
    n1.tick();
    const out = msgs(n1);
    const snap = out.find((m) => m.type === "snap" && m.to === 3);
    expect(snap).toMatchObject({ type: "snap", snapshot: { index: n1.applied } });
  });
});

describe("after a snapshot was sent", () => {
  test("the leader probes from the snapshot's index and never resends it while the follower installs it", () => {
    const nodes = cluster();
    const cut = (m: Message) => m.to === 3 || m.from === 3;
    const n1 = electFirst(nodes, 1, cut);
    for (let i = 0; i < 5; i++) n1.propose(enc(`v${i}`));
    exchange(nodes, msgs(n1), cut);
    n1.compact(n1.applied);
    n1.tick();
    const snap = msgs(n1).find((m) => m.type === "snap" && m.to === 3)!;
    expect(snap).toBeDefined();
    n1.reportSnapshot(3, true);
    // The follower is busy installing: for ten election timeouts it answers nothing, while writes go on.
    const toFollower: Message[] = [];
    for (let t = 0; t < 100; t++) {
      if (t % 10 === 0) n1.propose(enc(`w${t}`));
      n1.tick();
      const out = msgs(n1);
      toFollower.push(...out.filter((m) => m.to === 3));
      exchange(nodes, out.filter((m) => !cut(m)));
    }
    expect(toFollower.filter((m) => m.type === "snap")).toEqual([]);
    // What it is sent with entries starts right after the snapshot.
    const withEntries = toFollower.filter((m) => m.type === "app" && m.entries.length > 0);
    expect(withEntries.length).toBeGreaterThan(0);
    const snapIndex = (snap as { snapshot: { index: number } }).snapshot.index;
    for (const m of withEntries) expect(m).toMatchObject({ prevIndex: snapIndex });
  });
});

describe("ReadIndex", () => {
  test("a read is confirmed only after a majority acknowledges the leader", () => {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1);
    expect(n1.readIndex(42)).toBe(true);
    const rd = n1.ready();
    n1.advance(rd);
    expect(rd.readStates).toEqual([]); // not yet: no heartbeat answered
    const beats = rd.messages.filter((m) => m.type === "app");
    expect(beats.length).toBe(2);
    nodes.get(2)!.step(beats.find((m) => m.to === 2)!);
    for (const m of msgs(nodes.get(2)!)) n1.step(m);
    const confirmed = drain(n1).flatMap((r) => r.readStates.map((s) => s.ctx));
    expect(confirmed).toEqual([42]);
  });

  test("in a 5-node cluster one acknowledgement is not a majority", () => {
    const nodes = cluster([1, 2, 3, 4, 5]);
    const n1 = electFirst(nodes, 1);
    n1.readIndex(9);
    const beats = msgs(n1).filter((m) => m.type === "app");
    const answer = (peer: number) => {
      nodes.get(peer)!.step(beats.find((m) => m.to === peer)!);
      for (const m of msgs(nodes.get(peer)!)) n1.step(m);
      return drain(n1).flatMap((r) => r.readStates.map((s) => s.ctx));
    };
    expect(answer(2)).toEqual([]);
    expect(answer(3)).toEqual([9]);
  });

  test("reads that arrive together share one heartbeat round", () => {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1);
    for (let ctx = 1; ctx <= 10; ctx++) n1.readIndex(ctx);
    const rd = n1.ready();
    n1.advance(rd);
    expect(rd.messages.filter((m) => m.type === "app").length).toBe(2);
    const reads = exchange(nodes, rd.messages);
    expect(reads.map((r) => r.ctx).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  test("a leader cut off from the majority never confirms a read, and fails it when it steps down", () => {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1);
    n1.readIndex(7);
    const got: number[] = [];
    const failed: number[] = [];
    for (let i = 0; i < 30; i++) {
      n1.tick();
      for (const rd of drain(n1)) {
        got.push(...rd.readStates.map((s) => s.ctx));
        failed.push(...rd.readFailures.map((f) => f.ctx));
      }
    }
    expect(got).toEqual([]);
    expect(failed).toEqual([7]);
  });

  test("a new leader holds reads until an entry of its term commits", () => {
    const nodes = cluster();
    const n1 = nodes.get(1)!;
    n1.campaignNow();
    // Win the election but let no append through yet.
    exchange(nodes, msgs(n1), (m) => m.type === "app");
    expect(n1.role).toBe("leader");
    expect(n1.commit).toBe(0);
    n1.readIndex(5);
    const rd = n1.ready();
    n1.advance(rd);
    expect(rd.readStates).toEqual([]);
    n1.tick();
    const states = exchange(nodes, msgs(n1)).map((r) => r.index);
    expect(n1.commit).toBeGreaterThanOrEqual(1);
    expect(states.length).toBe(1);
    expect(states[0]).toBeGreaterThanOrEqual(1); // at least the no-op's index, never the stale 0
  });
});

describe("long snapshot transfers (issue 8, bug 6)", () => {
  /** Leader 1 with follower 3 in snapshot state: 3 acknowledged index 1, then fell behind a compaction. */
  function leaderSendingSnapshotTo3() {
    const nodes = cluster();
    const n1 = electFirst(nodes, 1);
    expect(n1.status().progress![3]!.match).toBe(1);
    for (let i = 0; i < 5; i++) n1.propose(enc(`v${i}`));
    exchange(nodes, msgs(n1), (m) => m.to === 3 || m.from === 3);
    n1.compact(n1.applied);
    // The appends to 3 count as lost after a while; the leader then finds 3's next entry compacted.
    let snap: Message | undefined;
    for (let i = 0; i < 20 && !snap; i++) {
      n1.tick();
      snap = msgs(n1).find((m) => m.type === "snap" && m.to === 3);
    }
    expect(snap).toBeDefined(); // the transfer starts (and, in these tests, never finishes)
    return { nodes, n1 };
  }

  test("a follower being sent a snapshot still gets heartbeats, and check-quorum counts it", () => {
    const { nodes, n1 } = leaderSendingSnapshotTo3();
    const term = n1.term;
    // Node 2 goes away: the leader keeps its majority only through node 3, which is mid-transfer.
    for (let i = 0; i < 50; i++) {
      n1.tick();
      exchange(nodes, msgs(n1), (m) => m.to === 2 || m.from === 2 || m.type === "snap");
    }
    expect(n1.role).toBe("leader");
    expect(n1.term).toBe(term);
    expect(nodes.get(3)!.leader).toBe(1);
  });

  test("a read is confirmed through a follower that is being sent a snapshot", () => {
    const { nodes, n1 } = leaderSendingSnapshotTo3();
    n1.readIndex(11);
    const reads = exchange(nodes, msgs(n1), (m) => m.to === 2 || m.from === 2 || m.type === "snap");
    expect(reads.map((r) => r.ctx)).toEqual([11]);
  });

  test("snapshot chunks count as contact from the leader: the follower does not campaign", () => {
    const f = node(3);
    f.step({ type: "app", from: 1, to: 3, term: 2, prevIndex: 0, prevTerm: 0, entries: [], commit: 0, readRound: 0 });
    drain(f);
    const sent: Message[] = [];
    for (let i = 0; i < 50; i++) {
      f.tick();
      f.snapshotChunkReceived(1, 2); // only chunks arrive: the leader's appends are queued behind them
      sent.push(...msgs(f));
    }
    expect(sent.filter((m) => m.type === "vote")).toEqual([]);
    expect(f.role).toBe("follower");
    expect(f.leader).toBe(1);
    expect(f.term).toBe(2);
  });

  test("a chunk of a newer term makes the node a follower of its sender; one of an older term is ignored", () => {
    const f = node(3);
    f.snapshotChunkReceived(1, 4);
    expect([f.term, f.leader, f.role]).toEqual([4, 1, "follower"]);
    f.snapshotChunkReceived(2, 3);
    expect([f.term, f.leader]).toEqual([4, 1]);
    expect(drain(f)[0]!.hardState).toEqual({ term: 4, vote: NONE, commit: 0 });
  });

  test("a snapshot stream making progress keeps its peer active and the transfer alive", () => {
    const { nodes, n1 } = leaderSendingSnapshotTo3();
    const term = n1.term;
    // Neither follower answers (node 3 is busy receiving), but the stream to node 3 moves.
    const resent: Message[] = [];
    for (let i = 0; i < 60; i++) {
      n1.tick();
      n1.snapshotStreamProgress(3);
      resent.push(...msgs(n1).filter((m) => m.type === "snap"));
    }
    expect(n1.role).toBe("leader");
    expect(n1.term).toBe(term);
    expect(resent).toEqual([]); // not restarted as stalled
    expect(nodes.size).toBe(3);
  });
});
