import { describe, expect, test } from "bun:test";
import { KvStore, encodeLogCommand, type LogCommand, type PutResult, type SessionRegisterResult } from "../../src/kv";
import { Driver, b, str } from "./helpers";

/** Register a session through the log (at log time `now`); returns its id. */
function register(d: Driver, now = 0): string {
  return (d.ok({ op: "sessionRegister" }, { now }) as SessionRegisterResult).sessionId;
}

describe("exactly-once client sessions", () => {
  test("a session id is the index of the entry that registered it: unique across the cluster's life", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("k"), value: b("1") });
    expect(d.ok({ op: "sessionRegister" }, { now: 0 })).toEqual({ op: "sessionRegister", sessionId: "s2", ttlMs: 600_000 });
    expect(register(d)).toBe("s3");
    expect(d.store.sessionInfo("s2")).toEqual({ seq: 0, lastSeen: 0 });
  });

  test("a request for a session that was never registered is refused with SESSION_EXPIRED, not executed", () => {
    const d = new Driver();
    expect(d.err({ op: "put", key: b("k"), value: b("1") }, { clientId: "c", seq: 1, now: 0 })).toBe("SESSION_EXPIRED");
    expect(d.store.get(b("k"))).toBeNull();
    expect(d.store.revision).toBe(0);
  });

  test("a duplicate seq returns the cached result and changes nothing", () => {
    const d = new Driver();
    const [c, other] = [register(d), register(d)];
    const first = d.apply({ op: "put", key: b("k"), value: b("1") }, { clientId: c, seq: 1, now: 10 });
    expect(first).toEqual({ ok: true, result: { op: "put", revision: 1 } });
    // another client writes in between
    d.ok({ op: "put", key: b("k"), value: b("other") }, { clientId: other, seq: 1, now: 11 });
    const retry = d.apply({ op: "put", key: b("k"), value: b("1") }, { clientId: c, seq: 1, now: 12 });
    expect(retry).toEqual(first);
    expect(d.store.revision).toBe(2);
    expect(str(d.store.get(b("k"))!.value)).toBe("other");
    expect(d.store.get(b("k"))!.version).toBe(2);
  });

  test("the cached result is that of the same seq even for a different command", () => {
    const d = new Driver();
    const c = register(d);
    d.ok({ op: "put", key: b("a"), value: b("1") }, { clientId: c, seq: 4, now: 0 });
    const dup = d.apply({ op: "del", key: b("a") }, { clientId: c, seq: 4, now: 0 });
    expect(dup).toEqual({ ok: true, result: { op: "put", revision: 1 } });
    expect(d.store.get(b("a"))).not.toBeNull();
  });

  test("an older seq gets STALE_SEQUENCE without applying", () => {
    const d = new Driver();
    const c = register(d);
    d.ok({ op: "put", key: b("k"), value: b("1") }, { clientId: c, seq: 1, now: 0 });
    d.ok({ op: "put", key: b("k"), value: b("2") }, { clientId: c, seq: 2, now: 0 });
    expect(d.err({ op: "put", key: b("k"), value: b("1") }, { clientId: c, seq: 1, now: 0 })).toBe("STALE_SEQUENCE");
    expect(str(d.store.get(b("k"))!.value)).toBe("2");
    expect(d.store.revision).toBe(2);
    // the session still answers seq 2 from cache, and seq 3 applies
    expect(d.apply({ op: "put", key: b("k"), value: b("X") }, { clientId: c, seq: 2, now: 0 })).toEqual({
      ok: true,
      result: { op: "put", revision: 2, prev: expect.anything() },
    });
    d.ok({ op: "put", key: b("k"), value: b("3") }, { clientId: c, seq: 3, now: 0 });
    expect(d.store.revision).toBe(3);
  });

  test("a failed command's result is cached too", () => {
    const d = new Driver();
    const c = register(d);
    expect(d.err({ op: "leaseRevoke", id: 1 }, { clientId: c, seq: 1, now: 0 })).toBe("LEASE_NOT_FOUND");
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 10, now: 0 });
    // the retry does not revoke the lease that now exists
    expect(d.err({ op: "leaseRevoke", id: 1 }, { clientId: c, seq: 1, now: 0 })).toBe("LEASE_NOT_FOUND");
    expect(d.store.leaseInfo(1)).not.toBeNull();
  });

  test("a retry after its session expired is refused with SESSION_EXPIRED, not executed a second time", () => {
    const d = new Driver();
    d.ok({ op: "sessionTtl", ttlMs: 1000 }, { now: 0 });
    const old = register(d, 0);
    const busy = register(d, 0);
    d.ok({ op: "put", key: b("counter"), value: b("1") }, { clientId: old, seq: 1, now: 0 });
    d.ok({ op: "put", key: b("k"), value: b("2") }, { clientId: busy, seq: 1, now: 600 });
    d.ok({ op: "put", key: b("k"), value: b("3") }, { now: 1000 }); // idle exactly ttl: kept
    expect(d.store.sessionInfo(old)).toEqual({ seq: 1, lastSeen: 0 });
    d.ok({ op: "put", key: b("k"), value: b("4") }, { now: 1001 });
    expect(d.store.sessionInfo(old)).toBeNull();
    expect(d.store.sessionInfo(busy)).toEqual({ seq: 1, lastSeen: 600 });
    expect(d.store.stats().sessions).toBe(1);
    const revision = d.store.revision;
    expect(d.err({ op: "put", key: b("counter"), value: b("1") }, { clientId: old, seq: 1, now: 1002 })).toBe("SESSION_EXPIRED");
    expect(d.store.revision).toBe(revision);
    expect(d.store.get(b("counter"))!.version).toBe(1);
  });

  test("the session TTL is replicated state: it comes through the log and travels in snapshots", () => {
    const d = new Driver();
    expect(d.store.sessionTtlMs).toBe(600_000);
    expect(d.err({ op: "sessionTtl", ttlMs: 5 }, { now: 0 })).toBe("BAD_COMMAND"); // below the minimum
    d.ok({ op: "sessionTtl", ttlMs: 2000 }, { now: 0 });
    const c = register(d, 0);
    const restored = KvStore.restore(d.store.snapshot());
    expect(restored.sessionTtlMs).toBe(2000);
    // both expire the session at the same point of the log, whatever the node
    for (const store of [d.store, restored]) {
      expect(store.apply(d.index + 1, { op: "put", key: b("x"), value: b("1") }, { now: 2001 })).toMatchObject({ ok: true });
      expect(store.sessionInfo(c)).toBeNull();
    }
    expect(restored.snapshot()).toEqual(d.store.snapshot());
  });

  test("a client process that restarts registers a new session: its seq 1 is never taken for the old one's", () => {
    const d = new Driver();
    const first = register(d);
    d.ok({ op: "put", key: b("k"), value: b("from the first process") }, { clientId: first, seq: 1, now: 0 });
    const second = register(d);
    expect(second).not.toBe(first);
    const r = d.ok({ op: "put", key: b("k"), value: b("from the second process") }, { clientId: second, seq: 1, now: 0 }) as PutResult;
    expect(r.revision).toBe(2);
    expect(str(d.store.get(b("k"))!.value)).toBe("from the second process");
  });

  test("a duplicate keeps the session alive; a clock going backwards does not", () => {
    const d = new Driver();
    d.ok({ op: "sessionTtl", ttlMs: 1000 }, { now: 0 });
    const c = register(d, 0);
    d.ok({ op: "put", key: b("k"), value: b("1") }, { clientId: c, seq: 1, now: 0 });
    d.apply({ op: "put", key: b("k"), value: b("1") }, { clientId: c, seq: 1, now: 900 });
    d.ok({ op: "put", key: b("x"), value: b("1") }, { now: 100 }); // an older leader clock
    d.ok({ op: "put", key: b("x"), value: b("1") }, { now: 1800 });
    expect(d.store.sessionInfo(c)).toEqual({ seq: 1, lastSeen: 900 });
    d.ok({ op: "put", key: b("x"), value: b("1") }, { now: 1901 });
    expect(d.store.sessionInfo(c)).toBeNull();
  });

  test("sessions survive snapshot/restore: a retry after restore is deduplicated", () => {
    const d = new Driver();
    const [c, c2, idle] = [register(d), register(d), register(d)];
    const first = d.apply({ op: "put", key: b("k"), value: b("1") }, { clientId: c, seq: 7, now: 5 });
    d.ok({ op: "put", key: b("k"), value: b("2") }, { clientId: c2, seq: 1, now: 6 });
    const restored = KvStore.restore(d.store.snapshot());
    expect(restored.sessionInfo(idle)).toEqual({ seq: 0, lastSeen: 0 }); // registered, nothing applied yet
    const retry = restored.apply(d.index + 1, { op: "put", key: b("k"), value: b("1") }, { clientId: c, seq: 7, now: 7 });
    expect(retry).toEqual(first);
    expect(str(restored.get(b("k"))!.value)).toBe("2");
    expect(restored.revision).toBe(2);
    expect(
      restored.apply(d.index + 2, { op: "put", key: b("k"), value: b("1") }, { clientId: c, seq: 6, now: 8 }),
    ).toMatchObject({ ok: false, error: { code: "STALE_SEQUENCE" } });
  });

  test("applyEntry decodes the log form, dedupes and tolerates junk", () => {
    const store = new KvStore();
    expect(store.applyEntry(1, encodeLogCommand({ cmd: { op: "sessionRegister" }, now: 0 }))).toMatchObject({
      ok: true,
      result: { sessionId: "s1" },
    });
    const log: LogCommand = { cmd: { op: "put", key: b("k"), value: b("v") }, clientId: "s1", seq: 1, now: 3 };
    const entry = encodeLogCommand(log);
    expect(store.applyEntry(2, entry)).toEqual({ ok: true, result: { op: "put", revision: 1 } });
    expect(store.applyEntry(2, entry)).toBeNull(); // replayed index
    expect(store.applyEntry(3, entry)).toEqual({ ok: true, result: { op: "put", revision: 1 } }); // retried proposal
    expect(store.revision).toBe(1);
    expect(store.applyEntry(4, new Uint8Array([0xff, 0x00, 0x13]))).toMatchObject({
      ok: false,
      error: { code: "BAD_COMMAND" },
    });
    expect(store.applyEntry(5, new Uint8Array(0))).toBeNull(); // no-op entry
    expect(store.appliedIndex).toBe(5);
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
