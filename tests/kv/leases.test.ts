import { describe, expect, test } from "bun:test";
import {
  extendAllLeasesCommand,
  leaseExpireCommand,
  type LeaseExpireResult,
  type LeaseGrantResult,
  type LeaseRevokeResult,
  type PutResult,
} from "../../src/kv";
import { Driver, b, str } from "./helpers";

describe("leases", () => {
  test("grant with explicit and automatic ids; duplicate is LEASE_EXISTS", () => {
    const d = new Driver();
    expect(d.ok({ op: "leaseGrant", id: 5, ttlMs: 1000, now: 100 })).toEqual({
      op: "leaseGrant",
      id: 5,
      ttlMs: 1000,
      expiresAt: 1100,
    });
    const auto = d.ok({ op: "leaseGrant", id: 0, ttlMs: 10, now: 0 }) as LeaseGrantResult;
    expect(auto.id).toBe(6);
    const auto2 = d.ok({ op: "leaseGrant", id: 0, ttlMs: 10, now: 0 }) as LeaseGrantResult;
    expect(auto2.id).toBe(7);
    expect(d.err({ op: "leaseGrant", id: 5, ttlMs: 10, now: 0 })).toBe("LEASE_EXISTS");
    expect(d.store.revision).toBe(0); // lease bookkeeping alone does not bump the revision
  });

  test("attach keys, keepalive, revoke deletes attached keys only", () => {
    const d = new Driver();
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 1000, now: 0 });
    expect(d.err({ op: "put", key: b("a"), value: b("1"), lease: 2 })).toBe("LEASE_NOT_FOUND");
    d.ok({ op: "put", key: b("a"), value: b("1"), lease: 1 }); // rev 1
    d.ok({ op: "put", key: b("b"), value: b("2"), lease: 1 }); // rev 2
    d.ok({ op: "put", key: b("c"), value: b("3") }); // rev 3
    expect(d.store.get(b("a"))!.lease).toBe(1);
    expect(d.store.leaseInfo(1)!.keys.map((k) => str(k))).toEqual(["a", "b"]);

    // a put without lease detaches the key
    d.ok({ op: "put", key: b("b"), value: b("2b") }); // rev 4
    expect(d.store.get(b("b"))!.lease).toBe(0);
    expect(d.store.leaseInfo(1)!.keys.map((k) => str(k))).toEqual(["a"]);

    expect(d.ok({ op: "leaseKeepAlive", id: 1, now: 500 })).toEqual({
      op: "leaseKeepAlive",
      id: 1,
      ttlMs: 1000,
      expiresAt: 1500,
    });
    expect(d.err({ op: "leaseKeepAlive", id: 9, now: 500 })).toBe("LEASE_NOT_FOUND");

    const revoked = d.ok({ op: "leaseRevoke", id: 1 }) as LeaseRevokeResult;
    expect(revoked).toEqual({ op: "leaseRevoke", revision: 5, deleted: 1 });
    expect(d.store.get(b("a"))).toBeNull();
    expect(d.store.get(b("b"))).not.toBeNull();
    expect(d.store.get(b("c"))).not.toBeNull();
    expect(d.store.leaseInfo(1)).toBeNull();
    expect(d.err({ op: "leaseRevoke", id: 1 })).toBe("LEASE_NOT_FOUND");
    d.store.checkInvariants();
  });

  test("revoking a lease without keys does not bump the revision", () => {
    const d = new Driver();
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 1000, now: 0 });
    expect(d.ok({ op: "leaseRevoke", id: 1 })).toEqual({ op: "leaseRevoke", revision: 0, deleted: 0 });
  });

  test("moving a key between leases", () => {
    const d = new Driver();
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 1000, now: 0 });
    d.ok({ op: "leaseGrant", id: 2, ttlMs: 1000, now: 0 });
    d.ok({ op: "put", key: b("k"), value: b("1"), lease: 1 });
    d.ok({ op: "put", key: b("k"), value: b("2"), lease: 2 });
    expect(d.store.leaseInfo(1)!.keys).toEqual([]);
    d.ok({ op: "leaseRevoke", id: 1 });
    expect(d.store.get(b("k"))).not.toBeNull();
    d.ok({ op: "leaseRevoke", id: 2 });
    expect(d.store.get(b("k"))).toBeNull();
  });

  test("expiredLeases and leaseExpire delete expired leases and their keys, once", () => {
    const d = new Driver();
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 100, now: 0 }); // expires 100
    d.ok({ op: "leaseGrant", id: 2, ttlMs: 300, now: 0 }); // expires 300
    d.ok({ op: "leaseGrant", id: 3, ttlMs: 50, now: 0 }); // expires 50
    d.ok({ op: "put", key: b("one"), value: b("x"), lease: 1 });
    d.ok({ op: "put", key: b("three-a"), value: b("x"), lease: 3 });
    d.ok({ op: "put", key: b("three-b"), value: b("x"), lease: 3 });
    d.ok({ op: "put", key: b("two"), value: b("x"), lease: 2 });
    const revisionBefore = d.store.revision;

    expect(d.store.expiredLeases(49)).toEqual([]);
    expect(d.store.expiredLeases(100)).toEqual([1, 3]);
    expect(d.store.expiredLeases(100, 1)).toEqual([1]);

    const r = d.ok(leaseExpireCommand([1, 3], 100)) as LeaseExpireResult;
    expect(r).toEqual({ op: "leaseExpire", revision: revisionBefore + 1, expired: [1, 3], deleted: 3 });
    expect(d.store.get(b("one"))).toBeNull();
    expect(d.store.get(b("three-a"))).toBeNull();
    expect(d.store.get(b("two"))).not.toBeNull();
    expect(d.store.leaseInfo(1)).toBeNull();
    expect(d.store.leaseInfo(2)).not.toBeNull();

    // proposing it again (e.g. a retried proposal) changes nothing
    const again = d.ok(leaseExpireCommand([1, 3], 100)) as LeaseExpireResult;
    expect(again).toEqual({ op: "leaseExpire", revision: revisionBefore + 1, expired: [], deleted: 0 });
    d.store.checkInvariants();
  });

  test("a lease kept alive after the leader looked is not expired", () => {
    const d = new Driver();
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 100, now: 0 });
    d.ok({ op: "put", key: b("k"), value: b("v"), lease: 1 });
    const ids = d.store.expiredLeases(150);
    expect(ids).toEqual([1]);
    d.ok({ op: "leaseKeepAlive", id: 1, now: 140 }); // committed before the expire entry
    const r = d.ok(leaseExpireCommand(ids, 150)) as LeaseExpireResult;
    expect(r.expired).toEqual([]);
    expect(d.store.get(b("k"))).not.toBeNull();
  });

  test("leaseRefreshAll pushes every expiry to now + ttl (new leader)", () => {
    const d = new Driver();
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 100, now: 0 });
    d.ok({ op: "leaseGrant", id: 2, ttlMs: 1000, now: 0 });
    d.ok({ op: "put", key: b("k"), value: b("v"), lease: 1 });
    expect(d.store.expiredLeases(5000)).toEqual([1, 2]);
    expect(d.ok(extendAllLeasesCommand(5000))).toEqual({ op: "leaseRefreshAll", leases: 2 });
    expect(d.store.leaseInfo(1)!.expiresAt).toBe(5100);
    expect(d.store.leaseInfo(2)!.expiresAt).toBe(6000);
    expect(d.store.expiredLeases(5099)).toEqual([]);
    expect(d.store.expiredLeases(5100)).toEqual([1]);
    expect(d.store.get(b("k"))).not.toBeNull();
  });

  test("deleting a leased key detaches it", () => {
    const d = new Driver();
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 100, now: 0 });
    d.ok({ op: "put", key: b("k"), value: b("v"), lease: 1 });
    d.ok({ op: "del", key: b("k") });
    expect(d.store.leaseInfo(1)!.keys).toEqual([]);
    const put = d.ok({ op: "put", key: b("k"), value: b("v2") }) as PutResult;
    expect(put.prev).toBeUndefined();
    expect(d.ok({ op: "leaseRevoke", id: 1 })).toMatchObject({ deleted: 0 });
    expect(d.store.get(b("k"))).not.toBeNull();
    d.store.checkInvariants();
  });
});
