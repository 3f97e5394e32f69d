// The figures behind each optimisation: put at 1 and 64 clients, linearizable get at 64, against a
// local 3-node cluster of one build. RAFTKV_BIN=/path/to/raftkv measures another build (e.g. one with an
// optimisation patched out). Usage: bun bench/figures.ts [label]

import { runBench } from "../src/bench/bench";
import { TestCluster } from "../tests/e2e/harness";

const label = process.argv[2] ?? "this build";
// RAFTKV_SERVE_ARGS adds serve flags, e.g. "--no-group-commit".
const c = new TestCluster({ extraArgs: (process.env.RAFTKV_SERVE_ARGS ?? "").split(" ").filter(Boolean) });
try {
  c.startAll();
  await c.waitForLeader();
  const endpoints = c.endpoints.split(",");
  const quiet = { out: () => {} };
  const put1 = await runBench({ workload: "put", clients: 1, requests: 3000, endpoints }, quiet);
  const put64 = await runBench({ workload: "put", clients: 64, requests: 30000, endpoints }, quiet);
  const get64 = await runBench({ workload: "get", clients: 64, requests: 60000, endpoints }, quiet);
  console.log(
    `${label.padEnd(34)} put@1 p50 ${put1.latencyMs.p50.toFixed(2)} ms, ${put1.throughput.toFixed(0)}/s | put@64 ${put64.throughput.toFixed(0)}/s p50 ${put64.latencyMs.p50.toFixed(1)} ms | get@64 ${get64.throughput.toFixed(0)}/s p50 ${get64.latencyMs.p50.toFixed(1)} ms`,
  );
} finally {
  await c.cleanup();
}
