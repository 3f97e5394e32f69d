// Lease time on the leader, driven through the real runtime with an injected clock: a wall-clock step
// must not expire a lease early, because leases (and sessions) are timed by the log's clock carried on
// by the leader's monotonic clock.
import { describe, expect, test } from "bun:test";
import type { LeaseGrantResult } from "../../src/kv/types";
import type { ResponseFrame } from "../../src/protocol";
import { ClientService, type ClientConn } from "../../src/server/clients";
import { LeaseKeeper } from "../../src/server/leases";
import { Watches } from "../../src/server/watches";
import { singleNodeRuntime } from "./single-node";

const TICK_MS = 10;

/** A single-node runtime on a hand-driven monotonic clock, with the leader's lease keeper. */
function singleNode() {
  const { runtime, clock, log, drain, tick } = singleNodeRuntime(TICK_MS);
  const noop = () => {};
  const keeper = new LeaseKeeper(runtime, clock, log);
  const watches = new Watches(runtime.kv, 1);
  const clients = new ClientService({ runtime, watches, logNow: () => keeper.now(), nodes: [{ id: 1, host: "127.0.0.1", port: 1 }], status: () => ({}) as never });
  runtime.start();
  /** Let `ms` of monotonic time pass, ticking the runtime and checking leases as the node does. */
  const advance = (ms: number) => {
    for (let t = 0; t < ms; t += TICK_MS) {
      tick();
      keeper.expire();
      drain();
    }
  };
  const replies: ResponseFrame[] = [];
  const conn: ClientConn = { closed: false, close: noop, send: (f: unknown) => (replies.push(f as ResponseFrame), true), sendEncoded: () => true };
  const request = (body: Record<string, unknown>) => {
    const id = replies.length + 1000;
    clients.onRequest(conn, { k: "req", id, ...body } as never);
    drain();
    return () => replies.find((r) => r.id === id);
  };
  return { runtime, advance, request };
}

describe("leases on the leader", () => {
  test("a wall-clock step forward does not expire a lease early; monotonic time does", () => {
    const realDateNow = Date.now;
    let wallStep = 0;
    Date.now = () => realDateNow() + wallStep; // the wall clock, as any code that reads it sees it
    try {
      const node = singleNode();
      node.advance(200);
      expect(node.runtime.role).toBe("leader");
      const granted = node.request({ op: "write", cmd: { op: "leaseGrant", id: 0, ttlMs: 10_000, now: 0 } });
      node.advance(50);
      const reply = granted();
      expect(reply).toMatchObject({ ok: true });
      const id = (reply as { result: LeaseGrantResult }).result.id;

      wallStep += 3600_000; // NTP, an operator or a resumed VM moves the wall clock an hour ahead
      node.advance(1000);
      expect(node.runtime.kv.leaseInfo(id)).not.toBeNull();

      node.advance(9000); // 10 s of monotonic time since the grant
      expect(node.runtime.kv.leaseInfo(id)).toBeNull();
    } finally {
      Date.now = realDateNow;
    }
  });
});
