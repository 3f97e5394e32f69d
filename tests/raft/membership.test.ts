// Membership changes, learners and leadership transfer in the core, one test per rule, named after the
// sections of the Raft thesis (Ongaro, 2014) that state them.
import { describe, expect, test } from "bun:test";
import { decodeConfig, encodeConfig } from "../../src/raft/confchange";
import { RaftCore, type InitialState } from "../../src/raft/core";
import { ENTRY_CONFIG, NONE, type ClusterConfig, type Entry, type Message } from "../../src/raft/types";
import { fromWire, parseMessage, toWire } from "../../src/raft/wire";
import { mulberry32 } from "../rng";
import { deliverAll, drain } from "./helpers";

const enc = (s: string) => new TextEncoder().encode(s);

function node(id: number, voters: number[], init?: InitialState, learners: number[] = []) {
  return new RaftCore({ id, voters, learners, electionTicks: 10, heartbeatTicks: 1, rng: mulberry32(id) }, init);
}

const msgs = (n: RaftCore): Message[] => drain(n).flatMap((r) => r.messages);
const exchange = deliverAll;

/** `voters` form a cluster and node `leader` is elected; `others` start knowing no configuration (joining). */
function cluster(voters: number[], leader: number, others: number[] = []) {
  const nodes = new Map<number, RaftCore>();
  for (const id of voters) nodes.set(id, node(id, voters));
  for (const id of others) nodes.set(id, node(id, []));
  const l = nodes.get(leader)!;
  l.campaignNow();
  exchange(nodes, msgs(l));
  expect(l.role).toBe("leader");
  return { nodes, l };
}

/** Tick every node once and deliver what follows. */
function tickAll(nodes: Map<number, RaftCore>, drop?: (m: Message) => boolean): Message[] {
  const out: Message[] = [];
  for (const n of nodes.values()) {
    n.tick();
    out.push(...msgs(n));
  }
  return exchange(nodes, out, drop);
}

function change(l: RaftCore, nodes: Map<number, RaftCore>, ch: Parameters<RaftCore["proposeConfChange"]>[0]) {
  const at = l.proposeConfChange(ch);
  if (typeof at === "string") throw new Error(at);
  exchange(nodes, msgs(l));
  return at;
}

const cfg = (n: RaftCore) => ({ voters: n.status().config.voters, learners: n.status().config.learners });

describe("membership (thesis chapter 4)", () => {
  test("§4.1 a configuration takes effect when appended, before it commits", () => {
    const { nodes, l } = cluster([1, 2, 3], 1, [4]);
    const at = l.proposeConfChange({ op: "addLearner", id: 4, context: "127.0.0.1:9004" });
    expect(typeof at).toBe("object");
    expect(l.commit).toBeLessThan((at as { index: number }).index);
    expect(cfg(l)).toEqual({ voters: [1, 2, 3], learners: [4] });
    expect(l.status().config.context).toEqual({ 4: "127.0.0.1:9004" });
    // Node 2 appends it but does not yet know it committed: it uses it all the same.
    const n2 = nodes.get(2)!;
    n2.step(msgs(l).find((m) => m.type === "app" && m.to === 2)!);
    drain(n2);
    expect(n2.lastIndex()).toBe((at as { index: number }).index);
    expect(n2.commit).toBeLessThan((at as { index: number }).index);
    expect(cfg(nodes.get(2)!)).toEqual({ voters: [1, 2, 3], learners: [4] });
  });

  test("§4.1 one change at a time: a second change is refused until the first commits", () => {
    const { nodes, l } = cluster([1, 2, 3], 1, [4, 5]);
    expect(typeof l.proposeConfChange({ op: "addLearner", id: 4 })).toBe("object");
    expect(l.proposeConfChange({ op: "addLearner", id: 5 })).toMatch(/still pending/);
    exchange(nodes, msgs(l));
    expect(typeof l.proposeConfChange({ op: "addLearner", id: 5 })).toBe("object");
  });

  test("§4.1 invalid changes are refused with the reason", () => {
    const { l } = cluster([1, 2, 3], 1);
    expect(l.proposeConfChange({ op: "addLearner", id: 2 })).toMatch(/already a voter/);
    expect(l.proposeConfChange({ op: "promote", id: 9 })).toMatch(/not a learner/);
    expect(l.proposeConfChange({ op: "remove", id: 9 })).toMatch(/not a member/);
    expect(nodes1().proposeConfChange({ op: "remove", id: 1 })).toMatch(/last voter/);
    function nodes1() {
      return cluster([1], 1).l;
    }
  });

  test("§4.1 a configuration entry cut from the log by a new leader is no longer in effect", () => {
    // Node 2 appended a change from leader 1 (term 2) that never committed; leader 3 of term 3 overwrites it.
    const log: Entry[] = [{ index: 1, term: 1, data: enc("a") }];
    const pending: Entry = { index: 2, term: 2, data: encodeConfig({ voters: [1, 2, 3], learners: [4] }), type: ENTRY_CONFIG };
    const f = node(2, [1, 2, 3], { hardState: { term: 2, vote: NONE, commit: 1 }, entries: [...log, pending], snapshot: null });
    expect(cfg(f)).toEqual({ voters: [1, 2, 3], learners: [4] });
    f.step({ type: "app", from: 3, to: 2, term: 3, prevIndex: 1, prevTerm: 1, entries: [{ index: 2, term: 3, data: new Uint8Array() }], commit: 1, readRound: 0 });
    drain(f);
    expect(cfg(f)).toEqual({ voters: [1, 2, 3], learners: [] });
    expect(f.status().configIndex).toBe(0);
  });

  test("§4.1 a node restarted from its log uses the latest configuration in it", () => {
    const entries: Entry[] = [
      { index: 1, term: 1, data: encodeConfig({ voters: [1, 2, 3], learners: [4] }), type: ENTRY_CONFIG },
      { index: 2, term: 1, data: enc("x") },
      { index: 3, term: 1, data: encodeConfig({ voters: [1, 2, 3, 4], learners: [] }), type: ENTRY_CONFIG },
    ];
    const n = node(4, [1, 2, 3], { hardState: { term: 1, vote: NONE, commit: 3 }, entries, snapshot: null });
    expect(cfg(n)).toEqual({ voters: [1, 2, 3, 4], learners: [] });
    expect(n.configAt(2)).toEqual(expect.objectContaining({ voters: [1, 2, 3], learners: [4] }));
  });

  test("§4.2.1 a learner receives the log but never votes, campaigns or counts toward a commit", () => {
    const { nodes, l } = cluster([1, 2, 3], 1, [4]);
    change(l, nodes, { op: "addLearner", id: 4 });
    expect(nodes.get(4)!.lastIndex()).toBe(l.lastIndex());
    expect(cfg(nodes.get(4)!)).toEqual({ voters: [1, 2, 3], learners: [4] });
    // With voters 2 and 3 cut off, the learner's acknowledgement does not make a majority.
    const at = l.propose(enc("w"))!;
    const cut = (m: Message) => [2, 3].includes(m.to) || [2, 3].includes(m.from);
    exchange(nodes, msgs(l), cut);
    expect(nodes.get(4)!.lastIndex()).toBe(at.index);
    expect(l.commit).toBeLessThan(at.index);
    // The learner, cut off from the leader too, never campaigns; no vote request ever goes to it.
    const sent: Message[] = [];
    for (let i = 0; i < 50; i++) sent.push(...tickAll(nodes, (m) => m.from === 1 || m.to === 1));
    expect(sent.filter((m) => m.type === "vote" && (m.from === 4 || m.to === 4))).toEqual([]);
    expect(nodes.get(4)!.role).toBe("follower");
  });

  test("§4.2.1 promotion is refused until the learner has caught up; a promoted voter counts", () => {
    const { nodes, l } = cluster([1, 2, 3], 1, [4]);
    const cut4 = (m: Message) => m.to === 4 || m.from === 4;
    const at = l.proposeConfChange({ op: "addLearner", id: 4 });
    expect(typeof at).toBe("object");
    exchange(nodes, msgs(l), cut4);
    expect(l.proposeConfChange({ op: "promote", id: 4 })).toMatch(/has not caught up/);
    for (let i = 0; i < 3; i++) tickAll(nodes);
    expect(l.learnerLag(4)).toBe(0);
    change(l, nodes, { op: "promote", id: 4 });
    expect(cfg(l)).toEqual({ voters: [1, 2, 3, 4], learners: [] });
    // Four voters: a majority is three, so the leader and one follower no longer commit alone.
    const w = l.propose(enc("w"))!;
    exchange(nodes, msgs(l), (m) => [3, 4].includes(m.to) || [3, 4].includes(m.from));
    expect(l.commit).toBeLessThan(w.index);
    for (let i = 0; i < 10; i++) {
      l.tick();
      exchange(nodes, msgs(l), cut4);
    }
    expect(l.commit).toBe(w.index);
  });

  test("§4.2.1 a joining node knows no configuration until the leader's log or snapshot gives it one", () => {
    const { nodes, l } = cluster([1, 2, 3], 1, [4]);
    const n4 = nodes.get(4)!;
    expect(cfg(n4)).toEqual({ voters: [], learners: [] });
    for (let i = 0; i < 30; i++) {
      n4.tick();
      expect(msgs(n4)).toEqual([]); // not a voter of anything: never campaigns
    }
    change(l, nodes, { op: "addLearner", id: 4 });
    expect(cfg(n4)).toEqual({ voters: [1, 2, 3], learners: [4] });
  });

  test("§4.2.2 a removed leader keeps replicating until its removal commits, without counting itself, then steps down and hands over", () => {
    const { nodes, l } = cluster([1, 2, 3], 1);
    const at = l.proposeConfChange({ op: "remove", id: 1 }) as { index: number };
    expect(cfg(l)).toEqual({ voters: [2, 3], learners: [] });
    expect(l.role).toBe("leader");
    // Its own copy is not counted: with node 3 cut off, node 2 alone is not a majority of {2, 3}.
    exchange(nodes, msgs(l), (m) => m.to === 3 || m.from === 3);
    expect(l.commit).toBeLessThan(at.index);
    expect(l.role).toBe("leader");
    const delivered: Message[] = [];
    for (let i = 0; i < 10 && l.role === "leader"; i++) {
      l.tick();
      delivered.push(...exchange(nodes, msgs(l)));
    }
    expect(l.commit).toBeGreaterThanOrEqual(at.index);
    expect(l.role).toBe("follower");
    // It told an up-to-date voter to campaign at once, which won without waiting for a timeout.
    expect(delivered.some((m) => m.type === "timeoutNow" && m.from === 1)).toBe(true);
    const leaders = [2, 3].filter((id) => nodes.get(id)!.role === "leader");
    expect(leaders.length).toBe(1);
    // The removed node never campaigns again.
    for (let i = 0; i < 30; i++) {
      l.tick();
      expect(msgs(l).filter((m) => m.type === "vote")).toEqual([]);
    }
  });

  test("§4.2.3 a removed server does not disrupt the cluster: its campaigns are ignored while a leader is heard", () => {
    const { nodes, l } = cluster([1, 2, 3], 1);
    change(l, nodes, { op: "remove", id: 3 });
    const term = l.term;
    // Node 3 never learns it was removed (it missed the commit) and keeps timing out.
    const n3 = nodes.get(3)!;
    for (let i = 0; i < 60; i++) {
      tickAll(nodes, (m) => m.from === 1 && m.to === 3);
    }
    expect(l.role).toBe("leader");
    expect(l.term).toBe(term);
    expect(n3.role === "leader").toBe(false);
  });
});

describe("leadership transfer (thesis §3.10)", () => {
  test("§3.10 the leader brings the target up to date, refuses proposals meanwhile, and the target wins at once", () => {
    const { nodes, l } = cluster([1, 2, 3], 1);
    // Node 3 is behind by a few entries.
    for (let i = 0; i < 3; i++) l.propose(enc(`v${i}`));
    exchange(nodes, msgs(l), (m) => m.to === 3 || m.from === 3);
    expect(l.transferLeadership(3)).toBeNull();
    expect(l.propose(enc("refused"))).toBeNull();
    expect(l.status().transferee).toBe(3);
    const delivered = exchange(nodes, msgs(l));
    // The appends to node 3 were lost: the leader resends them once it sees them stalled.
    for (let i = 0; i < 10 && nodes.get(3)!.role !== "leader"; i++) {
      expect(l.propose(enc("refused"))).toBeNull();
      delivered.push(...tickAll(nodes));
    }
    // Node 3 campaigned straight away (no pre-vote), and the others granted despite hearing from leader 1.
    expect(delivered.some((m) => m.type === "timeoutNow" && m.to === 3)).toBe(true);
    expect(delivered.filter((m) => m.type === "vote" && m.from === 3).every((m) => m.type === "vote" && !m.preVote && m.transfer)).toBe(true);
    expect(nodes.get(3)!.role).toBe("leader");
    expect(l.role).toBe("follower");
    expect(l.leader === 3 || l.leader === NONE).toBe(true);
  });

  test("§3.10 a transfer to a target that does not answer is abandoned after an election timeout", () => {
    const { nodes, l } = cluster([1, 2, 3], 1);
    expect(l.transferLeadership(3)).toBeNull();
    const cut3 = (m: Message) => m.to === 3 || m.from === 3;
    exchange(nodes, msgs(l), cut3);
    expect(l.propose(enc("x"))).toBeNull();
    for (let i = 0; i < 10; i++) {
      l.tick();
      exchange(nodes, msgs(l), cut3);
    }
    expect(l.role).toBe("leader");
    expect(l.status().transferee).toBe(NONE);
    expect(l.propose(enc("x"))).not.toBeNull();
  });

  test("§3.10 transfer requests that cannot work are refused", () => {
    const { nodes, l } = cluster([1, 2, 3], 1, [4]);
    change(l, nodes, { op: "addLearner", id: 4 });
    expect(l.transferLeadership(1)).toMatch(/already the leader/);
    expect(l.transferLeadership(4)).toMatch(/not a voter/);
    expect(nodes.get(2)!.transferLeadership(3)).toMatch(/not the leader/);
    expect(l.transferLeadership(2)).toBeNull();
    expect(l.transferLeadership(3)).toMatch(/already being transferred/);
    expect(l.proposeConfChange({ op: "remove", id: 4 })).toMatch(/being transferred/);
  });
});

describe("configuration in snapshots (thesis §5.4 / chapter 4)", () => {
  test("a follower installing a snapshot takes the configuration it carries", () => {
    const { nodes, l } = cluster([1, 2, 3], 1, [4]);
    const cut4 = (m: Message) => m.to === 4 || m.from === 4;
    const at = l.proposeConfChange({ op: "addLearner", id: 4, context: "h:4" }) as { index: number };
    exchange(nodes, msgs(l), cut4);
    for (let i = 0; i < 3; i++) l.propose(enc(`v${i}`));
    exchange(nodes, msgs(l), cut4);
    l.compact(l.applied);
    expect(l.configAt(l.applied)).toEqual(expect.objectContaining({ learners: [4] }));
    let snap: Message | undefined;
    for (let i = 0; i < 10 && !snap; i++) {
      l.tick();
      snap = msgs(l).find((m) => m.type === "snap" && m.to === 4);
    }
    expect(snap).toMatchObject({ snapshot: { config: { voters: [1, 2, 3], learners: [4], context: { 4: "h:4" } } } });
    const n4 = nodes.get(4)!;
    n4.step({ ...(snap as Extract<Message, { type: "snap" }>), snapshot: { ...(snap as Extract<Message, { type: "snap" }>).snapshot, data: enc("state") } });
    const rd = n4.ready();
    expect(rd.snapshot?.config).toEqual({ voters: [1, 2, 3], learners: [4], context: { 4: "h:4" } });
    n4.advance(rd);
    expect(cfg(n4)).toEqual({ voters: [1, 2, 3], learners: [4] });
    expect(at.index).toBeLessThanOrEqual(n4.status().snapshotIndex);
  });

  test("a node restarted from a snapshot uses the configuration stored with it", () => {
    const config: ClusterConfig = { voters: [1, 2, 4], learners: [5] };
    const n = node(4, [1, 2, 3], { hardState: { term: 2, vote: NONE, commit: 10 }, entries: [], snapshot: { index: 10, term: 2, config } });
    expect(cfg(n)).toEqual({ voters: [1, 2, 4], learners: [5] });
  });
});

describe("configuration entries on the wire", () => {
  test("a configuration entry keeps its type through toWire/fromWire/parseMessage", () => {
    const e: Entry = { index: 3, term: 2, data: encodeConfig({ voters: [1, 2], learners: [3] }), type: ENTRY_CONFIG };
    const m: Message = { type: "app", from: 1, to: 2, term: 2, prevIndex: 2, prevTerm: 2, entries: [{ index: 3, term: 2, data: enc("x") }, { ...e, index: 4 }], commit: 0, readRound: 0 };
    const back = parseMessage(fromWire(toWire(m)));
    expect(back).toEqual(m);
  });

  test("a malformed configuration entry or snapshot configuration is refused, never reaching the core", () => {
    const bad: Entry = { index: 1, term: 1, data: enc("{not json"), type: ENTRY_CONFIG };
    expect(parseMessage({ type: "app", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: [bad], commit: 0, readRound: 0 })).toMatch(/not JSON/);
    const dup = { ...bad, data: enc(JSON.stringify({ voters: [1, 2], learners: [2] })) };
    expect(parseMessage({ type: "app", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: [dup], commit: 0, readRound: 0 })).toMatch(/twice/);
    expect(parseMessage({ type: "app", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: [{ ...bad, type: 7 }], commit: 0, readRound: 0 })).toMatch(/unknown type/);
    expect(parseMessage({ type: "snap", from: 1, to: 2, term: 1, snapshot: { index: 1, term: 1, config: { voters: "all" } } })).toMatch(/bad snap/);
    expect(decodeConfig(encodeConfig({ voters: [1], learners: [], context: { 1: "a:1" } }))).toEqual({ voters: [1], learners: [], context: { 1: "a:1" } });
  });
});
