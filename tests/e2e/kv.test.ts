// The state machine through the compiled binary: results too big for a frame, exactly-once sessions
// registered through the log, and the everyday commands (get --rev, compact, lease list / timetolive,
// watch --prev-kv).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RaftKvClient, RaftKvError, toBytes, toText } from "../../src/client/client";
import type { RangeResult } from "../../src/kv/types";
import { dialFrames, type FramedConn } from "../../src/net";
import type { ResponseFrame } from "../../src/protocol";
import { BIN, TestCluster, waitFor } from "./harness";

const MiB = 1024 * 1024;

/** Send one raw request on a fresh connection and wait for its response. */
async function rawRequest(endpoint: string, body: Record<string, unknown>): Promise<ResponseFrame> {
  const [host, port] = endpoint.split(":");
  let resolve!: (r: ResponseFrame) => void;
  const done = new Promise<ResponseFrame>((r) => (resolve = r));
  const conn: FramedConn = await dialFrames(host!, Number(port), { onFrame: (_c, v) => resolve(v as ResponseFrame) });
  conn.send({ k: "req", id: 1, ...body });
  const res = await done;
  conn.close();
  return res;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return err instanceof RaftKvError ? err.code : `not a RaftKvError: ${(err as Error).message}`;
  }
}

describe("state machine e2e", () => {
  let c: TestCluster;

  beforeAll(() => {
    c = new TestCluster();
    c.startAll();
  });

  afterAll(async () => {
    await c.cleanup();
  });

  test("18 values of 1 MiB: get --prefix returns all 18 (paged), --limit is honoured, the cluster keeps serving", async () => {
    await c.waitForLeader();
    const client = c.client(30000);
    for (let i = 0; i < 18; i++) await client.put(`big/${String(i).padStart(2, "0")}`, new Uint8Array(MiB).fill(65 + i));
    const all = await c.cli(["get", "big/", "--prefix", "--keys-only"], { timeoutMs: 30000 });
    expect(all.stderr).toBe("");
    expect(all.code).toBe(0);
    expect(all.stdout.split("\n")).toEqual(Array.from({ length: 18 }, (_, i) => `big/${String(i).padStart(2, "0")}`));
    const withValues = await c.cli(["get", "big/", "--prefix", "--json"], { timeoutMs: 30000 });
    expect(withValues.code).toBe(0);
    const parsed = JSON.parse(withValues.stdout) as { count: number; more: boolean; kvs: { key: string; value: string }[] };
    expect(parsed.count).toBe(18);
    expect(parsed.more).toBe(false);
    expect(parsed.kvs.map((kv) => kv.value.length)).toEqual(Array(18).fill(MiB));
    expect(parsed.kvs[17]!.value[0]).toBe(String.fromCharCode(65 + 17));
    const limited = await client.range({ key: toBytes("big/"), prefix: true, limit: 7 });
    expect(limited.kvs.map((kv) => toText(kv.key))).toEqual(Array.from({ length: 7 }, (_, i) => `big/${String(i).padStart(2, "0")}`));
    expect(limited).toMatchObject({ count: 18, more: true });
    await client.put("after-big-read", "ok");
    expect(toText((await client.get("after-big-read"))!.value)).toBe("ok");
    client.close();
  }, 120_000);

  test("a txn whose get returns too much gets RESULT_TOO_LARGE, writes nothing, and the cluster keeps serving", async () => {
    const client = c.client(30000);
    const code = await codeOf(
      client.txn({ compare: [], success: [{ op: "put", key: toBytes("txn-marker"), value: toBytes("x") }, { op: "range", key: toBytes("big/"), prefix: true }], failure: [] }),
    );
    expect(code).toBe("RESULT_TOO_LARGE");
    expect(await client.get("txn-marker")).toBeNull();
    await client.put("after-big-txn", "ok");
    expect((await client.get("after-big-txn"))!.version).toBe(1);
    const statuses = await c.statuses();
    expect(statuses.filter((s) => s.reachable)).toHaveLength(3);
    client.close();
  }, 60_000);

  test("a watch with prev-kv gets a revision of 18 MiB (delete of the big/ keys) in bounded frames, whole", async () => {
    const client = c.client(30000);
    const start = await client.put("big-watch-start", "x");
    const watch = client.watch("big/", { prefix: true, prevKv: true, fromRevision: start.revision + 1 });
    const seen: { type: string; prevBytes: number; revision: number }[] = [];
    const done = (async () => {
      for await (const ev of watch) {
        seen.push({ type: ev.type, prevBytes: ev.prevValue?.length ?? 0, revision: ev.modRevision });
        if (seen.length === 18) return;
      }
    })();
    const del = await client.delete("big/", { prefix: true });
    expect(del.deleted).toBe(18);
    await waitFor("18 delete events", () => seen.length === 18, 30000);
    await done;
    watch.close();
    expect(seen.every((e) => e.type === "delete" && e.prevBytes === MiB && e.revision === del.revision)).toBe(true);
    client.close();
  }, 60_000);

  test("a value over the limit is refused by the library at once, without a retry", async () => {
    const client = new RaftKvClient({ endpoints: ["127.0.0.1:1"], timeoutMs: 5000 }); // nothing listens there
    expect(await codeOf(client.put("huge", new Uint8Array(64 * MiB)))).toBe("VALUE_TOO_LARGE");
    client.close();
  });

  test("a client that restarts with the same clientId gets a new session: its first write is applied", async () => {
    const first = new RaftKvClient({ endpoints: c.endpoints.split(","), clientId: "reused-id" });
    await first.put("restarted", "from the first process");
    first.close();
    const second = new RaftKvClient({ endpoints: c.endpoints.split(","), clientId: "reused-id" });
    const r = await second.put("restarted", "from the second process");
    const kv = (await second.get("restarted"))!;
    expect(toText(kv.value)).toBe("from the second process");
    expect(kv.modRevision).toBe(r.revision);
    second.close();
  });

  test("a retry after its session expired is refused with SESSION_EXPIRED, not executed twice; the library registers afresh", async () => {
    const lib = c.client();
    await lib.put("lib-before", "1"); // the library's lane is now registered
    const set = await c.cli(["session-ttl", "1s", "--json"]);
    expect(set.stderr).toBe("");
    expect(JSON.parse(set.stdout)).toEqual({ sessionTtlMs: 1000 });
    const leader = await c.waitForLeader();
    const registered = await rawRequest(c.endpoint(leader), { op: "write", cmd: { op: "sessionRegister" } });
    const clientId = (registered as { result: { sessionId: string } }).result.sessionId;
    const write = { op: "write", cmd: { op: "put", key: toBytes("expiring"), value: toBytes("1") }, clientId, seq: 1 };
    expect(await rawRequest(c.endpoint(leader), write)).toMatchObject({ ok: true });
    // Sessions and leases run on the same clock, the log's: once a lease granted after the write has
    // expired, the log's clock is past the session's last use by more than its TTL.
    const other = c.client();
    const probe = await other.leaseGrant(1100);
    await waitFor("the probe lease to expire", async () => (await codeOf(other.leaseTimeToLive(probe.id))) === "LEASE_NOT_FOUND");
    const refused = await rawRequest(c.endpoint(await c.waitForLeader()), write);
    expect(refused).toMatchObject({ ok: false, code: "SESSION_EXPIRED" });
    const kv = (await other.get("expiring"))!;
    expect(kv.version).toBe(1); // applied once, never again
    // The library's idle lane expired too: it registers a new session and the write goes through.
    await lib.put("lib-after", "2");
    expect(toText((await lib.get("lib-after"))!.value)).toBe("2");
    const restore = await c.cli(["session-ttl", "10m"]);
    expect(restore.code).toBe(0);
    other.close();
    lib.close();
  }, 60_000);

  test("serve refuses a per-node --session-ttl (it made nodes diverge): the TTL is set through the log", async () => {
    const p = Bun.spawn([BIN, "serve", "0", c.conf, "--data-dir", `${c.dir}/refused`, "--session-ttl", "1s"], { stdout: "pipe", stderr: "pipe" });
    const [stderr, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
    expect(code).toBe(2);
    expect(stderr).toContain("--session-ttl was removed");
    expect(stderr).toContain("raftkv session-ttl");
  });

  test("get --rev reads the past; compact makes older revisions COMPACTED, naming the oldest readable", async () => {
    const client = c.client();
    const r1 = await client.put("hist", "one");
    const r2 = await client.put("hist", "two");
    await client.put("hist", "three");
    const old = await c.cli(["get", "hist", "--rev", String(r1.revision)]);
    expect(old).toMatchObject({ code: 0, stdout: "one" });
    const json = JSON.parse((await c.cli(["get", "hist", "--rev", String(r2.revision), "--json"])).stdout);
    expect(json).toMatchObject({ found: true, value: "two", revision: r2.revision });
    const compacted = await c.cli(["compact", String(r2.revision), "--json"]);
    expect(JSON.parse(compacted.stdout)).toMatchObject({ compacted: r2.revision });
    expect((await c.cli(["get", "hist", "--rev", String(r2.revision)])).stdout).toBe("two");
    const gone = await c.cli(["get", "hist", "--rev", String(r1.revision)]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain(`revision ${r1.revision} is compacted: the oldest revision this node can read is ${r2.revision}`);
    const range = (await client.range({ key: toBytes("hist"), revision: r1.revision }).catch((e) => e)) as RaftKvError | RangeResult;
    expect(range).toBeInstanceOf(RaftKvError);
    expect((range as RaftKvError).code).toBe("COMPACTED");
    client.close();
  });

  test("lease list and lease timetolive show TTL, time left and keys", async () => {
    const client = c.client();
    const lease = await client.leaseGrant(60_000);
    await client.put("leased/a", "1", { lease: lease.id });
    await client.put("leased/b", "2", { lease: lease.id });
    // A key that is not UTF-8 comes back in --json as base64, marked as such (as `get --json` does).
    await client.put(new Uint8Array([0x6c, 0xff, 0x00]), "3", { lease: lease.id });
    const list = JSON.parse((await c.cli(["lease", "list", "--json"])).stdout) as { leases: { id: number; ttlMs: number; remainingMs: number; keyCount: number }[] };
    const mine = list.leases.find((l) => l.id === lease.id)!;
    expect(mine).toMatchObject({ ttlMs: 60_000, keyCount: 3 });
    expect(mine.remainingMs).toBeGreaterThan(0);
    expect(mine.remainingMs).toBeLessThanOrEqual(60_000);
    const ttl = JSON.parse((await c.cli(["lease", "timetolive", String(lease.id), "--json"])).stdout);
    expect(ttl).toMatchObject({ id: lease.id, ttlMs: 60_000, keyCount: 3 });
    expect(ttl.keys).toHaveLength(3);
    expect(ttl.keys).toEqual(expect.arrayContaining([{ key: "bP8A", keyEncoding: "base64" }, { key: "leased/a" }, { key: "leased/b" }]));
    const text = await c.cli(["lease", "timetolive", String(lease.id)]);
    expect(text.stdout).toContain(`lease ${lease.id}: granted TTL 60s`);
    expect(text.stdout).toContain("leased/b");
    await client.leaseRevoke(lease.id);
    const missing = await c.cli(["lease", "timetolive", String(lease.id)]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`lease ${lease.id} does not exist`);
    client.close();
  });

  test("watch --prev-kv: events carry the previous value; without it they do not", async () => {
    const client = c.client();
    const start = await client.put("pv", "old");
    await client.put("pv", "new");
    const withPrev = client.watch("pv", { fromRevision: start.revision + 1, prevKv: true });
    const withoutPrev = client.watch("pv", { fromRevision: start.revision + 1 });
    const first = async (w: typeof withPrev) => {
      for await (const ev of w) return ev;
      throw new Error("watch ended");
    };
    const [a, b] = await Promise.all([first(withPrev), first(withoutPrev)]);
    withPrev.close();
    withoutPrev.close();
    expect(toText(a.prevValue!)).toBe("old");
    expect(b.prevValue).toBeUndefined();
    const p = Bun.spawn([BIN, "watch", "pv", "--rev", String(start.revision + 1), "--prev-kv", "--endpoints", c.endpoints], { stdout: "pipe", stderr: "pipe" });
    const reader = p.stdout.getReader();
    let out = "";
    await waitFor("the watch line", async () => {
      const { value } = await reader.read();
      out += new TextDecoder().decode(value);
      return out.includes("\n");
    });
    process.kill(p.pid, "SIGTERM");
    await p.exited;
    expect(out.split("\n")[0]).toBe(`PUT pv new (rev ${start.revision + 1}, was old)`);
    client.close();
  });
});
