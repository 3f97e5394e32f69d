// Failover probe for raftkv, used by bench/compare-etcd.sh (load itself comes from `raftkv bench`).
//
//   bun bench/raftkv-load.ts leader --endpoints ...            # prints the leader's index in --endpoints
//   bun bench/raftkv-load.ts failover --endpoints ... --kill-pid PID   # JSON: FailoverResult

import { parseArgs } from "node:util";
import { RaftKvClient } from "../src/client/client";
import { RaftKvDriver, measureFailover } from "../src/bench/bench";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    endpoints: { type: "string" },
    "timeout-ms": { type: "string", default: "5000" },
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
  switch (positionals[0]) {
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
      console.error(`error: unknown mode ${JSON.stringify(positionals[0])}: leader or failover`);
      return 2;
  }
}

try {
  process.exit(await main());
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  process.exit(2);
}
