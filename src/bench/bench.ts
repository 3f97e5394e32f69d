// `raftkv bench`: load generator and latency report for a running cluster.
//
//   const report = await runBench({ workload: "put", endpoints: ["127.0.0.1:7001"], clients: 64 }, { out: console.log });
//
// runBench validates the options (BenchOptionError names the flag at fault), runs the workload through
// RaftKvClient instances, prints the report to io.out (text, or JSON with opts.json) and returns it.
// Progress (~5 lines/s) goes to io.progress if given, else to stderr when stderr is a TTY; never stdout.

import { RaftKvDriver } from "./raftkv-driver";
import type { TlsMaterial } from "../net/tls";
import { resolveBenchOptions, type BenchOptions } from "./options";
import { formatReport } from "./report";
import { runWorkload, type BenchIO, type BenchReport } from "./runner";

export { BENCH_DEFAULTS, BENCH_LIMITS, BenchOptionError, WORKLOADS, benchKey, benchValue, resolveBenchOptions } from "./options";
export type { BenchOptions, ResolvedBenchOptions, Workload } from "./options";
export { formatComparison, formatFailover, formatHistogram, formatReport, median } from "./report";
export { runWorkload, errorCode } from "./runner";
export type { BenchIO, BenchReport, KvDriver } from "./runner";
export type { ComparisonRow, FailoverFigures } from "./report";
export { LatencyRecorder, SeededRandom, formatMs, logHistogram, percentile, summarize } from "./stats";
export type { HistogramBucket, LatencySummary } from "./stats";
export { RaftKvDriver } from "./raftkv-driver";
export { measureFailover } from "./failover";
export type { FailoverOptions, FailoverResult } from "./failover";

/** opts.tls: mutual TLS for a cluster run with certificates. */
export async function runBench(opts: BenchOptions & { tls?: TlsMaterial }, io: BenchIO): Promise<BenchReport> {
  const resolved = resolveBenchOptions(opts);
  const driver = new RaftKvDriver({ endpoints: resolved.endpoints, timeoutMs: resolved.timeoutMs, connections: resolved.connections, prefix: resolved.prefix, tls: opts.tls });
  let report: BenchReport;
  try {
    report = await runWorkload(driver, resolved, io);
  } finally {
    if (!resolved.keep) {
      await driver.cleanup().catch((err: Error) => console.error(`warning: could not delete the keys under ${JSON.stringify(resolved.prefix)}: ${err.message}`));
    }
    await driver.close();
  }
  io.out(resolved.json ? JSON.stringify(report) : formatReport(report));
  return report;
}
