import { describe, expect, test } from "bun:test";
import { KvStore, encodeLogCommand, type PutResult } from "../../src/kv";
import { Driver, b, str } from "./helpers";

describe("exactly-once client sessions", () => {
  test("a duplicate seq returns the cached result and changes nothing", () => {
    const d = new Driver();
    const first = d.apply({ op: "put", key: b("k"), value: b("1") }, { clientId: "c", seq: 1, now: 10 });
    expect(first).toEqual({ ok: true, result: { op: "put", revision: 1 } });
    // another client writes in between
    d.ok({ op: "put", key: b("k"), value: b("other") }, { clientId: "d", seq: 1, now: 11 });
    const retry = d.apply({ op: "put", key: b("k"), value: b("1") }, { clientId: "c", seq: 1, now: 12 });
    expect(retry).toEqual(first);
    expect(d.store.revision).toBe(2);
    expect(str(d.store.get(b("k"))!.value)).toBe("other");
    expect(d.store.get(b("k"))!.version).toBe(2);
  });

  test("the cached result is that of the same seq even for a different command", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("a"), value: b("1") }, { clientId: "c", seq: 4, now: 0 });
    const dup = d.apply({ op: "del", key: b("a") }, { clientId: "c", seq: 4, now: 0 });
    expect(dup).toEqual({ ok: true, result: { op: "put", revision: 1 } });
    expect(d.store.get(b("a"))).not.toBeNull();
  });

  test("an older seq gets STALE_SEQUENCE without applying", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("k"), value: b("1") }, { clientId: "c", seq: 1, now: 0 });
    d.ok({ op: "put", key: b("k"), value: b("2") }, { clientId: "c", seq: 2, now: 0 });
    expect(d.err({ op: "put", key: b("k"), value: b("1") }, { clientId: "c", seq: 1, now: 0 })).toBe(
      "STALE_SEQUENCE",
    );
    expect(str(d.store.get(b("k"))!.value)).toBe("2");
    expect(d.store.revision).toBe(2);
    // the session still answers seq 2 from cache, and seq 3 applies
    expect(d.apply({ op: "put", key: b("k"), value: b("X") }, { clientId: "c", seq: 2, now: 0 })).toEqual({
      ok: true,
      result: { op: "put", revision: 2, prev: expect.anything() },
    });
    d.ok({ op: "put", key: b("k"), value: b("3") }, { clientId: "c", seq: 3, now: 0 });
    expect(d.store.revision).toBe(3);
  });

  test("a failed command's result is cached too", () => {
    const d = new Driver();
    expect(d.err({ op: "leaseRevoke", id: 1 }, { clientId: "c", seq: 1, now: 0 })).toBe("LEASE_NOT_FOUND");
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 10, now: 0 });
    // the retry does not revoke the lease that now exists
    expect(d.err({ op: "leaseRevoke", id: 1 }, { clientId: "c", seq: 1, now: 0 })).toBe("LEASE_NOT_FOUND");
    expect(d.store.leaseInfo(1)).not.toBeNull();
  });

  test("sessions idle longer than sessionTtlMs expire, by the clock of applied commands", () => {
    const d = new Driver(new KvStore({ sessionTtlMs: 1000 }));
    d.ok({ op: "put", key: b("k"), value: b("1") }, { clientId: "old", seq: 1, now: 0 });
    d.ok({ op: "put", key: b("k"), value: b("2") }, { clientId: "busy", seq: 1, now: 600 });
    d.ok({ op: "put", key: b("k"), value: b("3") }, { now: 1000 }); // idle exactly ttl: kept
    expect(d.store.sessionInfo("old")).toEqual({ seq: 1, lastSeen: 0 });
    d.ok({ op: "put", key: b("k"), value: b("4") }, { now: 1001 });
    expect(d.store.sessionInfo("old")).toBeNull();
    expect(d.store.sessionInfo("busy")).toEqual({ seq: 1, lastSeen: 600 });
    expect(d.store.stats().sessions).toBe(1);
    // a retry after expiry is applied again (the documented limit of the session table)
    const r = d.ok({ op: "put", key: b("k"), value: b("1") }, { clientId: "old", seq: 1, now: 1002 }) as PutResult;
    expect(r.revision).toBe(5);
  });

  test("a duplicate keeps the session alive; a clock going backwards does not", () => {
    const d = new Driver(new KvStore({ sessionTtlMs: 1000 }));
    d.ok({ op: "put", key: b("k"), value: b("1") }, { clientId: "c", seq: 1, now: 0 });
    d.apply({ op: "put", key: b("k"), value: b("1") }, { clientId: "c", seq: 1, now: 900 });
    d.ok({ op: "put", key: b("x"), value: b("1") }, { now: 100 }); // an older leader clock
    d.ok({ op: "put", key: b("x"), value: b("1") }, { now: 1800 });
    expect(d.store.sessionInfo("c")).toEqual({ seq: 1, lastSeen: 900 });
    d.ok({ op: "put", key: b("x"), value: b("1") }, { now: 1901 });
    expect(d.store.sessionInfo("c")).toBeNull();
  });

  test("sessions survive snapshot/restore: a retry after restore is deduplicated", () => {
    const d = new Driver();
    const first = d.apply({ op: "put", key: b("k"), value: b("1") }, { clientId: "c", seq: 7, now: 5 });
    d.ok({ op: "put", key: b("k"), value: b("2") }, { clientId: "c2", seq: 1, now: 6 });
    const restored = KvStore.restore(d.store.snapshot());
    const retry = restored.apply(d.index + 1, { op: "put", key: b("k"), value: b("1") }, {
      clientId: "c",
      seq: 7,
      now: 7,
    });
    expect(retry).toEqual(first);
    expect(str(restored.get(b("k"))!.value)).toBe("2");
    expect(restored.revision).toBe(2);
    expect(
      restored.apply(d.index + 2, { op: "put", key: b("k"), value: b("1") }, { clientId: "c", seq: 6, now: 8 }),
    ).toMatchObject({ ok: false, error: { code: "STALE_SEQUENCE" } });
  });

  test("applyEntry decodes the log form, dedupes and tolerates junk", () => {
    const store = new KvStore();
    const entry = encodeLogCommand({ cmd: { op: "put", key: b("k"), value: b("v") }, clientId: "c", seq: 1, now: 3 });
    expect(store.applyEntry(1, entry)).toEqual({ ok: true, result: { op: "put", revision: 1 } });
    expect(store.applyEntry(1, entry)).toBeNull(); // replayed index
    expect(store.applyEntry(2, entry)).toEqual({ ok: true, result: { op: "put", revision: 1 } }); // retried proposal
    expect(store.revision).toBe(1);
    expect(store.applyEntry(3, new Uint8Array([0xff, 0x00, 0x13]))).toMatchObject({
      ok: false,
      error: { code: "BAD_COMMAND" },
    });
    expect(store.applyEntry(4, new Uint8Array(0))).toBeNull(); // no-op entry
    expect(store.appliedIndex).toBe(4);
    expect(store.revision).toBe(1);
  });

  test("bad meta is rejected without applying", () => {
    const d = new Driver();
    expect(d.err({ op: "put", key: b("k"), value: b("v") }, { clientId: "c", now: 0 })).toBe("BAD_COMMAND");
    expect(d.err({ op: "put", key: b("k"), value: b("v") }, { clientId: "c", seq: 0, now: 0 })).toBe("BAD_COMMAND");
    expect(d.err({ op: "put", key: b("k"), value: b("v") }, { now: Number.NaN })).toBe("BAD_COMMAND");
    expect(d.store.revision).toBe(0);
  });
});
