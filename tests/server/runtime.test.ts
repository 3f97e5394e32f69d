// The runtime's Ready loop, driven by hand: a manual clock, a transport that records what is sent, and
// the real WAL on a SimDisk whose fsyncs complete only when the test says so.
import { describe, expect, test } from "bun:test";
import { encodeLogCommand } from "../../src/kv/codec";
import type { Entry, Message } from "../../src/raft/types";
import { Logger } from "../../src/server/log";
import { NodeRuntime, StaleSnapshotStream, type SnapshotStream, type Clock, type RuntimeWal } from "../../src/server/runtime";
import { mulberry32 } from "../rng";
import { SimStorage } from "../sim/simstorage";

class ManualClock implements Clock {
  t = 0;
  deferred: (() => void)[] = [];
  timers: { ms: number; next: number; fn: () => void }[] = [];
  now = () => this.t;
  defer(fn: () => void) {
    this.deferred.push(fn);
  }
  every(ms: number, fn: () => void) {
    const t = { ms, next: this.t + ms, fn };
    this.timers.push(t);
    return () => {
      this.timers = this.timers.filter((x) => x !== t);
    };
  }
  /** Run what was deferred (the Ready loop) until nothing is left. */
  run() {
    while (this.deferred.length) this.deferred.shift()!();
  }
  advance(ms: number) {
    this.t += ms;
    for (const t of this.timers) while (t.next <= this.t) {
      t.next += t.ms;
      t.fn();
    }
    this.run();
  }
}

const flush = async () => {
  for (let i = 0; i < 16; i++) await null;
};

function setup(id: number, voters: number[], opts: { wrapWal?: (wal: RuntimeWal) => RuntimeWal } = {}) {
  const clock = new ManualClock();
  const sent: Message[] = [];
  const stops: string[] = [];
  const disk = new SimStorage(mulberry32(7));
  const { storage, recovered } = disk.open(() => {});
  if (opts.wrapWal) storage.wal = opts.wrapWal(storage.wal);
  const rt = new NodeRuntime(
    { id, voters, heartbeatTicks: 1, electionTicks: 10, tickMs: 10, rng: mulberry32(id + 1), snapshotEntries: 1_000_000, groupCommit: true },
    {
      clock,
      transport: { send: (m) => sent.push(m), sendSnapshot: async () => false },
      storage,
      recovered,
      log: new Logger(id, () => 0, "error", "text", () => {}),
      failStop: (reason) => stops.push(reason),
    },
  );
  rt.start();
  /** Complete every fsync queued so far and let the runtime see it. */
  const completeSyncs = async () => {
    disk.disk.completeSyncs();
    await flush();
    clock.run();
  };
  return { rt, clock, sent, stops, completeSyncs, disk };
}

const entry = (index: number, term: number, s = `e${index}`): Entry => ({ index, term, data: new TextEncoder().encode(s) });
const put = (key: string) => encodeLogCommand({ cmd: { op: "put", key: new TextEncoder().encode(key), value: new Uint8Array([1]) }, now: 1 });

/** Make node 0 of [0, 1, 2] the leader of term 1 (votes granted by node 1). */
async function elect(env: ReturnType<typeof setup>) {
  const { rt, clock, sent, completeSyncs } = env;
  for (let i = 0; i < 30 && rt.role === "follower"; i++) clock.advance(10);
  rt.step({ type: "voteResp", from: 1, to: 0, term: 1, preVote: true, granted: true });
  clock.run();
  expect(rt.role).toBe("candidate");
  // The vote requests depend on the new term and the vote for itself: they wait for the sync.
  expect(sent.some((m) => m.type === "vote" && !m.preVote)).toBe(false);
  await completeSyncs();
  expect(sent.some((m) => m.type === "vote" && !m.preVote)).toBe(true);
  rt.step({ type: "voteResp", from: 1, to: 0, term: 1, preVote: false, granted: true });
  clock.run();
  expect(rt.role).toBe("leader");
  await completeSyncs();
  // Node 1 acknowledges the leader's no-op so that it commits.
  const last = rt.core.lastIndex();
  rt.step({ type: "appResp", from: 1, to: 0, term: 1, success: true, matchIndex: last, hintIndex: 0, hintTerm: 0, readRound: 0 });
  clock.run();
  await completeSyncs();
  expect(rt.core.commit).toBe(last);
  sent.length = 0;
}

describe("the Ready loop with asynchronous fsync (issue 9: keep the event loop free)", () => {
  test("a follower acknowledges entries only once their fsync completed, in order, and keeps taking input meanwhile", async () => {
    const env = setup(2, [1, 2, 3]);
    const { rt, clock, sent, completeSyncs } = env;
    rt.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: [entry(1, 1), entry(2, 1)], commit: 0, readRound: 0 });
    clock.run();
    expect(sent.filter((m) => m.type === "appResp")).toEqual([]);
    // While that fsync is pending: a heartbeat, a further append and ticks are all processed.
    rt.step({ type: "hb", from: 1, to: 2, term: 1, readRound: 3 });
    rt.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 2, prevTerm: 1, entries: [entry(3, 1)], commit: 2, readRound: 0 });
    clock.advance(10);
    expect(rt.core.lastIndex()).toBe(3);
    expect(sent.filter((m) => m.type === "appResp" || m.type === "hbResp")).toEqual([]);
    await completeSyncs();
    await completeSyncs();
    const acks = sent.filter((m) => m.type === "appResp" || m.type === "hbResp").map((m) => (m.type === "appResp" ? `app:${m.matchIndex}` : `hb:${m.readRound}`));
    expect(acks).toEqual(["app:2", "hb:3", "app:3"]);
    expect(env.disk.durable.lastIndex).toBe(3);
    expect(rt.applied).toBe(2);
  });

  test("an old term's acknowledgement is never sent for entries a newer leader replaced before they were written (sim seed 154)", async () => {
    const env = setup(2, [1, 2, 3]);
    const { rt, clock, sent, completeSyncs } = env;
    rt.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: [entry(1, 1)], commit: 1, readRound: 0 });
    clock.run();
    await completeSyncs();
    sent.length = 0;
    // In one turn: the term-1 leader's append of 2..4, then the term-2 leader's, which replaces 2.. with
    // its own entry 2. Entries 2..4 of term 1 never reach the disk.
    rt.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 1, prevTerm: 1, entries: [entry(2, 1), entry(3, 1), entry(4, 1)], commit: 1, readRound: 0 });
    rt.step({ type: "app", from: 3, to: 2, term: 2, prevIndex: 1, prevTerm: 1, entries: [entry(2, 2)], commit: 1, readRound: 0 });
    clock.run();
    await completeSyncs();
    await completeSyncs();
    const acks = sent.flatMap((m) => (m.type === "appResp" && m.success ? [`${m.to}:t${m.term}:${m.matchIndex}`] : []));
    // Node 1 (term 1) must not hear "I hold 4": node 2 never wrote entries 3 and 4.
    expect(acks).toEqual(["3:t2:2"]);
    expect(env.disk.durable.lastIndex).toBe(2);
  });

  test("a leader sends appends and heartbeats while its own fsync is pending and commits only up to what it has on disk", async () => {
    const env = setup(0, [0, 1, 2]);
    await elect(env);
    const { rt, clock, sent, completeSyncs } = env;
    let applied = false;
    const at = rt.propose(put("k"), { applied: () => (applied = true), failed: () => {} })!;
    clock.run();
    expect(sent.some((m) => m.type === "app" && m.entries.some((e) => e.index === at.index))).toBe(true);
    sent.length = 0;
    clock.advance(10); // a heartbeat interval passes with the fsync still pending
    expect(sent.some((m) => m.to === 1 && (m.type === "app" || m.type === "hb"))).toBe(true);
    // Node 1 has it, but the leader's own copy is not durable yet: no majority.
    rt.step({ type: "appResp", from: 1, to: 0, term: 1, success: true, matchIndex: at.index, hintIndex: 0, hintTerm: 0, readRound: 0 });
    clock.run();
    expect(rt.core.commit).toBeLessThan(at.index);
    expect(applied).toBe(false);
    await completeSyncs();
    expect(rt.core.commit).toBe(at.index);
    expect(applied).toBe(true);
  });
});

describe("one request's failure is that request's (issue 9)", () => {
  test("a completion that throws fails its own request with INTERNAL; the next request and the node go on", async () => {
    const env = setup(0, [0, 1, 2]);
    await elect(env);
    const { rt, clock, stops, completeSyncs } = env;
    const outcome: string[] = [];
    rt.propose(put("a"), {
      applied: () => {
        throw new RangeError("reply of 20 MiB is larger than the frame limit");
      },
      failed: (f) => outcome.push(`a:${f.code}`),
    });
    rt.propose(put("b"), { applied: (r) => outcome.push(`b:${r?.ok}`), failed: (f) => outcome.push(`b:${f.code}`) });
    clock.run();
    rt.step({ type: "appResp", from: 1, to: 0, term: 1, success: true, matchIndex: rt.core.lastIndex(), hintIndex: 0, hintTerm: 0, readRound: 0 });
    clock.run();
    await completeSyncs();
    expect(outcome).toEqual(["a:INTERNAL", "b:true"]);
    expect(stops).toEqual([]);
    // The loop completed: later input is still processed.
    rt.propose(put("c"), { applied: (r) => outcome.push(`c:${r?.ok}`), failed: () => {} });
    clock.run();
    rt.step({ type: "appResp", from: 1, to: 0, term: 1, success: true, matchIndex: rt.core.lastIndex(), hintIndex: 0, hintTerm: 0, readRound: 0 });
    await completeSyncs();
    expect(outcome).toEqual(["a:INTERNAL", "b:true", "c:true"]);
  });

  test("a broken core invariant stops the node at once with the reason", async () => {
    const env = setup(0, [0, 1, 2]);
    await elect(env);
    const { rt, stops } = env;
    // Another leader in the same term: the core's election-safety assertion fires.
    expect(() => rt.step({ type: "app", from: 1, to: 0, term: 1, prevIndex: 0, prevTerm: 0, entries: [], commit: 0, readRound: 0 })).toThrow();
    expect(stops.length).toBe(1);
    expect(stops[0]).toMatch(/raft invariant violated: two leaders in term 1/);
    expect(rt.isStopped).toBe(true);
  });
});

describe("write order (issue 8, bug 1)", () => {
  test("entries reach the WAL before the hard state whose commit index covers them", () => {
    const calls: string[] = [];
    const env = setup(2, [1, 2, 3], {
      wrapWal: (wal) => ({
        ...wal,
        append: (e) => (calls.push(`append ${e[0]!.index}..${e[e.length - 1]!.index}`), wal.append(e)),
        setHardState: (hs) => (calls.push(`hardState commit ${hs.commit}`), wal.setHardState(hs)),
      }),
    });
    env.rt.step({ type: "app", from: 1, to: 2, term: 1, prevIndex: 0, prevTerm: 0, entries: [entry(1, 1), entry(2, 1)], commit: 2, readRound: 0 });
    env.clock.run();
    expect(calls).toEqual(["append 1..2", "hardState commit 2"]);
  });
});

describe("snapshot transfers to a follower that is down (issue 8 bug 6)", () => {
  test("the snapshot file is read only once the follower answered, and failed transfers back off", async () => {
    const env = setup(0, [0, 1, 2]);
    let loads = 0;
    let attempts = 0;
    const rt = env.rt as unknown as {
      snapshot: { index: number; term: number } | null;
      storage: { openLatestSnapshot: () => Promise<unknown> };
      transport: { sendSnapshot: (...args: unknown[]) => Promise<boolean> };
      sendSnapshot(peer: number, term: number): Promise<void>;
    };
    rt.snapshot = { index: 1, term: 1 };
    rt.storage.openLatestSnapshot = async () => {
      loads++;
      return null;
    };
    // The follower is down: the transport cannot connect, so it never asks for the snapshot.
    rt.transport.sendSnapshot = async () => {
      attempts++;
      return false;
    };
    for (let i = 0; i < 50; i++) {
      await rt.sendSnapshot(1, 1);
      env.clock.t += 100; // 5 s in all
    }
    expect(loads).toBe(0);
    // 1 s, 2 s, 4 s between attempts: 3 attempts in 5 s, not 50.
    expect(attempts).toBeGreaterThanOrEqual(2);
    expect(attempts).toBeLessThanOrEqual(4);
  });

  test("a transfer's stream is current only while the node leads the term it started in; a stale one is not retried later", async () => {
    const env = setup(0, [0, 1, 2]);
    await elect(env);
    const rt = env.rt as unknown as {
      snapshot: { index: number; term: number } | null;
      snapshotBackoff: Map<number, unknown>;
      transport: { sendSnapshot: (to: number, term: number, open: unknown, stream: SnapshotStream) => Promise<boolean> };
      sendSnapshot(peer: number, term: number): Promise<void>;
      step(m: Message): void;
    };
    rt.snapshot = { index: 1, term: 1 };
    const seen: boolean[] = [];
    rt.transport.sendSnapshot = async (_to, term, _open, stream) => {
      seen.push(stream.current());
      // Mid-transfer, an append of a higher term arrives: another node leads now.
      rt.step({ type: "app", from: 2, to: 0, term: term + 1, prevIndex: 0, prevTerm: 0, entries: [], commit: 0, readRound: 0 });
      seen.push(stream.current());
      if (!stream.current()) throw new StaleSnapshotStream(term);
      return true;
    };
    await rt.sendSnapshot(1, 1);
    expect(seen).toEqual([true, false]);
    expect(env.rt.role).toBe("follower");
    // Not a failure of the follower's: no backoff is set against it.
    expect(rt.snapshotBackoff.size).toBe(0);
  });
});
