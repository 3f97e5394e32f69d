// Load and failover probe for raftkv, used by bench/compare-etcd.sh (the same code as `raftkv bench`,
// run from source so both columns of the comparison run under the same bun).
//
//   bun bench/raftkv-load.ts run --endpoints 127.0.0.1:7001,... --workload put --clients 64 --duration-ms 3000 [--json]
//   bun bench/raftkv-load.ts leader --endpoints ...            # prints the leader's index in --endpoints
//   bun bench/raftkv-load.ts failover --endpoints ... --kill-pid PID   # JSON: FailoverResult

import { parseArgs } from "node:util";
import { RaftKvClient } from "../src/client/client";
import { RaftKvDriver, measureFailover, runBench, type BenchOptions, type Workload } from "../src/bench/bench";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    endpoints: { type: "string" },
    workload: { type: "string", default: "put" },
    clients: { type: "string" },
    connections: { type: "string" },
    requests: { type: "string" },
    "duration-ms": { type: "string" },
    "key-space": { type: "string" },
    "key-size": { type: "string" },
    "value-size": { type: "string" },
    "read-ratio": { type: "string" },
    serializable: { type: "boolean", default: false },
    rate: { type: "string" },
    "timeout-ms": { type: "string", default: "5000" },
    seed: { type: "string" },
    json: { type: "boolean", default: false },
    "kill-pid": { type: "string" },
    "warmup-ms": { type: "string" },
  },
});

const endpoints = (values.endpoints ?? process.env.RAFTKV_ENDPOINTS ?? "").split(",").map((s) => s.trim()).filter(Boolean);
if (!endpoints.length) {
  console.error("error: --endpoints host:port,... is required");
  process.exit(2);
}
const opt = (v: string | undefined) => (v === undefined ? undefined : Number(v));

async function main(): Promise<number> {
  switch (positionals[0] ?? "run") {
    case "run": {
      const opts: BenchOptions = {
        workload: values.workload as Workload,
        endpoints,
        clients: opt(values.clients),
        connections: opt(values.connections),
        requests: opt(values.requests),
        durationMs: opt(values["duration-ms"]),
        keySpace: opt(values["key-space"]),
        keySize: opt(values["key-size"]),
        valueSize: opt(values["value-size"]),
        readRatio: opt(values["read-ratio"]),
        serializable: values.serializable,
        rate: opt(values.rate),
        timeoutMs: opt(values["timeout-ms"]),
        seed: opt(values.seed),
        json: values.json,
      };
      const report = await runBench(opts, { out: (s) => console.log(s) });
      return report.aborted ? 1 : 0;
    }
    case "leader": {
      const c = new RaftKvClient({ endpoints, timeoutMs: 1000 });
      try {
        const rows = await c.statusAll();
        const leaders = rows.filter((r) => r.status?.role === "leader").sort((a, b) => b.status!.term - a.status!.term);
        if (!leaders.length) return 1;
        console.log(rows.indexOf(leaders[0]!));
        return 0;
      } finally {
        c.close();
      }
    }
    case "failover": {
      if (!values["kill-pid"]) throw new Error("--kill-pid is required");
      const driver = new RaftKvDriver({ endpoints, timeoutMs: Number(values["timeout-ms"]), connections: 1 });
      try {
        const r = await measureFailover(driver, { killPid: Number(values["kill-pid"]), warmupMs: opt(values["warmup-ms"]) });
        console.log(JSON.stringify(r));
        return 0;
      } finally {
        await driver.close();
      }
    }
    default:
      console.error(`error: unknown mode ${JSON.stringify(positionals[0])}: run, leader or failover`);
      return 2;
  }
}

try {
  process.exit(await main());
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  process.exit(2);
}
