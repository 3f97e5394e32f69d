// Watch fan-out: applying a revision sends nothing; turns of bounded work (run here by hand, one at a
// time) deliver every event to every watcher in revision order, batched; a watcher that falls too far
// behind is ended with WATCHER_TOO_SLOW and the revision to resume from. Fake connections decode the
// bytes they are sent, so the frames built from parts encoded once are checked as a client reads them.
import { describe, expect, test } from "bun:test";
import { KvStore, type KvStoreOptions, type WatchEvent } from "../../src/kv";
import { FrameDecoder } from "../../src/net";
import type { EventFrame, ResponseFrame } from "../../src/protocol";
import type { ClientConn } from "../../src/server/clients";
import { MAX_WATCHES_PER_CONNECTION } from "../../src/server/limits";
import { WATCH_FANOUT_BYTES_PER_TURN, WATCH_FANOUT_CHECKS_PER_TURN, Watches, type WatchesOptions } from "../../src/server/watches";
import { Driver, b, str } from "../kv/helpers";

type Frame = EventFrame | ResponseFrame;

interface FakeConn extends ClientConn {
  frames: Frame[];
  bytes: number;
  closed: boolean;
}

function fakeConn(): FakeConn {
  const decoder = new FrameDecoder();
  const c: FakeConn = {
    frames: [],
    bytes: 0,
    closed: false,
    close: () => void (c.closed = true),
    send: (f: unknown) => (c.frames.push(f as Frame), true),
    sendEncoded: (bytes: Uint8Array) => {
      c.bytes += bytes.length;
      c.frames.push(...(decoder.push(bytes) as Frame[]));
      return true;
    },
  };
  return c;
}

/** A store, its watches, and the fan-out turns they asked for, run only when the test says. */
function setup(opts: WatchesOptions = {}, store: KvStoreOptions = {}) {
  const turns: (() => void)[] = [];
  const d = new Driver(new KvStore(store));
  const watches = new Watches(d.store, 1, { defer: (fn) => void turns.push(fn), ...opts });
  let nextId = 1;
  const watch = (conn: FakeConn, key: string, more: { prefix?: boolean; fromRevision?: number; prevKv?: boolean; id?: number } = {}) => {
    const id = more.id ?? nextId++;
    const started = watches.start(conn, id, { key: b(key), ...(more.prefix ? { prefix: true } : {}) }, more.fromRevision ?? 0, more.prevKv === true);
    return { id, started };
  };
  /** Runs the turns scheduled so far, one after another, until none is left; returns how many ran. */
  const runTurns = (each?: () => void): number => {
    let n = 0;
    while (turns.length) {
      turns.shift()!();
      n++;
      each?.();
      if (n > 100_000) throw new Error("the fan-out never stops");
    }
    return n;
  };
  return { d, watches, watch, turns, runTurns };
}

/** The events a watch received, as "type key@revision", in the order the client library delivers them. */
function received(conn: FakeConn, id: number): string[] {
  const out: string[] = [];
  let partial: WatchEvent[] = [];
  let last = 0;
  for (const f of conn.frames) {
    if (f.k !== "ev" || f.id !== id || !f.events) continue;
    for (const e of f.events) expect(e.modRevision).toBeLessThanOrEqual(f.revision!);
    if (f.more) {
      partial.push(...f.events);
      continue;
    }
    expect(f.revision!).toBeGreaterThan(last);
    last = f.revision!;
    for (const e of [...partial, ...f.events]) out.push(`${e.type} ${str(e.key)}@${e.modRevision}`);
    partial = [];
  }
  expect(partial).toEqual([]);
  return out;
}

const endOf = (conn: FakeConn, id: number) => conn.frames.find((f): f is EventFrame => f.k === "ev" && f.id === id && f.error !== undefined)?.error;

describe("watch fan-out", () => {
  test("applying revisions sends nothing; each turn visits a bounded number of watchers; every event arrives, in order", () => {
    const checksPerTurn = 50;
    const { d, watch, runTurns } = setup({ checksPerTurn });
    const conns = Array.from({ length: 4 }, fakeConn);
    const ids = conns.map((conn) => Array.from({ length: 100 }, () => watch(conn, "hot/", { prefix: true }).id));
    const framesBefore = conns.map((c) => c.frames.length); // the watch replies
    for (let i = 0; i < 30; i++) d.ok({ op: "put", key: b(`hot/${i % 3}`), value: b(`v${i}`) });
    // Inside apply nothing was sent: the work waits for the fan-out turns.
    expect(conns.map((c) => c.frames.length)).toEqual(framesBefore);

    const turns = runTurns(() => {
      // Per turn, a watcher visited costs at least one check: at most checksPerTurn are served.
      let n = 0;
      for (const [k, c] of conns.entries()) {
        for (const f of c.frames.slice(framesBefore[k])) if (f.k === "ev") n++;
        framesBefore[k] = c.frames.length;
      }
      expect(n).toBeLessThanOrEqual(checksPerTurn);
    });
    expect(turns).toBeGreaterThanOrEqual(400 / checksPerTurn);
    const expected = Array.from({ length: 30 }, (_, i) => `put hot/${i % 3}@${i + 1}`);
    for (const [k, c] of conns.entries()) for (const id of ids[k]!) expect(received(c, id)).toEqual(expected);
    // Batched: 30 revisions reached each watcher in one frame.
    expect(conns[0]!.frames.filter((f) => f.k === "ev" && f.id === ids[0]![0]).length).toBe(1);
  });

  test("with the node's own limits, a turn stays within its bytes and checks while thousands of watchers share hot keys", () => {
    const { d, watch, runTurns } = setup();
    const conns = Array.from({ length: 3 }, fakeConn);
    for (const conn of conns) for (let i = 0; i < MAX_WATCHES_PER_CONNECTION; i++) watch(conn, "hot/", { prefix: true });
    const value = new Uint8Array(1000);
    for (let i = 0; i < 20; i++) d.ok({ op: "put", key: b(`hot/${i}`), value });
    const bytesBefore = conns.map((c) => c.bytes);
    let maxTurnBytes = 0;
    let maxTurnFrames = 0;
    const events = new Map<string, number>(); // per connection and watch id
    const turns = runTurns(() => {
      for (const [k, c] of conns.entries()) for (const f of c.frames) if (f.k === "ev") events.set(`${k}/${f.id}`, (events.get(`${k}/${f.id}`) ?? 0) + (f.events?.length ?? 0));
      const bytes = conns.reduce((sum, c, k) => sum + c.bytes - bytesBefore[k]!, 0);
      const frames = conns.reduce((sum, c) => sum + c.frames.length, 0);
      conns.forEach((c, k) => (bytesBefore[k] = c.bytes));
      maxTurnBytes = Math.max(maxTurnBytes, bytes);
      maxTurnFrames = Math.max(maxTurnFrames, frames);
      for (const c of conns) c.frames.length = 0;
    });
    // 3,000 watchers x 20 KB of events: 60 MB, sent over many turns of at most about a budget each
    // (the last visit of a turn may go past it by one frame).
    expect(turns).toBeGreaterThan(50);
    expect(maxTurnBytes).toBeLessThanOrEqual(WATCH_FANOUT_BYTES_PER_TURN + 25_000);
    expect(maxTurnFrames).toBeLessThanOrEqual(WATCH_FANOUT_CHECKS_PER_TURN);
    expect(events.size).toBe(3 * MAX_WATCHES_PER_CONNECTION);
    expect([...new Set(events.values())]).toEqual([20]);
  });

  test("a turn's bytes stay near its budget when one visit's events are large", () => {
    const bytesPerTurn = 4096;
    const { d, watch, runTurns } = setup({ bytesPerTurn });
    const conn = fakeConn();
    const { id } = watch(conn, "k/", { prefix: true });
    const value = new Uint8Array(1000);
    for (let i = 0; i < 100; i++) d.ok({ op: "put", key: b(`k/${i}`), value }); // 100 KB in 100 revisions
    let before = conn.bytes;
    let maxTurnBytes = 0;
    runTurns(() => {
      maxTurnBytes = Math.max(maxTurnBytes, conn.bytes - before);
      before = conn.bytes;
    });
    expect(maxTurnBytes).toBeLessThanOrEqual(bytesPerTurn + 1200); // the budget, and the revision that crosses it
    expect(received(conn, id)).toEqual(Array.from({ length: 100 }, (_, i) => `put k/${i}@${i + 1}`));
  });

  test("other keys' large values do not split a watcher's batch", () => {
    const bytesPerTurn = 4096;
    const { d, watch, runTurns } = setup({ bytesPerTurn });
    const conn = fakeConn();
    d.ok({ op: "put", key: b("a"), value: b("1") });
    for (let i = 0; i < 20; i++) d.ok({ op: "put", key: b(`big/${i}`), value: new Uint8Array(10_000) });
    d.ok({ op: "put", key: b("a"), value: b("2") });
    const { id } = watch(conn, "a", { fromRevision: 1 });
    runTurns();
    expect(received(conn, id)).toEqual(["put a@1", "put a@22"]);
    expect(conn.frames.filter((f) => f.k === "ev" && f.id === id).length).toBe(1);
  });

  test("frames built once for many watchers carry each watcher's own id (ids of every CBOR width)", () => {
    const { d, watch, runTurns } = setup();
    const conn = fakeConn();
    const ids = [0, 23, 24, 255, 256, 65_535, 65_536, 2 ** 32, 2 ** 40];
    for (const id of ids) watch(conn, "k", { id });
    d.ok({ op: "put", key: b("k"), value: b("1") });
    d.ok({ op: "put", key: b("other"), value: b("x") });
    d.ok({ op: "put", key: b("k"), value: b("2") });
    runTurns();
    for (const id of ids) {
      const frames = conn.frames.filter((f) => f.k === "ev" && f.id === id) as EventFrame[];
      expect(frames.length).toBe(1);
      expect(frames[0]!.revision).toBe(3);
      expect(frames[0]!.events!.map((e) => str(e.value))).toEqual(["1", "2"]);
    }
  });

  test("replays from a past revision, then goes live; previous values only when asked; large revisions in several frames", () => {
    const { d, watch, runTurns } = setup();
    const conn = fakeConn();
    const big = new Uint8Array(1024 * 1024);
    for (let i = 0; i < 5; i++) d.ok({ op: "put", key: b(`big/${i}`), value: big }); // revisions 1-5
    d.ok({ op: "put", key: b("small"), value: b("s") }); // 6
    const replay = watch(conn, "big/", { prefix: true, fromRevision: 2, prevKv: true }).id;
    const live = watch(conn, "big/", { prefix: true }).id;
    d.ok({ op: "del", key: b("big/"), prefix: true }); // 7: five deletes, each with its 1 MiB previous value
    d.ok({ op: "put", key: b("big/0"), value: b("back") }); // 8
    runTurns();
    const deletes = Array.from({ length: 5 }, (_, i) => `delete big/${i}@7`);
    expect(received(conn, replay)).toEqual([...[1, 2, 3, 4].map((i) => `put big/${i}@${i + 1}`), ...deletes, "put big/0@8"]);
    expect(received(conn, live)).toEqual([...deletes, "put big/0@8"]);
    const replayFrames = conn.frames.filter((f) => f.k === "ev" && f.id === replay) as EventFrame[];
    expect(replayFrames.some((f) => f.more)).toBe(true); // over MAX_RESULT_BYTES: split
    expect(replayFrames.flatMap((f) => f.events!).filter((e) => e.type === "delete").every((e) => e.prevValue?.length === big.length)).toBe(true);
    const liveFrames = conn.frames.filter((f) => f.k === "ev" && f.id === live) as EventFrame[];
    expect(liveFrames.flatMap((f) => f.events!).every((e) => e.prevValue === undefined)).toBe(true);
  });

  test("a watcher that needs more than its backlog limit of events older than the history is ended with WATCHER_TOO_SLOW and the revision to resume from", () => {
    // The store keeps the last 5 events; a watcher may still need 300 bytes (about 4 events) older than those.
    const { d, watch, runTurns } = setup({ backlogBytes: 300 }, { historyMaxEvents: 5 });
    const conn = fakeConn();
    const early = watch(conn, "k/", { prefix: true }).id;
    d.ok({ op: "put", key: b("k/a"), value: b("1") });
    runTurns();
    expect(received(conn, early)).toEqual(["put k/a@1"]);
    // 16 revisions applied before the next turn: revisions 2-12 are no longer in the history.
    for (let i = 2; i <= 16; i++) d.ok({ op: "put", key: b(`k/${i}`), value: b("x") });
    const late = watch(conn, "k/", { prefix: true }).id; // from now: 1 event behind
    d.ok({ op: "put", key: b("k/last"), value: b("y") }); // 17: the history holds 13-17
    const replay = watch(conn, "k/", { prefix: true, fromRevision: 13 }).id; // replays the history: never too slow
    runTurns();
    const end = endOf(conn, early);
    expect(end?.code).toBe("WATCHER_TOO_SLOW");
    expect(end?.message).toContain("watch again from revision 2");
    expect(received(conn, early)).toEqual(["put k/a@1"]); // nothing after its end, nothing skipped before it
    expect(conn.closed).toBe(false); // the connection's other watches go on
    expect(received(conn, late)).toEqual(["put k/last@17"]);
    expect(received(conn, replay)).toEqual([...[13, 14, 15, 16].map((r) => `put k/${r}@${r}`), "put k/last@17"]);
    // Revision 2 is compacted here: resuming from it is refused, never served with a gap.
    expect(watch(conn, "k/", { prefix: true, fromRevision: 2 }).started).toBe("COMPACTED");
  });

  test("a watcher behind by one large revision that left the history at once is not too slow", () => {
    const { d, watch, runTurns } = setup({ backlogBytes: 1000 }, { historyMaxEvents: 5 });
    const conn = fakeConn();
    for (let i = 0; i < 8; i++) d.ok({ op: "put", key: b(`k/${i}`), value: b("x") });
    const w = watch(conn, "k/", { prefix: true }).id;
    d.ok({ op: "del", key: b("k/"), prefix: true }); // 8 events in one revision: more than the history holds
    runTurns();
    expect(endOf(conn, w)).toBeUndefined();
    expect(received(conn, w)).toEqual(Array.from({ length: 8 }, (_, i) => `delete k/${i}@9`));
  });

  test("a snapshot install ends every watch with COMPACTED; a watch after it sees only later revisions", () => {
    const { d, watches, watch, runTurns } = setup();
    const conn = fakeConn();
    const before = watch(conn, "k").id;
    d.ok({ op: "put", key: b("k"), value: b("1") });
    const donor = new Driver();
    for (let i = 0; i < 5; i++) donor.ok({ op: "put", key: b("k"), value: b(`snap${i}`) });
    d.store.load(donor.store.snapshot()); // revision 5: revisions 2-4 never happened here
    watches.endAfterSnapshot();
    runTurns();
    expect(endOf(conn, before)?.code).toBe("COMPACTED");
    expect(received(conn, before)).toEqual([]); // revision 1 was pending: the client resumes elsewhere
    const after = watch(conn, "k").id;
    d.index = d.store.appliedIndex;
    d.ok({ op: "put", key: b("k"), value: b("2") });
    runTurns();
    expect(received(conn, after)).toEqual(["put k@6"]);
  });
});
