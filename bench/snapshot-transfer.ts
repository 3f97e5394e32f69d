// A follower that was down catches up through a large snapshot without a leader change (issue 8, bug 6).
// Usage: nice bun bench/snapshot-transfer.ts [keys=1000000] [valueBytes=250] [clients=8]
//
// Starts a 3-node cluster of dist/raftkv, loads `keys` keys (1M keys of 250 bytes: about 300 MB of
// state) in transactions of 128 puts, kills one follower with SIGKILL, overwrites keys until the leader has compacted its log past
// the follower's last entry, restarts the follower and times its catch-up. It watches the leader and
// term every 100 ms throughout, and prints whether either changed. Heavy: run it alone, once.
// RAFTKV_BENCH_LOGS=<dir> keeps the nodes' logs there.

import { TestCluster, waitFor } from "../tests/e2e/harness";
import type { RaftKvClient } from "../src/client/client";
import { MAX_TXN_OPS } from "../src/kv";
import type { TxnOp } from "../src/kv/types";

const keys = Number(process.argv[2] ?? 1_000_000);
const valueBytes = Number(process.argv[3] ?? 250);
const clients = Number(process.argv[4] ?? 8);
const key = (i: number) => `key${String(i).padStart(8, "0")}`;

type Status = Awaited<ReturnType<TestCluster["statuses"]>>[number];

const enc = (s: string) => new TextEncoder().encode(s);

/** Put keys [from, to), cycling over the key space, as transactions of MAX_TXN_OPS puts (one entry each). */
async function putRange(pool: RaftKvClient[], from: number, to: number, value: string): Promise<void> {
  const v = enc(value);
  let next = from;
  await Promise.all(
    pool.map(async (cl) => {
      for (let i = next; i < to; i = next) {
        next = Math.min(to, i + MAX_TXN_OPS);
        const success: TxnOp[] = [];
        for (let k = i; k < next; k++) success.push({ op: "put", key: enc(key(k % keys)), value: v });
        // A loaded machine may see an election while a node is down: retry (the puts are idempotent).
        for (let attempt = 0; ; attempt++) {
          try {
            await cl.txn({ compare: [], success, failure: [] });
            break;
          } catch (err) {
            if (attempt >= 20) throw err;
            await Bun.sleep(200);
          }
        }
      }
    }),
  );
}

// Entries carry 128 puts each, so snapshot every 1000 entries (the node keeps that many in memory after one).
const SNAPSHOT_ENTRIES = 1000;
const c = new TestCluster({ extraArgs: ["--election-ms", "300", "--heartbeat-ms", "50", "--snapshot-entries", String(SNAPSHOT_ENTRIES)] });
const pool: RaftKvClient[] = [];
try {
  c.startAll();
  await c.waitForLeader();
  for (let i = 0; i < clients; i++) pool.push(c.client(60000));
  const value = "v".repeat(valueBytes);
  let t0 = performance.now();
  for (let done = 0; done < keys; done += 100_000) {
    await putRange(pool, done, Math.min(keys, done + 100_000), value);
    console.error(`  loaded ${Math.min(keys, done + 100_000)} keys (${((Math.min(keys, done + 100_000) / (performance.now() - t0)) * 1000).toFixed(0)} puts/s)`);
  }
  console.log(`loaded ${keys} keys of ${valueBytes}-byte values in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  await waitFor("every node to apply everything", async () => (await c.statuses()).every((s) => s.keys === keys), 300_000, 500);

  // Leadership may have moved while loading (a loaded machine): go by the leader now.
  const leader = await c.waitForLeader();
  const follower = [0, 1, 2].find((i) => i !== leader)!;
  await c.kill(follower);
  // The log of a stopped follower is at least what it had applied.
  const followerLast = (await c.statuses()).find((s) => s.id === leader)!.appliedIndex!;
  console.log(`killed follower ${follower} at index ~${followerLast}; leader ${leader}`);

  // Overwrite keys until the leader's snapshot (and so its in-memory log) is past the follower's log.
  t0 = performance.now();
  let written = 0;
  for (;;) {
    const st = (await c.statuses()).find((s) => s.id === leader)!;
    if ((st.snapshotIndex ?? 0) > followerLast + 2 * SNAPSHOT_ENTRIES) break;
    await putRange(pool, written, written + 50_000, value.replace(/^v/, "w"));
    written += 50_000;
    console.error(`  overwrote ${written} keys; leader snapshot at ${st.snapshotIndex}, follower's log ends near ${followerLast}`);
  }
  console.log(`overwrote ${written} keys in ${((performance.now() - t0) / 1000).toFixed(0)} s until the leader compacted past the follower`);

  const before = (await c.statuses()).find((s) => s.id === leader)!;
  if (before.role !== "leader") throw new Error(`node ${leader} lost leadership while the follower was down; run again`);
  const target = before.appliedIndex!;
  const term0 = before.term!;
  // Watch for any leader or term change from the restart on.
  const changes: string[] = [];
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      const st = (await c.statuses()).filter((s: Status) => s.reachable);
      for (const s of st) {
        if (s.role === "leader" && (s.id !== leader || s.term !== term0)) changes.push(`node ${s.id} leader in term ${s.term}`);
        if (s.term !== undefined && s.term !== term0) changes.push(`node ${s.id} at term ${s.term}`);
      }
      await Bun.sleep(100);
    }
  })();

  t0 = performance.now();
  const restartedAt = new Date().toISOString();
  c.start(follower);
  await waitFor(
    `node ${follower} to catch up to index ${target}`,
    async () => ((await c.statuses()).find((s) => s.id === follower)?.appliedIndex ?? 0) >= target,
    600_000,
    100,
  );
  const catchUpS = (performance.now() - t0) / 1000;
  watching = false;
  await watcher;
  // What each node said about snapshots, stalls and leadership from the restart on, in time order.
  const interesting = /snapshot|stalled|leader|candidate|recovered|serving/;
  const lines = [0, 1, 2].flatMap((i) => c.logs(i).split("\n").filter((l) => interesting.test(l) && l.slice(6, 30) >= restartedAt));
  console.log(lines.sort((a, b) => a.slice(6, 30).localeCompare(b.slice(6, 30))).join("\n"));
  console.log(`follower ${follower} restarted and caught up to index ${target} in ${catchUpS.toFixed(1)} s (from process start, snapshot transfer and install included)`);
  console.log(changes.length ? `LEADER OR TERM CHANGED: ${[...new Set(changes)].join("; ")}` : `no leader change: node ${leader} led in term ${term0} throughout`);
} finally {
  // RAFTKV_BENCH_LOGS=<dir> keeps each node's whole log (e.g. with BUN_JSC_logGC=1 to see collections).
  const keep = process.env.RAFTKV_BENCH_LOGS;
  if (keep) for (const i of [0, 1, 2]) await Bun.write(`${keep}/node-${i}.log`, c.logs(i));
  for (const cl of pool) cl.close();
  await c.cleanup();
}
