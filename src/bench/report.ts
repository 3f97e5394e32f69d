// Human-readable renderings of bench results: one run (formatReport) and a side-by-side comparison of
// two stores over the same workloads (formatComparison).

import type { BenchReport } from "./runner";
import { formatMs, type HistogramBucket, type LatencySummary } from "./stats";

const BAR_WIDTH = 40;

function describeRun(r: BenchReport): string {
  const o = r.options;
  const amount = o.durationMs ? `${(o.durationMs / 1000).toFixed(1)} s` : `${o.requests} requests`;
  const parts = [
    `${r.target} bench: workload ${r.workload}`,
    `${o.clients} client${o.clients === 1 ? "" : "s"}`,
    `${o.connections} connection${o.connections === 1 ? "" : "s"}`,
    amount,
    `${o.keySpace} keys of ${o.keySize} B`,
    `values ${o.valueSize} B`,
  ];
  if (r.workload === "mixed") parts.push(`read ratio ${o.readRatio}`);
  if (r.workload !== "put" && r.workload !== "txn") parts.push(o.serializable ? "serializable reads" : "linearizable reads");
  if (o.rate > 0) parts.push(`rate limit ${o.rate} req/s`);
  return parts.join(", ");
}

function latencyLine(l: LatencySummary): string {
  return (
    `min ${formatMs(l.min)}  mean ${formatMs(l.mean)}  p50 ${formatMs(l.p50)}  p90 ${formatMs(l.p90)}  ` +
    `p99 ${formatMs(l.p99)}  p99.9 ${formatMs(l.p999)}  max ${formatMs(l.max)}`
  );
}

export function formatHistogram(buckets: HistogramBucket[], width = BAR_WIDTH): string[] {
  const total = buckets.reduce((s, b) => s + b.count, 0);
  if (!total) return [];
  const peak = Math.max(...buckets.map((b) => b.count));
  const from = buckets.map((b) => formatMs(b.fromMs));
  const to = buckets.map((b) => formatMs(b.toMs));
  const wFrom = Math.max(...from.map((s) => s.length));
  const wTo = Math.max(...to.map((s) => s.length));
  const wCount = Math.max(...buckets.map((b) => String(b.count).length));
  let cumulative = 0;
  return buckets.map((b, i) => {
    cumulative += b.count;
    const len = b.count === 0 ? 0 : Math.max(1, Math.round((b.count / peak) * width));
    return (
      `  ${from[i]!.padStart(wFrom)} - ${to[i]!.padStart(wTo)} ms |${"#".repeat(len).padEnd(width)}| ` +
      `${String(b.count).padStart(wCount)}  ${((b.count / total) * 100).toFixed(1).padStart(5)}%  ` +
      `(cum ${((cumulative / total) * 100).toFixed(1)}%)`
    );
  });
}

/** The report of one run as text: settings, throughput, errors, latency figures and a histogram. */
export function formatReport(r: BenchReport): string {
  const lines: string[] = [describeRun(r)];
  const label = (s: string) => `  ${s.padEnd(14)}`;
  if (r.prepopulated !== undefined) lines.push(label("prepopulated") + `${r.prepopulated} keys (not measured)`);
  lines.push(label("elapsed") + `${(r.elapsedMs / 1000).toFixed(3)} s`);
  lines.push(label("requests") + `${r.requests} (${r.ok} ok, ${r.errors} errors)`);
  lines.push(label("throughput") + `${r.throughput.toFixed(0)} req/s`);
  if (r.errors) {
    const codes = Object.entries(r.errorsByCode).sort((a, b) => b[1] - a[1]);
    lines.push(label("errors") + codes.map(([c, n]) => `${c} ${n}`).join(", "));
    for (const [c] of codes) lines.push(`${" ".repeat(16)}${c}: ${r.errorSamples[c] ?? ""}`);
  }
  if (r.cas) lines.push(label("cas") + `${r.cas.succeeded} succeeded, ${r.cas.conflicts} conflicts`);
  if (r.txn) lines.push(label("txn") + `${r.txn.succeeded} succeeded, ${r.txn.failed} compare failed`);
  lines.push(label("latency (ms)") + (r.latencyMs.count ? latencyLine(r.latencyMs) : "no successful requests"));
  if (r.byOp) for (const [op, l] of Object.entries(r.byOp)) lines.push(label(`  ${op} (${l.count})`) + latencyLine(l));
  if (r.aborted) lines.push(label("ABORTED") + r.aborted);
  const hist = formatHistogram(r.histogram);
  if (hist.length) lines.push("", "latency histogram (successful requests)", ...hist);
  return lines.join("\n");
}

export interface ComparisonRow {
  label: string;
  a?: BenchReport | null;
  b?: BenchReport | null;
}

function table(head: string[], rows: string[][], rightAlignFrom = 1): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i >= rightAlignFrom ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ");
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)];
}

const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? "-" : `${(a / b).toFixed(2)}x`;

/**
 * Side by side: throughput and p50/p99 latency of store `a` and store `b` for each workload, with the
 * a/b ratio (for throughput higher is better for a; for latency lower is).
 */
export function formatComparison(nameA: string, nameB: string, rows: ComparisonRow[]): string {
  const head = ["workload", `${nameA} req/s`, `${nameB} req/s`, `${nameA}/${nameB}`, `${nameA} p50`, `${nameB} p50`, `${nameA} p99`, `${nameB} p99`, "errors"];
  const body = rows.map(({ label, a, b }) => {
    const tp = (r?: BenchReport | null) => (r ? r.throughput.toFixed(0) : "-");
    const lat = (r: BenchReport | null | undefined, k: "p50" | "p99") => (r && r.latencyMs.count ? formatMs(r.latencyMs[k]) : "-");
    return [
      label,
      tp(a),
      tp(b),
      ratio(a?.throughput, b?.throughput),
      lat(a, "p50"),
      lat(b, "p50"),
      lat(a, "p99"),
      lat(b, "p99"),
      `${a ? a.errors : "-"}/${b ? b.errors : "-"}`,
    ];
  });
  return [...table(head, body), "", `latencies in ms; ratio = ${nameA} throughput / ${nameB} throughput; errors = ${nameA}/${nameB}`].join("\n");
}

export interface FailoverFigures {
  label: string;
  /** ms from the kill to the first successful write issued after it, one per round. */
  samples: number[];
}

export function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function formatFailover(rows: FailoverFigures[]): string {
  const body = rows.map((r) => [
    r.label,
    String(r.samples.length),
    r.samples.length ? median(r.samples).toFixed(0) : "-",
    r.samples.length ? Math.min(...r.samples).toFixed(0) : "-",
    r.samples.length ? Math.max(...r.samples).toFixed(0) : "-",
    r.samples.map((x) => x.toFixed(0)).join(" "),
  ]);
  return [...table(["unavailability after kill -9 of the leader", "rounds", "median ms", "min", "max", "all (ms)"], body, 1)].join("\n");
}
