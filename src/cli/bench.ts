// raftkv bench: load the cluster and report throughput and latency.

import type { CAC } from "cac";
import { BENCH_DEFAULTS, BenchOptionError, runBench, type BenchOptions } from "../bench/bench";
import { clientOptions, clientTls, endpointsFrom, EXIT, isJson, MAX_TIMEOUT_MS, parseDurationMs, run, timeoutMs, UsageError, writeOut, type ClientFlags } from "./common";

export function registerBench(cli: CAC): void {
  clientOptions(cli.command("bench", "Load the cluster and report throughput, latency percentiles and a histogram"))
    .option("--workload <name>", "put, get (linearizable unless --serializable), mixed, cas or txn", { default: "put" })
    .option("--clients <n>", "Concurrent requests in flight", { default: 16 })
    .option("--connections <n>", "Client connections the requests are spread over (default: min(clients, 8))")
    .option("--requests <n>", "Total requests (default 10000, unless --duration)")
    .option("--duration <duration>", "Run for this long instead of a fixed number of requests: 10000 (ms), 10s, 1m")
    .option("--key-space <n>", "Distinct keys", { default: 1000 })
    .option("--key-size <bytes>", "Key size", { default: 8 })
    .option("--value-size <bytes>", "Value size", { default: 100 })
    .option("--read-ratio <r>", "mixed: fraction of requests that are reads", { default: 0.5 })
    .option("--serializable", "Reads served locally by the contacted node (possibly stale)")
    .option("--rate <n>", "Limit to n requests/s in total (0: unlimited)", { default: 0 })
    .option("--seed <n>", "Seed of the key choice")
    .option("--prefix <prefix>", "Every key the run writes starts with this; they are deleted afterwards", { default: BENCH_DEFAULTS.prefix })
    .option("--keep", "Leave the run's keys (under --prefix) in place")
    .example("raftkv bench --workload put --clients 64 --requests 50000")
    .example("raftkv bench --workload mixed --read-ratio 0.9 --duration 10s --json")
    .action((flags: ClientFlags & Record<string, unknown>) =>
      run(async () => {
        let report;
        try {
          report = await runBench(
            {
              workload: flags.workload as BenchOptions["workload"],
              clients: flags.clients as number,
              connections: flags.connections as number | undefined,
              requests: flags.requests as number | undefined,
              durationMs: flags.duration === undefined ? undefined : parseDurationMs("--duration", flags.duration, "ms", MAX_TIMEOUT_MS),
              keySpace: flags.keySpace as number,
              keySize: flags.keySize as number,
              valueSize: flags.valueSize as number,
              readRatio: flags.readRatio as number,
              serializable: !!flags.serializable,
              rate: flags.rate as number,
              seed: flags.seed as number | undefined,
              endpoints: endpointsFrom(flags),
              tls: clientTls(flags),
              timeoutMs: timeoutMs(flags),
              json: isJson(flags),
              prefix: String(flags.prefix),
              keep: !!flags.keep,
            },
            { out: (line) => writeOut(line + "\n") },
          );
        } catch (err) {
          if (err instanceof BenchOptionError) throw new UsageError(err.message);
          throw err;
        }
        // Non-zero when the run aborted or not one request succeeded: a benchmark of errors measured nothing.
        return report.aborted || report.ok === 0 ? EXIT.failed : EXIT.ok;
      }),
    );
}
