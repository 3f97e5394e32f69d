import { describe, expect, test } from "bun:test";
import {
  KvStore,
  casCommand,
  type Compare,
  type DelResult,
  type PutResult,
  type RangeResult,
  type SessionRegisterResult,
  type TxnResult,
} from "../../src/kv";
import { Driver, b, str } from "./helpers";

function keysOf(result: RangeResult): string[] {
  return result.kvs.map((kv) => str(kv.key)!);
}

describe("put / get / del", () => {
  test("put then get returns the value with metadata", () => {
    const d = new Driver();
    const r = d.ok({ op: "put", key: b("a"), value: b("1") }) as PutResult;
    expect(r).toEqual({ op: "put", revision: 1 });
    const kv = d.store.get(b("a"))!;
    expect(str(kv.value)).toBe("1");
    expect(kv).toMatchObject({ createRevision: 1, modRevision: 1, version: 1, lease: 0 });
    expect(d.store.get(b("missing"))).toBeNull();
    expect(d.store.get(new Uint8Array(0))).toBeNull();
  });

  test("revision, version and createRevision across put/put/del/put", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("x"), value: b("other") }); // rev 1
    const p1 = d.ok({ op: "put", key: b("k"), value: b("v1") }) as PutResult; // rev 2
    const p2 = d.ok({ op: "put", key: b("k"), value: b("v2") }) as PutResult; // rev 3
    expect(p1.revision).toBe(2);
    expect(p2.revision).toBe(3);
    expect(p2.prev).toBeDefined();
    expect(str(p2.prev!.value)).toBe("v1");
    expect(p2.prev).toMatchObject({ createRevision: 2, modRevision: 2, version: 1 });
    expect(d.store.get(b("k"))).toMatchObject({ createRevision: 2, modRevision: 3, version: 2 });

    const del = d.ok({ op: "del", key: b("k") }) as DelResult; // rev 4
    expect(del).toEqual({ op: "del", revision: 4, deleted: 1 });
    expect(d.store.get(b("k"))).toBeNull();

    const p3 = d.ok({ op: "put", key: b("k"), value: b("v3") }) as PutResult; // rev 5
    expect(p3.prev).toBeUndefined();
    expect(d.store.get(b("k"))).toMatchObject({ createRevision: 5, modRevision: 5, version: 1 });
    expect(d.store.revision).toBe(5);
  });

  test("deleting a missing key does not bump the revision", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("a"), value: b("1") });
    expect(d.ok({ op: "del", key: b("zzz") })).toEqual({ op: "del", revision: 1, deleted: 0 });
    expect(d.ok({ op: "del", key: b("q"), prefix: true })).toEqual({ op: "del", revision: 1, deleted: 0 });
    expect(d.store.revision).toBe(1);
  });

  test("putting the same value still bumps revision and version", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("a"), value: b("1") });
    d.ok({ op: "put", key: b("a"), value: b("1") });
    expect(d.store.revision).toBe(2);
    expect(d.store.get(b("a"))!.version).toBe(2);
  });

  test("stored values are copies: mutating the caller's buffer changes nothing", () => {
    const d = new Driver();
    const value = b("abc");
    d.ok({ op: "put", key: b("a"), value });
    value[0] = 0x7a;
    expect(str(d.store.get(b("a"))!.value)).toBe("abc");
  });

  test("binary keys are ordered bytewise (0x00 and 0xff included)", () => {
    const d = new Driver();
    const keys = [[0xff], [0x00], [0x80, 0x01], [0x7f], [0x00, 0x00], [0xff, 0xff, 0x00]];
    for (const k of keys) d.ok({ op: "put", key: new Uint8Array(k), value: b("v") });
    const all = d.store.range({ key: new Uint8Array(0), prefix: true });
    expect(all.kvs.map((kv) => [...kv.key])).toEqual([
      [0x00],
      [0x00, 0x00],
      [0x7f],
      [0x80, 0x01],
      [0xff],
      [0xff, 0xff, 0x00],
    ]);
  });
});

describe("ranges", () => {
  function seeded(): Driver {
    const d = new Driver();
    for (const k of ["a", "ab", "abc", "abd", "b", "ba", "c"]) d.ok({ op: "put", key: b(k), value: b(`v-${k}`) });
    return d;
  }

  test("single key, [key, rangeEnd), prefix, empty prefix", () => {
    const d = seeded();
    expect(keysOf(d.store.range({ key: b("ab") }))).toEqual(["ab"]);
    expect(keysOf(d.store.range({ key: b("zz") }))).toEqual([]);
    expect(keysOf(d.store.range({ key: b("ab"), rangeEnd: b("b") }))).toEqual(["ab", "abc", "abd"]);
    expect(keysOf(d.store.range({ key: b("ab"), prefix: true }))).toEqual(["ab", "abc", "abd"]);
    expect(keysOf(d.store.range({ key: b("b"), prefix: true }))).toEqual(["b", "ba"]);
    expect(keysOf(d.store.range({ key: new Uint8Array(0), prefix: true }))).toEqual([
      "a",
      "ab",
      "abc",
      "abd",
      "b",
      "ba",
      "c",
    ]);
    // etcd convention: rangeEnd "\0" = every key >= key.
    expect(keysOf(d.store.range({ key: b("b"), rangeEnd: new Uint8Array([0]) }))).toEqual(["b", "ba", "c"]);
    // rangeEnd <= key: nothing.
    expect(d.store.range({ key: b("c"), rangeEnd: b("a") })).toMatchObject({ kvs: [], count: 0, more: false });
  });

  test("prefix of 0xff bytes runs to the end of the key space", () => {
    const d = new Driver();
    d.ok({ op: "put", key: new Uint8Array([0xfe]), value: b("1") });
    d.ok({ op: "put", key: new Uint8Array([0xff]), value: b("2") });
    d.ok({ op: "put", key: new Uint8Array([0xff, 0xff, 0x01]), value: b("3") });
    expect(d.store.range({ key: new Uint8Array([0xff]), prefix: true }).count).toBe(2);
    expect(d.store.range({ key: new Uint8Array([0xff, 0xff]), prefix: true }).count).toBe(1);
  });

  test("limit, keysOnly, countOnly", () => {
    const d = seeded();
    const limited = d.store.range({ key: b("a"), prefix: true, limit: 2 });
    expect(keysOf(limited)).toEqual(["a", "ab"]);
    expect(limited.count).toBe(4);
    expect(limited.more).toBe(true);
    const exact = d.store.range({ key: b("a"), prefix: true, limit: 4 });
    expect(exact.more).toBe(false);
    const keysOnly = d.store.range({ key: b("b"), prefix: true, keysOnly: true });
    expect(keysOf(keysOnly)).toEqual(["b", "ba"]);
    for (const kv of keysOnly.kvs) expect(kv.value.length).toBe(0);
    expect(keysOnly.kvs[1]).toMatchObject({ createRevision: 6, modRevision: 6, version: 1 });
    const countOnly = d.store.range({ key: new Uint8Array(0), prefix: true, countOnly: true });
    expect(countOnly).toEqual({ op: "range", revision: 7, kvs: [], count: 7, more: false });
    expect(d.store.range({ key: b("a"), countOnly: true }).count).toBe(1);
  });

  test("bad range requests throw KvError", () => {
    const d = seeded();
    expect(() => d.store.range({ key: new Uint8Array(0) })).toThrow(expect.objectContaining({ code: "EMPTY_KEY" }));
    expect(() => d.store.range({ key: b("a"), prefix: true, rangeEnd: b("b") })).toThrow(
      expect.objectContaining({ code: "BAD_COMMAND" }),
    );
    expect(() => d.store.range({ key: new Uint8Array(4097) })).toThrow(
      expect.objectContaining({ code: "KEY_TOO_LARGE" }),
    );
  });

  test("prefix deletion removes exactly the prefix, with one revision", () => {
    const d = seeded();
    const r = d.ok({ op: "del", key: b("ab"), prefix: true }) as DelResult;
    expect(r).toEqual({ op: "del", revision: 8, deleted: 3 });
    expect(keysOf(d.store.range({ key: new Uint8Array(0), prefix: true }))).toEqual(["a", "b", "ba", "c"]);
    const r2 = d.ok({ op: "del", key: b("b"), rangeEnd: b("c") }) as DelResult;
    expect(r2).toEqual({ op: "del", revision: 9, deleted: 2 });
    const all = d.ok({ op: "del", key: new Uint8Array(0), prefix: true }) as DelResult;
    expect(all).toEqual({ op: "del", revision: 10, deleted: 2 });
    expect(d.store.stats().keys).toBe(0);
    d.store.checkInvariants();
  });
});

describe("transactions", () => {
  function txnOk(d: Driver, compare: Compare[]): TxnResult {
    return d.ok({
      op: "txn",
      compare,
      success: [{ op: "range", key: b("k") }],
      failure: [{ op: "range", key: b("k") }],
    }) as TxnResult;
  }

  test("every compare target and result", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("other"), value: b("x") }); // rev 1
    d.ok({ op: "put", key: b("k"), value: b("m") }); // rev 2: create 2
    d.ok({ op: "put", key: b("k"), value: b("m") }); // rev 3: mod 3, version 2
    const lease = d.ok({ op: "leaseGrant", id: 7, ttlMs: 1000, now: 0 });
    expect(lease).toMatchObject({ id: 7 });
    d.ok({ op: "put", key: b("k"), value: b("m"), lease: 7 }); // rev 4: mod 4, version 3, lease 7

    const cases: Array<[Compare, boolean]> = [
      [{ key: b("k"), target: "value", result: "equal", value: b("m") }, true],
      [{ key: b("k"), target: "value", result: "equal", value: b("n") }, false],
      [{ key: b("k"), target: "value", result: "not_equal", value: b("n") }, true],
      [{ key: b("k"), target: "value", result: "not_equal", value: b("m") }, false],
      [{ key: b("k"), target: "value", result: "greater", value: b("l") }, true],
      [{ key: b("k"), target: "value", result: "greater", value: b("m\0") }, false],
      [{ key: b("k"), target: "value", result: "less", value: b("m\0") }, true],
      [{ key: b("k"), target: "value", result: "less", value: b("m") }, false],
      [{ key: b("k"), target: "version", result: "equal", number: 3 }, true],
      [{ key: b("k"), target: "version", result: "greater", number: 2 }, true],
      [{ key: b("k"), target: "version", result: "less", number: 3 }, false],
      [{ key: b("k"), target: "version", result: "not_equal", number: 3 }, false],
      [{ key: b("k"), target: "create", result: "equal", number: 2 }, true],
      [{ key: b("k"), target: "create", result: "less", number: 3 }, true],
      [{ key: b("k"), target: "create", result: "greater", number: 2 }, false],
      [{ key: b("k"), target: "mod", result: "equal", number: 4 }, true],
      [{ key: b("k"), target: "mod", result: "greater", number: 3 }, true],
      [{ key: b("k"), target: "mod", result: "not_equal", number: 4 }, false],
      [{ key: b("k"), target: "lease", result: "equal", number: 7 }, true],
      [{ key: b("k"), target: "lease", result: "equal", number: 0 }, false],
      [{ key: b("k"), target: "lease", result: "less", number: 8 }, true],
      [{ key: b("k"), target: "exists" }, true],
      [{ key: b("k"), target: "absent" }, false],
      // absent keys: numbers are 0, value compares are false
      [{ key: b("nope"), target: "exists" }, false],
      [{ key: b("nope"), target: "absent" }, true],
      [{ key: b("nope"), target: "version", result: "equal", number: 0 }, true],
      [{ key: b("nope"), target: "create", result: "equal", number: 0 }, true],
      [{ key: b("nope"), target: "mod", result: "less", number: 1 }, true],
      [{ key: b("nope"), target: "lease", result: "equal", number: 0 }, true],
      [{ key: b("nope"), target: "value", result: "equal", value: b("") }, false],
      [{ key: b("nope"), target: "value", result: "not_equal", value: b("m") }, false],
    ];
    for (const [compare, expected] of cases) {
      const r = txnOk(d, [compare]);
      if (r.succeeded !== expected) throw new Error(`compare ${JSON.stringify({ ...compare, key: "k" })}`);
      expect(r.succeeded).toBe(expected);
    }
    // All compares must hold.
    expect(txnOk(d, [cases[0]![0], cases[1]![0]]).succeeded).toBe(false);
    expect(txnOk(d, [cases[0]![0], cases[2]![0]]).succeeded).toBe(true);
    expect(txnOk(d, []).succeeded).toBe(true);
    expect(d.store.revision).toBe(4); // read-only txns change nothing
  });

  test("failure branch runs when a guard fails; one revision for all changes", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("a"), value: b("1") }); // rev 1
    d.ok({ op: "put", key: b("gone"), value: b("1") }); // rev 2
    const r = d.ok({
      op: "txn",
      compare: [{ key: b("a"), target: "value", result: "equal", value: b("WRONG") }],
      success: [{ op: "put", key: b("s"), value: b("success") }],
      failure: [
        { op: "put", key: b("f1"), value: b("x") },
        { op: "put", key: b("f2"), value: b("y") },
        { op: "del", key: b("gone") },
        { op: "range", key: b("f"), prefix: true },
      ],
    }) as TxnResult;
    expect(r.succeeded).toBe(false);
    expect(r.revision).toBe(3);
    expect(r.results.map((x) => x.op)).toEqual(["put", "put", "del", "range"]);
    for (const x of r.results) expect(x.revision).toBe(3);
    expect((r.results[2] as DelResult).deleted).toBe(1);
    // later ops see earlier ops' effects
    expect(keysOf(r.results[3] as RangeResult)).toEqual(["f1", "f2"]);
    expect(d.store.get(b("s"))).toBeNull();
    expect(d.store.get(b("f1"))!.modRevision).toBe(3);
    expect(d.store.get(b("f2"))!.modRevision).toBe(3);
    expect(d.store.get(b("gone"))).toBeNull();
    expect(d.store.revision).toBe(3);
  });

  test("a txn whose chosen branch changes nothing keeps the revision", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("a"), value: b("1") });
    const r = d.ok({
      op: "txn",
      compare: [],
      success: [{ op: "del", key: b("missing") }, { op: "range", key: b("a") }],
      failure: [],
    }) as TxnResult;
    expect(r.revision).toBe(1);
    expect(d.store.revision).toBe(1);
  });

  test("a txn with an unknown lease fails as a whole and changes nothing", () => {
    const d = new Driver();
    const code = d.err({
      op: "txn",
      compare: [],
      success: [
        { op: "put", key: b("a"), value: b("1") },
        { op: "put", key: b("b"), value: b("2"), lease: 99 },
      ],
      failure: [],
    });
    expect(code).toBe("LEASE_NOT_FOUND");
    expect(d.store.get(b("a"))).toBeNull();
    expect(d.store.revision).toBe(0);
  });

  test("casCommand: absent, equal, mismatch", () => {
    const d = new Driver();
    const first = d.ok(casCommand(b("lock"), "absent", b("me"))) as TxnResult;
    expect(first.succeeded).toBe(true);
    const again = d.ok(casCommand(b("lock"), "absent", b("you"))) as TxnResult;
    expect(again.succeeded).toBe(false);
    const current = again.results[0] as RangeResult;
    expect(str(current.kvs[0]!.value)).toBe("me");
    const swap = d.ok(casCommand(b("lock"), b("me"), b("next"))) as TxnResult;
    expect(swap.succeeded).toBe(true);
    expect(str(d.store.get(b("lock"))!.value)).toBe("next");
    const stale = d.ok(casCommand(b("lock"), b("me"), b("x"))) as TxnResult;
    expect(stale.succeeded).toBe(false);
    expect(str(d.store.get(b("lock"))!.value)).toBe("next");
    expect(d.store.revision).toBe(2);
  });
});

describe("applied index", () => {
  test("entries at or below appliedIndex are ignored", () => {
    const store = new KvStore();
    expect(store.apply(5, { op: "put", key: b("a"), value: b("1") })).not.toBeNull();
    expect(store.appliedIndex).toBe(5);
    expect(store.apply(5, { op: "put", key: b("a"), value: b("2") })).toBeNull();
    expect(store.apply(3, { op: "put", key: b("a"), value: b("3") })).toBeNull();
    expect(str(store.get(b("a"))!.value)).toBe("1");
    store.markApplied(9);
    expect(store.appliedIndex).toBe(9);
    expect(store.apply(8, { op: "put", key: b("a"), value: b("4") })).toBeNull();
    expect(store.revision).toBe(1);
  });

  test("apply never throws on a bad command; it returns an error result", () => {
    const d = new Driver();
    const bad: unknown[] = [
      null,
      42,
      { op: "explode" },
      { op: "put", key: "not bytes", value: b("v") },
      { op: "put", key: b("k") },
      { op: "put", key: new Uint8Array(0), value: b("v") },
      { op: "put", key: b("k"), value: new Uint8Array(1024 * 1024 + 1) },
      { op: "txn", compare: "x", success: [], failure: [] },
      { op: "leaseGrant", id: -1, ttlMs: 10, now: 0 },
    ];
    for (const cmd of bad) {
      const result = d.store.apply(++d.index, cmd as never);
      expect(result).not.toBeNull();
      expect(result!.ok).toBe(false);
    }
    expect(d.store.revision).toBe(0);
    expect(d.store.appliedIndex).toBe(bad.length);
  });

  test("stats", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("a"), value: b("12345") });
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 10, now: 0 });
    const session = d.ok({ op: "sessionRegister" }) as SessionRegisterResult;
    d.ok({ op: "put", key: b("b"), value: b("x") }, { now: 1, clientId: session.sessionId, seq: 1 });
    const stats = d.store.stats();
    expect(stats).toMatchObject({ keys: 2, revision: 2, leases: 1, sessions: 1, appliedIndex: 4 });
    expect(stats.approxBytes).toBeGreaterThan(8);
  });
});
