// Write unavailability during cluster operations: member add, promote, remove, remove the leader,
// leader transfer, SIGTERM of the leader, kill -9 of the leader. Median of several runs each.
// Usage: nice bun bench/membership.ts [runs=3]
//
// A 3-node cluster of dist/raftkv; one client writes in a loop. For each operation the figure is the
// longest gap between two consecutive acknowledged writes from just before the operation until one
// second after it completed.

import { writeFileSync } from "node:fs";
import { TestCluster, waitFor } from "../tests/e2e/harness";
import type { MemberList } from "../src/protocol";

const runs = Number(process.argv[2] ?? 3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

// Node ids 0-2 start the cluster; every run adds two new nodes (one to promote and remove, one to
// replace the removed leader).
const c = new TestCluster({ nodes: 3 + 2 * runs });
const writeConf = (n: number) => writeFileSync(c.conf, c.ports.slice(0, n).map((p, i) => `${i} 127.0.0.1 ${p}`).join("\n") + "\n");
const acks: number[] = [];
let writing = true;
const gaps: Record<string, number[]> = {};

async function cli(args: string[]): Promise<string> {
  const r = await c.cli(args, { timeoutMs: 30000 });
  if (r.code !== 0) throw new Error(`raftkv ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

async function members(): Promise<MemberList> {
  return JSON.parse(await cli(["member", "list", "--json"])) as MemberList;
}

/** Run `op` and record the longest gap between acknowledged writes around it. */
async function measure(name: string, op: () => Promise<void>): Promise<void> {
  await Bun.sleep(500);
  const t0 = performance.now();
  await op();
  await Bun.sleep(1000);
  const t1 = performance.now();
  const inWindow = acks.filter((t) => t >= t0 - 200 && t <= t1);
  let gap = 0;
  for (let i = 1; i < inWindow.length; i++) gap = Math.max(gap, inWindow[i]! - inWindow[i - 1]!);
  if (inWindow.length < 2) gap = t1 - t0;
  (gaps[name] ??= []).push(gap);
  console.log(`${name}: longest write gap ${gap.toFixed(0)} ms`);
}

async function join(id: number): Promise<void> {
  await cli(["member", "add", String(id), c.endpoint(id)]);
  writeConf(id + 1);
  c.start(id, ["--join"]);
}

async function promoteWhenCaughtUp(id: number): Promise<void> {
  await waitFor(`node ${id} caught up`, async () => {
    const m = (await members()).members.find((x) => x.id === id);
    return m?.state === "replicate" && (m.lag ?? Infinity) < 100;
  }, 120000, 200);
}

try {
  writeConf(3);
  for (let i = 0; i < 3; i++) c.start(i);
  await c.waitForLeader(30000);
  const client = c.client(30000);
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      try {
        await client.put(`k${i % 1000}`, `v${i}`);
        acks.push(performance.now());
      } catch {
        // counted as a gap
      }
    }
  })();
  let nextId = 3;
  for (let run = 0; run < runs; run++) {
    const learner = nextId++;
    await measure("member add", () => join(learner));
    await promoteWhenCaughtUp(learner);
    await measure("member promote", async () => void (await cli(["member", "promote", String(learner)])));
    await measure("member remove", async () => void (await cli(["member", "remove", String(learner)])));
    await c.kill(learner);

    const follower = (await members()).members.find((m) => m.role === "voter" && !m.leader)!.id;
    await measure("leader transfer", async () => void (await cli(["leader", "transfer", String(follower)])));

    const l2 = (await members()).leader;
    await measure("SIGTERM leader", async () => {
      await c.kill(l2, "SIGTERM");
      await c.waitForLeader(30000, l2);
    });
    c.start(l2);
    await c.waitForLeader(30000);

    const l3 = (await members()).leader;
    await measure("kill -9 leader", async () => {
      await c.kill(l3);
      await c.waitForLeader(30000, l3);
    });
    c.start(l3);
    await c.waitForLeader(30000);

    // Remove the leader, then replace it by a new node so the next run has three voters again.
    const l4 = (await members()).leader;
    // Answered once committed; the removed leader then steps down and hands over (TimeoutNow).
    await measure("member remove (the leader)", async () => void (await cli(["member", "remove", String(l4)])));
    await c.kill(l4);
    const replacement = nextId++;
    await join(replacement);
    await promoteWhenCaughtUp(replacement);
    await cli(["member", "promote", String(replacement)]);
  }
  writing = false;
  await writer;
  client.close();
  console.log(`\nmedian longest write gap over ${runs} runs (shared, loaded machine):`);
  for (const [name, xs] of Object.entries(gaps)) console.log(`  ${name.padEnd(28)} ${median(xs).toFixed(0)} ms   (runs: ${xs.map((x) => x.toFixed(0)).join(", ")})`);
} finally {
  writing = false;
  await c.cleanup();
}
