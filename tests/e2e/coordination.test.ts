// Coordination primitives on the compiled binary: exactly-once retries, watches through node deaths,
// lease expiry, locks, and a linearizability check of a concurrent history under node kills.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { RaftKvClient, RaftKvError, toBytes, toText } from "../../src/client/client";
import type { WatchEvent } from "../../src/kv/types";
import { dialFrames, type FramedConn } from "../../src/net";
import type { ResponseFrame } from "../../src/protocol";
import { checkLinearizable, type HistoryOp } from "../lincheck";
import { mulberry32 } from "../rng";
import { BIN, TestCluster, waitFor } from "./harness";

const SEED = Number(process.env.RAFTKV_E2E_SEED ?? Date.now() % 100000);

/** Send one raw request and wait for its response: lets a test replay a write exactly. */
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

describe("coordination primitives", () => {
  let c: TestCluster;

  beforeAll(() => {
    c = new TestCluster({ extraArgs: ["--snapshot-entries", "200"] });
    c.startAll();
  });

  afterAll(async () => {
    await c.cleanup();
  });

  test("a retried write is applied once: same node, after a leader change, and after a snapshot and full restart", async () => {
    const leader = await c.waitForLeader();
    const registered = await rawRequest(c.endpoint(leader), { op: "write", cmd: { op: "sessionRegister" } });
    const clientId = (registered as { result: { sessionId: string } }).result.sessionId;
    const write = { op: "write", cmd: { op: "put", key: toBytes("once"), value: toBytes("1") }, clientId, seq: 1 };
    const first = await rawRequest(c.endpoint(leader), write);
    expect(first.ok).toBe(true);
    const rev = (first as { result: { revision: number } }).result.revision;
    // The response was "lost": the client retries the very same request.
    const again = await rawRequest(c.endpoint(leader), write);
    expect(again).toMatchObject({ ok: true, result: { revision: rev } });

    await c.kill(leader);
    const next = await c.waitForLeader(15000, leader);
    const afterFailover = await rawRequest(c.endpoint(next), write);
    expect(afterFailover).toMatchObject({ ok: true, result: { revision: rev } });
    c.start(leader);

    // Push the log past a snapshot, restart everything, and retry once more.
    const client = c.client();
    for (let i = 0; i < 450; i++) await client.put(`filler${i % 50}`, String(i));
    client.close();
    await waitFor("a snapshot on every node", async () => (await c.statuses()).filter((s) => s.reachable && s.snapshotIndex! > 0).length === 3);
    await c.stopAll();
    c.startAll();
    const l3 = await c.waitForLeader();
    const afterRestart = await rawRequest(c.endpoint(l3), write);
    expect(afterRestart).toMatchObject({ ok: true, result: { revision: rev } });
    const check = c.client();
    const kv = await check.get("once");
    expect(kv!.version).toBe(1); // applied exactly once
    expect(kv!.modRevision).toBe(rev);
    check.close();
  });

  test("a watcher sees every change of a 1,000-write run exactly once and in order, while its node is killed", async () => {
    const leader = await c.waitForLeader();
    const watched = [0, 1, 2].find((i) => i !== leader)!;
    const order = [watched, ...[0, 1, 2].filter((i) => i !== watched)].map((i) => c.endpoint(i));
    const watcherClient = new RaftKvClient({ endpoints: order, timeoutMs: 10000 });
    const writer = c.client();
    const start = await writer.put("wt/start", "0");
    const watch = watcherClient.watch("wt/", { prefix: true, fromRevision: start.revision + 1 });
    const seen: WatchEvent[] = [];
    const reading = (async () => {
      for await (const ev of watch) seen.push(ev);
    })();
    for (let i = 0; i < 1000; i++) {
      await writer.put(`wt/k${i % 10}`, String(i));
      if (i === 300) await c.kill(watched);
      if (i === 700) c.start(watched);
    }
    await waitFor("all 1,000 events", () => seen.length >= 1000, 20000);
    await Bun.sleep(200); // any duplicate would arrive now
    watch.close();
    await reading;
    if (seen.length !== 1000) {
      const vals = seen.map((e) => `${toText(e.value!)}@${e.modRevision}`);
      console.error(`watch saw ${seen.length} events; around the anomaly: ${vals.filter((v, i) => i > 0 && (vals[i - 1]!.split("@")[0] === v.split("@")[0] || Number(v.split("@")[0]) !== Number(vals[i - 1]!.split("@")[0]) + 1)).join(" ")}`);
    }
    expect(seen.length).toBe(1000);
    expect(seen.map((e) => toText(e.value!))).toEqual(Array.from({ length: 1000 }, (_, i) => String(i)));
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.modRevision).toBe(seen[i - 1]!.modRevision + 1);
    watcherClient.close();
    writer.close();
  });

  test("a lease survives a leader change, and when its holder stops renewing its keys vanish on every node", async () => {
    const client = c.client();
    const lease = await client.leaseGrant(3000);
    await client.put("eph/a", "1", { lease: lease.id });
    await client.put("eph/b", "2", { lease: lease.id });
    const leader = await c.waitForLeader();
    await client.leaseKeepAlive(lease.id);
    await c.kill(leader);
    await c.waitForLeader(15000, leader);
    const electedAt = Date.now();
    // The new leader gave the lease a full TTL from its election: still alive a moment later.
    await Bun.sleep(1000);
    expect((await client.get("eph/a"))?.value).toBeDefined();
    c.start(leader);
    // Nobody renews it now: it expires through the log, on every node.
    await waitFor(
      "the leased keys to vanish everywhere",
      async () => {
        for (let i = 0; i < 3; i++) {
          const r = await c.cli(["get", "eph/", "--prefix", "--count-only", "--serializable"], { endpoints: c.endpoint(i) });
          if (r.stdout !== "0") return false;
        }
        return true;
      },
      15000,
    );
    expect(Date.now() - electedAt).toBeGreaterThanOrEqual(2500);
    client.close();
  });

  test("two raftkv lock holders never overlap", async () => {
    const log = join(c.dir, "lock.log");
    const script = `echo start >> ${log}; sleep 0.15; echo end >> ${log}`;
    const holder = () =>
      Bun.spawn([BIN, "lock", "shared", "--endpoints", c.endpoints, "--", "sh", "-c", script], { stdout: "ignore", stderr: "pipe" });
    const runs = [];
    for (let round = 0; round < 3; round++) {
      const a = holder();
      const b = holder();
      runs.push(await a.exited, await b.exited);
    }
    expect(runs.every((code) => code === 0)).toBe(true);
    const lines = readFileSync(log, "utf8").trim().split("\n");
    expect(lines.length).toBe(12);
    for (let i = 0; i < lines.length; i += 2) expect([lines[i], lines[i + 1]]).toEqual(["start", "end"]);
  });

  test("a concurrent put/get/cas history under node kills is linearizable", async () => {
    const rng = mulberry32(SEED);
    await c.waitForLeader();
    const history: HistoryOp[] = [];
    const keys = ["h0", "h1", "h2"];
    let stop = false;
    let unique = 0;
    const worker = async (client: number) => {
      const cl = c.client(3000);
      const local = mulberry32(SEED * 31 + client);
      while (!stop) {
        const key = keys[Math.floor(local() * keys.length)]!;
        const r = local();
        const op: HistoryOp =
          r < 0.4
            ? { client, kind: "put", key, value: `c${client}-${unique++}`, invoke: performance.now(), complete: null, ok: false }
            : r < 0.75
              ? { client, kind: "get", key, invoke: performance.now(), complete: null, ok: false }
              : { client, kind: "cas", key, expected: local() < 0.2 ? null : (history.filter((h) => h.key === key && h.kind === "get" && h.output).pop()?.output ?? null), value: `c${client}-${unique++}`, invoke: performance.now(), complete: null, ok: false };
        history.push(op);
        try {
          if (op.kind === "put") await cl.put(key, op.value!);
          else if (op.kind === "get") {
            const kv = await cl.get(key);
            op.output = kv ? toText(kv.value) : null;
          } else {
            const res = await cl.cas(key, op.expected ?? null, op.value!);
            op.ok = res.succeeded;
          }
          if (op.kind !== "cas") op.ok = true;
          op.complete = performance.now();
        } catch (err) {
          if (!(err instanceof RaftKvError)) throw err;
          op.complete = null; // outcome unknown
        }
      }
      cl.close();
    };
    const workers = [0, 1, 2, 3].map(worker);
    try {
      for (let round = 0; round < 3; round++) {
        await Bun.sleep(1200);
        const victim = Math.floor(rng() * 3);
        await c.kill(victim);
        await Bun.sleep(800);
        c.start(victim);
      }
      await Bun.sleep(800);
    } finally {
      stop = true;
      await Promise.all(workers);
    }
    const completed = history.filter((h) => h.complete !== null).length;
    expect(completed).toBeGreaterThan(100);
    const verdict = checkLinearizable(history);
    if (!verdict.ok) console.error(`[seed ${SEED}] ${verdict.message}`);
    expect(verdict.ok).toBe(true);
  });
});
