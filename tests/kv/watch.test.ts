import { describe, expect, test } from "bun:test";
import { KvStore, type WatchEvent } from "../../src/kv";
import { Driver, b, str } from "./helpers";

function brief(events: WatchEvent[] | "compacted") {
  if (events === "compacted") return events;
  return events.map((e) => `${e.type} ${str(e.key)}@${e.modRevision}${e.value ? `=${str(e.value)}` : ""}`);
}

describe("watch history", () => {
  test("events carry value, revisions, version and previous value", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("k"), value: b("1") });
    d.ok({ op: "put", key: b("k"), value: b("2") });
    d.ok({ op: "del", key: b("k") });
    const events = d.store.eventsSince(1, { key: b("k") });
    if (events === "compacted") throw new Error("unexpected");
    expect(events.length).toBe(3);
    expect(events[0]).toEqual({
      type: "put",
      key: b("k"),
      value: b("1"),
      modRevision: 1,
      createRevision: 1,
      version: 1,
      lease: 0,
    });
    expect(events[1]).toEqual({
      type: "put",
      key: b("k"),
      value: b("2"),
      modRevision: 2,
      createRevision: 1,
      version: 2,
      lease: 0,
      prevValue: b("1"),
    });
    expect(events[2]).toEqual({
      type: "delete",
      key: b("k"),
      modRevision: 3,
      createRevision: 0,
      version: 0,
      lease: 0,
      prevValue: b("2"),
    });
  });

  test("eventsSince filters by key, range and prefix, from a revision (inclusive)", () => {
    const d = new Driver();
    d.ok({ op: "put", key: b("a/1"), value: b("x") }); // 1
    d.ok({ op: "put", key: b("b/1"), value: b("x") }); // 2
    d.ok({ op: "put", key: b("a/2"), value: b("x") }); // 3
    d.ok({ op: "del", key: b("a/"), prefix: true }); // 4: two deletes
    expect(brief(d.store.eventsSince(1, { key: b("a/"), prefix: true }))).toEqual([
      "put a/1@1=x",
      "put a/2@3=x",
      "delete a/1@4",
      "delete a/2@4",
    ]);
    expect(brief(d.store.eventsSince(3, { key: b("a/"), prefix: true }))).toEqual([
      "put a/2@3=x",
      "delete a/1@4",
      "delete a/2@4",
    ]);
    expect(brief(d.store.eventsSince(1, { key: b("b/1") }))).toEqual(["put b/1@2=x"]);
    expect(brief(d.store.eventsSince(1, { key: b("a/2"), rangeEnd: b("c") }))).toEqual([
      "put b/1@2=x",
      "put a/2@3=x",
      "delete a/2@4",
    ]);
    expect(d.store.eventsSince(1, { key: new Uint8Array(0), prefix: true })).toHaveLength(5);
    expect(d.store.eventsSince(5, { key: new Uint8Array(0), prefix: true })).toEqual([]);
    expect(d.store.eventsSince(0, { key: b("b/1") })).toHaveLength(1);
  });

  test("a bounded history reports 'compacted' and never splits a revision", () => {
    const d = new Driver(new KvStore({ historyMaxEvents: 5 }));
    for (let i = 1; i <= 4; i++) d.ok({ op: "put", key: b(`k${i}`), value: b("v") }); // revs 1..4
    expect(d.store.compactRevision).toBe(1);
    expect(d.store.eventsSince(1, { key: b("k"), prefix: true })).toHaveLength(4);
    d.ok({
      op: "txn",
      compare: [],
      success: [
        { op: "put", key: b("t1"), value: b("v") },
        { op: "put", key: b("t2"), value: b("v") },
      ],
      failure: [],
    }); // rev 5 with two events: 6 events > 5, so revision 1 is dropped
    expect(d.store.compactRevision).toBe(2);
    expect(d.store.eventsSince(1, { key: b("k1") })).toBe("compacted");
    expect(brief(d.store.eventsSince(2, { key: new Uint8Array(0), prefix: true }))).toEqual([
      "put k2@2=v",
      "put k3@3=v",
      "put k4@4=v",
      "put t1@5=v",
      "put t2@5=v",
    ]);
    d.ok({ op: "put", key: b("k5"), value: b("v") }); // rev 6
    expect(d.store.compactRevision).toBe(3);
    expect(d.store.stats().historyEvents).toBe(5);
    // revision 5's two events drop together
    d.ok({ op: "put", key: b("k6"), value: b("v") }); // rev 7
    d.ok({ op: "put", key: b("k7"), value: b("v") }); // rev 8
    expect(d.store.compactRevision).toBe(5);
    d.ok({ op: "put", key: b("k8"), value: b("v") }); // rev 9: drops both events of rev 5
    expect(d.store.compactRevision).toBe(6);
    expect(d.store.stats().historyEvents).toBe(4);
    expect(brief(d.store.eventsSince(6, { key: new Uint8Array(0), prefix: true }))).toEqual([
      "put k5@6=v",
      "put k6@7=v",
      "put k7@8=v",
      "put k8@9=v",
    ]);
  });

  test("a revision larger than the whole history compacts everything before it", () => {
    const d = new Driver(new KvStore({ historyMaxEvents: 3 }));
    for (let i = 0; i < 3; i++) d.ok({ op: "put", key: b(`k${i}`), value: b("v") }); // 1..3
    d.ok({ op: "del", key: b("k"), prefix: true }); // rev 4 with 3 events: fits exactly
    expect(d.store.compactRevision).toBe(4);
    d.ok({ op: "put", key: b("a"), value: b("v") }); // 5
    d.ok({ op: "put", key: b("b"), value: b("v") }); // 6
    d.ok({ op: "put", key: b("c"), value: b("v") }); // 7
    d.ok({ op: "put", key: b("d"), value: b("v") }); // 8
    d.ok({ op: "del", key: new Uint8Array(0), prefix: true }); // rev 9 with 4 events > 3
    expect(d.store.compactRevision).toBe(10);
    expect(d.store.eventsSince(9, { key: b("a") })).toBe("compacted");
    expect(d.store.eventsSince(10, { key: b("a") })).toEqual([]);
  });

  test("the byte budget also bounds history", () => {
    const d = new Driver(new KvStore({ historyMaxBytes: 3000 }));
    for (let i = 0; i < 10; i++) d.ok({ op: "put", key: b(`k${i}`), value: new Uint8Array(1000) });
    expect(d.store.stats().historyEvents).toBeLessThanOrEqual(3);
    expect(d.store.compactRevision).toBeGreaterThan(7);
  });

  test("onEvents delivers each apply's events once; unsubscribe stops delivery", () => {
    const d = new Driver();
    const got: Array<[string[], number]> = [];
    const off = d.store.onEvents((events, revision) => got.push([brief([...events]) as string[], revision]));
    d.ok({ op: "put", key: b("a"), value: b("1") });
    d.ok({ op: "del", key: b("missing") }); // no events: no call
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 10, now: 0 }); // no events
    d.ok({
      op: "txn",
      compare: [],
      success: [
        { op: "put", key: b("b"), value: b("2") },
        { op: "del", key: b("a") },
      ],
      failure: [],
    });
    off();
    d.ok({ op: "put", key: b("c"), value: b("3") });
    expect(got).toEqual([
      [["put a@1=1"], 1],
      [["put b@2=2", "delete a@2"], 2],
    ]);
  });

  test("a throwing listener does not disturb applying", () => {
    const d = new Driver();
    d.store.onEvents(() => {
      throw new Error("boom");
    });
    let later = 0;
    d.store.onEvents(() => later++);
    expect(d.apply({ op: "put", key: b("a"), value: b("1") }).ok).toBe(true);
    expect(later).toBe(1);
    expect(d.store.revision).toBe(1);
  });

  test("lease expiry and revoke produce delete events", () => {
    const d = new Driver();
    d.ok({ op: "leaseGrant", id: 1, ttlMs: 10, now: 0 });
    d.ok({ op: "put", key: b("x"), value: b("1"), lease: 1 });
    d.ok({ op: "put", key: b("y"), value: b("1"), lease: 1 });
    d.ok({ op: "leaseExpire", ids: [1], now: 10 });
    expect(brief(d.store.eventsSince(3, { key: new Uint8Array(0), prefix: true }))).toEqual([
      "delete x@3",
      "delete y@3",
    ]);
    const events = d.store.eventsSince(1, { key: b("x") });
    expect(events !== "compacted" && events[0]!.lease).toBe(1);
  });
});
