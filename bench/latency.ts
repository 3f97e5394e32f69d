// Round-trip latency at one client against a local 3-node cluster of dist/raftkv: put, linearizable
// get, serializable get. Usage: bun bench/latency.ts [requests=2000]

import { runBench, type BenchOptions } from "../src/bench/bench";
import { TestCluster } from "../tests/e2e/harness";

const requests = Number(process.argv[2] ?? 2000);
const c = new TestCluster();
try {
  c.startAll();
  await c.waitForLeader();
  const endpoints = c.endpoints.split(",");
  const runs: [string, BenchOptions["workload"], boolean][] = [
    ["put", "put", false],
    ["get (linearizable)", "get", false],
    ["get (serializable)", "get", true],
  ];
  for (const [label, workload, serializable] of runs) {
    const r = await runBench({ workload, serializable, clients: 1, requests, endpoints }, { out: () => {} });
    const l = r.latencyMs;
    console.log(`${label.padEnd(18)} p50 ${l.p50.toFixed(3)} ms  p99 ${l.p99.toFixed(3)} ms  max ${l.max.toFixed(3)} ms  (${r.throughput.toFixed(0)} req/s at 1 client)`);
  }
} finally {
  await c.cleanup();
}
