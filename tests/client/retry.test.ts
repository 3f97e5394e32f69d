// The client library against a scripted server: which answers are retried and which are final.

import { describe, expect, test } from "bun:test";
import { RaftKvClient, RaftKvError } from "../../src/client/client";
import { MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION } from "../../src/protocol";
import { scriptedNode } from "./helpers";

describe("RaftKvClient retries", () => {
  for (const code of ["VALUE_TOO_LARGE", "RESULT_TOO_LARGE", "BAD_REQUEST", "PERMISSION_DENIED", "SESSION_EXPIRED"]) {
    test(`${code} is the request's answer: returned at once, sent once`, async () => {
      const s = scriptedNode(() => ({ ok: false, code, message: `refused: ${code}` }));
      const c = new RaftKvClient({ endpoints: [s.endpoint], timeoutMs: 5000 });
      try {
        const err = await c.get("k").catch((e) => e);
        expect(err).toBeInstanceOf(RaftKvError);
        expect((err as RaftKvError).code).toBe(code);
        expect(s.count()).toBe(1);
      } finally {
        c.close();
      }
    });
  }

  test("NO_LEADER is retried until an answer comes", async () => {
    const s = scriptedNode((_req, n) => (n < 3 ? { ok: false, code: "NO_LEADER", message: "no leader yet" } : { ok: true, result: { op: "range", revision: 1, kvs: [], count: 0, more: false } }));
    const c = new RaftKvClient({ endpoints: [s.endpoint], timeoutMs: 5000 });
    try {
      expect(await c.get("k")).toBeNull();
      expect(s.count()).toBe(3);
    } finally {
      c.close();
    }
  });
});

describe("RaftKvClient requests in flight", () => {
  test("one connection never has more than the node's per-connection limit in flight; the rest wait and all succeed", async () => {
    let answered = 0;
    let most = 0; // requests in flight just before an answer: the peak always comes right before one
    const s = scriptedNode(() => {
      most = Math.max(most, s.count() - answered++);
      return { ok: true, result: { op: "range", revision: 1, kvs: [], count: 0, more: false } };
    }, 5);
    const c = new RaftKvClient({ endpoints: [s.endpoint], timeoutMs: 20000 });
    try {
      const results = await Promise.all(Array.from({ length: 400 }, (_, i) => c.get(`k${i}`, { serializable: true })));
      expect(results.every((r) => r === null)).toBe(true);
      expect(most).toBeGreaterThan(1);
      expect(most).toBeLessThanOrEqual(MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION);
    } finally {
      c.close();
    }
  });
});

describe("RaftKvClient requests waiting for a slot", () => {
  test("a request queued behind a full connection still fails at its own deadline", async () => {
    const s = scriptedNode(); // never answers
    const timeoutMs = 600;
    const c = new RaftKvClient({ endpoints: [s.endpoint], timeoutMs });
    try {
      const start = Date.now();
      const settled = await Promise.all(
        Array.from({ length: MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION + 5 }, () =>
          c.get("k", { serializable: true }).then(
            () => Date.now() - start,
            () => Date.now() - start,
          ),
        ),
      );
      expect(Math.max(...settled)).toBeLessThan(timeoutMs + 300);
    } finally {
      c.close();
    }
  });
});

describe("RaftKvClient failFast", () => {
  test("an endpoint given twice still counts once: every endpoint refused is UNREACHABLE at once", async () => {
    const c = new RaftKvClient({ endpoints: ["127.0.0.1:1", "127.0.0.1:1"], timeoutMs: 5000, failFast: true }); // nothing listens on port 1
    try {
      const start = Date.now();
      const err = await c.get("k").catch((e) => e);
      expect((err as RaftKvError).code).toBe("UNREACHABLE");
      expect(Date.now() - start).toBeLessThan(2000);
    } finally {
      c.close();
    }
  });
});
