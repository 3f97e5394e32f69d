// Measures how long writes are unavailable after kill -9 of the leader, and how long until a new leader
// is elected. Usage: bun bench/failover.ts [runs=7]
// Starts a 3-node cluster of dist/raftkv on ephemeral ports; a writer does puts in a loop at one client.

import { TestCluster } from "../tests/e2e/harness";

const runs = Number(process.argv[2] ?? 7);
const c = new TestCluster();
const electionMs: number[] = [];
const unavailableMs: number[] = [];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

try {
  c.startAll();
  const client = c.client(20000);
  for (let run = 0; run < runs; run++) {
    const leader = await c.waitForLeader();
    for (let i = 0; i < 20; i++) await client.put(`warm${i}`, "x");
    const t0 = performance.now();
    await c.kill(leader);
    // Time to the first write that succeeds after the kill.
    const writer = (async () => {
      await client.put(`after${run}`, "x");
      return performance.now() - t0;
    })();
    const newLeader = await c.waitForLeader(20000, leader);
    electionMs.push(performance.now() - t0);
    unavailableMs.push(await writer);
    console.log(`run ${run + 1}: leader ${leader} killed; node ${newLeader} elected after ${electionMs.at(-1)!.toFixed(0)} ms; first write after ${unavailableMs.at(-1)!.toFixed(0)} ms`);
    c.start(leader);
    await c.waitForLeader();
  }
  client.close();
  console.log(`\nmedian over ${runs} runs: new leader seen by status ${median(electionMs).toFixed(0)} ms, writes unavailable ${median(unavailableMs).toFixed(0)} ms`);
} finally {
  await c.cleanup();
}
