import { describe, expect, test } from "bun:test";
import { KvStore, MAX_RESULT_BYTES, keyToBytes, type CompactResult, type KeyValue, type RangeResult, type TxnResult } from "../../src/kv";
import { Driver, b, randInt, rng, str } from "./helpers";

const ALL = { key: new Uint8Array(0), prefix: true } as const;

function keysOf(r: RangeResult): string[] {
  return r.kvs.map((kv) => str(kv.key)!);
}

describe("reads at a past revision", () => {
  test("get and range see the keys as they were, deleted keys included", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("a"), value: b("1") }); // rev 1
    d.ok({ op: "put", key: b("b"), value: b("1") }); // rev 2
    d.ok({ op: "put", key: b("a"), value: b("2") }); // rev 3
    d.ok({ op: "del", key: b("b") }); // rev 4
    d.ok({ op: "put", key: b("c"), value: b("1") }); // rev 5
    const at = (revision: number) => d.store.range({ ...ALL, revision });
    expect(keysOf(at(2))).toEqual(["a", "b"]);
    expect(at(2).kvs.map((kv) => str(kv.value))).toEqual(["1", "1"]);
    expect(at(2).kvs[0]).toMatchObject({ createRevision: 1, modRevision: 1, version: 1 });
    expect(at(2)).toMatchObject({ revision: 2, count: 2, more: false });
    expect(keysOf(at(3))).toEqual(["a", "b"]);
    expect(at(3).kvs[0]).toMatchObject({ modRevision: 3, version: 2 });
    expect(keysOf(at(4))).toEqual(["a"]);
    expect(at(4).count).toBe(1);
    expect(keysOf(at(5))).toEqual(["a", "b", "c"].filter((k) => k !== "b"));
    expect(keysOf(at(0))).toEqual(["a", "c"]); // 0: the current revision
    expect(d.store.range({ key: b("b"), revision: 3 }).kvs.map((kv) => str(kv.value))).toEqual(["1"]);
    expect(d.store.range({ key: b("b"), revision: 4 }).count).toBe(0);
    expect(d.store.range({ key: b("c"), revision: 1 }).kvs).toEqual([]);
    expect(() => d.store.range({ ...ALL, revision: 6 })).toThrow(expect.objectContaining({ code: "FUTURE_REVISION" }));
  });

  test("every revision within the history reads exactly as the state was then (seeded random workload)", () => {
    const random = rng(77);
    const d = new Driver(new KvStore({ historyMaxEvents: 200 }));
    const states: KeyValue[][] = [[]];
    const key = () => keyToBytes(String.fromCharCode(97 + randInt(random, 6)) + String.fromCharCode(97 + randInt(random, 3)));
    for (let step = 0; step < 600; step++) {
      const roll = random();
      if (roll < 0.6) d.ok({ op: "put", key: key(), value: b(String(step)) });
      else if (roll < 0.8) d.ok({ op: "del", key: key().subarray(0, 1), prefix: true });
      else d.ok({ op: "txn", compare: [], success: [{ op: "put", key: key(), value: b("t") }, { op: "del", key: key() }], failure: [] });
      const rev = d.store.revision;
      if (states.length <= rev) states[rev] = d.store.range(ALL).kvs.map((kv) => ({ ...kv }));
    }
    const oldest = d.store.compactRevision - 1;
    expect(oldest).toBeGreaterThan(100); // the history budget dropped the early revisions
    for (let rev = oldest; rev <= d.store.revision; rev++) {
      if (states[rev] === undefined) continue; // a delete of nothing made no revision
      const r = d.store.range({ ...ALL, revision: rev });
      expect(r.kvs).toEqual(states[rev]!);
      expect(r.count).toBe(states[rev]!.length);
      const limited = d.store.range({ key: b("c"), rangeEnd: b("e"), revision: rev, limit: 2 });
      const expected = states[rev]!.filter((kv) => str(kv.key)! >= "c" && str(kv.key)! < "e");
      expect(limited.kvs).toEqual(expected.slice(0, 2));
      expect(limited.count).toBe(expected.length);
      expect(limited.more).toBe(expected.length > 2);
    }
    expect(() => d.store.range({ ...ALL, revision: oldest - 1 })).toThrow(expect.objectContaining({ code: "COMPACTED" }));
  });
});

describe("compact", () => {
  test("goes through the log; reads before it are COMPACTED with the oldest readable revision", () => {
    const d = new Driver();
    for (let i = 1; i <= 5; i++) d.ok({ op: "put", key: b("k"), value: b(String(i)) });
    expect(d.ok({ op: "compact", revision: 3 })).toEqual({ op: "compact", compacted: 3, revision: 5 } satisfies CompactResult);
    expect(str(d.store.range({ key: b("k"), revision: 3 }).kvs[0]!.value)).toBe("3");
    expect(() => d.store.range({ key: b("k"), revision: 2 })).toThrow(/revision 2 is compacted: the oldest revision this node can read is 3/);
    expect(d.store.eventsSince(3, { key: b("k") })).toBe("compacted");
    expect(d.store.eventsSince(4, { key: b("k") })).toHaveLength(2);
    // compacting again below it changes nothing and is not an error (the same on every node)
    d.ok({ op: "compact", revision: 1 });
    expect(d.store.compactRevision).toBe(4);
    expect(d.err({ op: "compact", revision: 6 })).toBe("FUTURE_REVISION");
  });
});

describe("results too big for a frame", () => {
  const MiB = 1024 * 1024;
  const big = (i: number) => new Uint8Array(MiB).fill(i);

  test("a range is returned in pages within MAX_RESULT_BYTES, each saying where to continue", () => {
    const d = new Driver();
    for (let i = 0; i < 18; i++) d.ok({ op: "put", key: b(`big/${String(i).padStart(2, "0")}`), value: big(i) });
    const got: string[] = [];
    let from = b("big/");
    let pages = 0;
    for (;;) {
      const page = d.store.range({ key: from, rangeEnd: b("big0"), revision: 18 });
      pages++;
      const bytes = page.kvs.reduce((n, kv) => n + kv.key.length + kv.value.length, 0);
      expect(bytes).toBeLessThanOrEqual(MAX_RESULT_BYTES);
      expect(page.count).toBe(18 - got.length);
      got.push(...keysOf(page));
      if (!page.more) break;
      expect(str(page.nextKey)).toBe(`big/${String(got.length).padStart(2, "0")}`);
      from = page.nextKey!;
    }
    expect(got).toHaveLength(18);
    expect(pages).toBeGreaterThanOrEqual(5);
    // keys only fit in one page
    expect(d.store.range({ key: b("big/"), prefix: true, keysOnly: true }).kvs).toHaveLength(18);
  });

  test("a transaction whose reads would exceed the limit is refused with RESULT_TOO_LARGE, writing nothing", () => {
    const d = new Driver();
    for (let i = 0; i < 5; i++) d.ok({ op: "put", key: b(`big/${i}`), value: big(i) });
    const revision = d.store.revision;
    const r = d.apply({
      op: "txn",
      compare: [],
      success: [{ op: "put", key: b("marker"), value: b("x") }, { op: "range", key: b("big/"), prefix: true }],
      failure: [],
    });
    expect(r).toMatchObject({ ok: false, error: { code: "RESULT_TOO_LARGE" } });
    expect(!r.ok && r.error.message).toMatch(/nothing was written.*get pages them/);
    expect(d.store.get(b("marker"))).toBeNull();
    expect(d.store.revision).toBe(revision);
    // puts into the range before the read count too: 2 existing MiB + 2 put MiB > 4 MiB
    const twoNew = [
      { op: "put" as const, key: b("big/0a"), value: big(1) },
      { op: "put" as const, key: b("big/1a"), value: big(1) },
    ];
    const r2 = d.apply({ op: "txn", compare: [], success: [...twoNew, { op: "range", key: b("big/0"), rangeEnd: b("big/2") }], failure: [] });
    expect(r2.ok ? "applied" : r2.error.code).toBe("RESULT_TOO_LARGE");
    // ... but puts outside it do not
    const r3 = d.apply({ op: "txn", compare: [], success: [...twoNew, { op: "range", key: b("big/0"), rangeEnd: b("big/0a") }], failure: [] });
    expect(r3.ok).toBe(true);
    // within the limit (a limit, keys only or a count) it runs
    const ok = d.ok({
      op: "txn",
      compare: [],
      success: [
        { op: "range", key: b("big/"), prefix: true, limit: 3 },
        { op: "range", key: b("big/"), prefix: true, keysOnly: true },
        { op: "range", key: b("big/"), prefix: true, countOnly: true },
      ],
      failure: [],
    }) as TxnResult;
    expect(ok.results.map((x) => (x as RangeResult).kvs.length)).toEqual([3, 7, 0]);
  });

  test("a transaction writing more than MAX_TXN_BYTES is TXN_TOO_LARGE", () => {
    const d = new Driver();
    const success = Array.from({ length: 9 }, (_, i) => ({ op: "put" as const, key: b(`k${i}`), value: big(i) }));
    expect(d.err({ op: "txn", compare: [], success, failure: [] })).toBe("TXN_TOO_LARGE");
  });
});

describe("lease list", () => {
  test("lists every lease by id with its key count", () => {
    const d = new Driver();
    d.ok({ op: "leaseGrant", id: 7, ttlMs: 1000, now: 10 });
    d.ok({ op: "leaseGrant", id: 3, ttlMs: 500, now: 10 });
    d.ok({ op: "put", key: b("a"), value: b("1"), lease: 7 });
    expect(d.store.leaseList()).toEqual([
      { id: 3, ttlMs: 500, expiresAt: 510, keys: 0 },
      { id: 7, ttlMs: 1000, expiresAt: 1010, keys: 1 },
    ]);
  });
});
