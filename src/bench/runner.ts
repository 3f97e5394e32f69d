// The measuring loop, independent of the store under test: `clients` loops each keep one request in
// flight through a KvDriver, time it with performance.now(), and record it. The raftkv driver lives in
// raftkv-driver.ts; bench/etcd-load.ts supplies an etcd one, so both are measured by the same code.

import { benchKey, benchValue, needsPrepopulate, type ResolvedBenchOptions, type Workload } from "./options";
import { LatencyRecorder, SeededRandom, logHistogram, summarize, type HistogramBucket, type LatencySummary } from "./stats";

/** What a store must offer to be benchmarked. `slot` is the concurrent loop (0..clients-1) asking. */
export interface KvDriver {
  /** Shown in reports: "raftkv", "etcd". */
  readonly name: string;
  put(slot: number, key: Uint8Array, value: Uint8Array): Promise<void>;
  /** The key's modRevision, or null when it does not exist. */
  get(slot: number, key: Uint8Array, serializable: boolean): Promise<{ modRevision: number } | null>;
  /** Put `value` iff the key's modRevision is still `modRevision` (0: the key must not exist). True if it did. */
  casPut(slot: number, key: Uint8Array, modRevision: number, value: Uint8Array): Promise<boolean>;
  /** One transaction: compare `compareKey`'s version > -1 (always true), then put every pair. */
  txnPuts(slot: number, compareKey: Uint8Array, puts: [Uint8Array, Uint8Array][]): Promise<boolean>;
  close(): Promise<void>;
}

export interface BenchIO {
  /** Where runBench prints the final report (text or JSON). */
  out: (s: string) => void;
  /** Progress lines (~5 per second). Without it, progress goes to stderr only when stderr is a TTY. */
  progress?: (s: string) => void;
}

export interface BenchReport {
  /** The store measured: "raftkv", "etcd". */
  target: string;
  workload: Workload;
  options: Omit<ResolvedBenchOptions, "json">;
  startedAt: string;
  /** Wall time of the measured part (after any pre-population), ms. */
  elapsedMs: number;
  /** Requests completed, successful or not. */
  requests: number;
  ok: number;
  errors: number;
  errorsByCode: Record<string, number>;
  /** The first message seen for each error code. */
  errorSamples: Record<string, string>;
  /** Successful requests per second. */
  throughput: number;
  /** Latency of successful requests. */
  latencyMs: LatencySummary;
  histogram: HistogramBucket[];
  /** Per operation kind, when a workload mixes kinds (mixed: get and put). */
  byOp?: Record<string, LatencySummary>;
  /** cas: read-modify-writes that committed, and those that lost to a concurrent writer. */
  cas?: { succeeded: number; conflicts: number };
  /** txn: transactions whose compare held, and those whose compare failed. */
  txn?: { succeeded: number; failed: number };
  /** Keys written before the measured part (get, mixed). */
  prepopulated?: number;
  /** Set when the run stopped early, with the reason. */
  aborted?: string;
}

/** A run that has seen this many errors and not a single success gives up. */
export const ABORT_AFTER_ERRORS_WITHOUT_SUCCESS = 200;
const PROGRESS_EVERY_MS = 200;
const HISTOGRAM_BUCKETS = 10;
/** Concurrent puts while filling the key space. */
const PREPOPULATE_CONCURRENCY = 32;

export function errorCode(err: unknown): string {
  if (err && typeof err === "object") {
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string" && code) return code;
    const name = (err as { name?: unknown }).name;
    if (typeof name === "string" && name && name !== "Error") return name;
  }
  return "ERROR";
}

function progressSink(io: BenchIO): { write: (line: string) => void; done: () => void } | null {
  if (io.progress) return { write: io.progress, done: () => {} };
  if (process.stderr.isTTY) {
    return {
      write: (line) => process.stderr.write(`\r\x1b[2K${line}`),
      done: () => process.stderr.write("\r\x1b[2K"),
    };
  }
  return null;
}

function bar(fraction: number, width = 24): string {
  const f = Math.max(0, Math.min(1, fraction));
  const full = Math.floor(f * width);
  return "[" + "=".repeat(full) + (full < width ? ">" + " ".repeat(width - full - 1) : "") + "]";
}

/** Writes every key of the key space once (not measured). Returns how many were written. */
async function prepopulate(driver: KvDriver, opts: ResolvedBenchOptions, note: ((s: string) => void) | null): Promise<number> {
  const value = benchValue(opts.valueSize, "init");
  const slots = Math.min(opts.clients, PREPOPULATE_CONCURRENCY, opts.keySpace);
  let next = 0;
  let done = 0;
  let lastNote = 0;
  await Promise.all(
    Array.from({ length: slots }, async (_, slot) => {
      while (next < opts.keySpace) {
        const i = next++;
        try {
          await driver.put(slot, benchKey(i, opts.keySize), value);
        } catch (err) {
          throw new Error(`filling the key space failed at key ${i}: ${errorCode(err)}: ${(err as Error).message}`);
        }
        done++;
        const now = performance.now();
        if (note && now - lastNote >= PROGRESS_EVERY_MS) {
          lastNote = now;
          note(`filling ${opts.keySpace} keys ${bar(done / opts.keySpace)} ${done}/${opts.keySpace}`);
        }
      }
    }),
  );
  return done;
}

/** Runs one workload through `driver` and measures it. Prints nothing but progress. */
export async function runWorkload(driver: KvDriver, opts: ResolvedBenchOptions, io: BenchIO): Promise<BenchReport> {
  const sink = progressSink(io);
  const startedAt = new Date().toISOString();
  let prepopulated: number | undefined;
  if (needsPrepopulate(opts.workload)) prepopulated = await prepopulate(driver, opts, sink ? sink.write : null);

  const overall = new LatencyRecorder();
  const byKind = new Map<string, LatencyRecorder>();
  const kindRecorder = (kind: string) => {
    let r = byKind.get(kind);
    if (!r) byKind.set(kind, (r = new LatencyRecorder(1024)));
    return r;
  };
  const errorsByCode: Record<string, number> = {};
  const errorSamples: Record<string, string> = {};
  const cas = { succeeded: 0, conflicts: 0 };
  const txn = { succeeded: 0, failed: 0 };
  let started = 0;
  let completed = 0;
  let ok = 0;
  let errors = 0;
  let aborted: string | undefined;

  const keys: Uint8Array[] = [];
  for (let i = 0; i < opts.keySpace && i < 100_000; i++) keys.push(benchKey(i, opts.keySize));
  const keyAt = (i: number) => keys[i] ?? benchKey(i, opts.keySize);
  const putValue = benchValue(opts.valueSize, "v");
  const intervalMs = opts.rate > 0 ? 1000 / opts.rate : 0;

  const t0 = performance.now();
  const deadline = opts.durationMs ? t0 + opts.durationMs : Infinity;
  const more = () => !aborted && (opts.durationMs ? performance.now() < deadline : started < opts.requests);

  let lastTick = t0;
  let lastCompleted = 0;
  const tick = () => {
    if (!sink) return;
    const now = performance.now();
    const rate = ((completed - lastCompleted) * 1000) / Math.max(1, now - lastTick);
    lastTick = now;
    lastCompleted = completed;
    const fraction = opts.durationMs ? (now - t0) / opts.durationMs : completed / opts.requests;
    const count = opts.durationMs ? `${((now - t0) / 1000).toFixed(1)}/${(opts.durationMs / 1000).toFixed(1)} s` : `${completed}/${opts.requests}`;
    sink.write(`${opts.workload} ${bar(fraction)} ${String(Math.floor(Math.min(1, fraction) * 100)).padStart(3)}%  ${count}  ${Math.round(rate)} req/s  errors ${errors}`);
  };
  const timer = sink ? setInterval(tick, PROGRESS_EVERY_MS) : null;

  async function one(slot: number, rng: SeededRandom, seq: number): Promise<void> {
    const k = rng.int(opts.keySpace);
    const key = keyAt(k);
    let kind: string;
    const t = performance.now();
    switch (opts.workload) {
      case "put":
        kind = "put";
        await driver.put(slot, key, putValue);
        break;
      case "get":
        kind = "get";
        await driver.get(slot, key, opts.serializable);
        break;
      case "mixed":
        if (rng.next() < opts.readRatio) {
          kind = "get";
          await driver.get(slot, key, opts.serializable);
        } else {
          kind = "put";
          await driver.put(slot, key, putValue);
        }
        break;
      case "cas": {
        kind = "cas";
        const cur = await driver.get(slot, key, opts.serializable);
        const won = await driver.casPut(slot, key, cur?.modRevision ?? 0, benchValue(opts.valueSize, `${slot}:${seq}:`));
        if (won) cas.succeeded++;
        else cas.conflicts++;
        break;
      }
      case "txn": {
        kind = "txn";
        // A second, different key (etcd refuses a txn that puts one key twice).
        const other = opts.keySpace > 1 ? keyAt((k + 1 + rng.int(opts.keySpace - 1)) % opts.keySpace) : key;
        const held = await driver.txnPuts(slot, key, [
          [key, putValue],
          [other, putValue],
        ]);
        if (held) txn.succeeded++;
        else txn.failed++;
        break;
      }
    }
    const ms = performance.now() - t;
    overall.record(ms);
    if (opts.workload === "mixed") kindRecorder(kind).record(ms);
  }

  async function loop(slot: number): Promise<void> {
    const rng = new SeededRandom((opts.seed + Math.imul(slot + 1, 0x9e3779b1)) >>> 0);
    let seq = 0;
    while (more()) {
      const n = started++;
      if (intervalMs) {
        const wait = t0 + n * intervalMs - performance.now();
        if (wait > 0) await Bun.sleep(wait);
        if (opts.durationMs && performance.now() >= deadline) break;
      }
      try {
        await one(slot, rng, seq++);
        ok++;
      } catch (err) {
        errors++;
        const code = errorCode(err);
        errorsByCode[code] = (errorsByCode[code] ?? 0) + 1;
        errorSamples[code] ??= String((err as Error)?.message ?? err);
        if (ok === 0 && errors >= ABORT_AFTER_ERRORS_WITHOUT_SUCCESS) {
          aborted ??= `${errors} errors and no success (first: ${Object.keys(errorSamples)[0]}: ${Object.values(errorSamples)[0]})`;
        }
      }
      completed++;
    }
  }

  try {
    await Promise.all(Array.from({ length: opts.clients }, (_, slot) => loop(slot)));
  } finally {
    if (timer) clearInterval(timer);
  }
  const elapsedMs = performance.now() - t0;
  if (sink) {
    tick();
    sink.done();
  }

  const sorted = overall.sorted();
  const { json: _json, ...shownOptions } = opts;
  const report: BenchReport = {
    target: driver.name,
    workload: opts.workload,
    options: shownOptions,
    startedAt,
    elapsedMs,
    requests: completed,
    ok,
    errors,
    errorsByCode,
    errorSamples,
    throughput: elapsedMs > 0 ? (ok * 1000) / elapsedMs : 0,
    latencyMs: summarize(sorted),
    histogram: logHistogram(sorted, HISTOGRAM_BUCKETS),
  };
  if (byKind.size > 0) {
    report.byOp = {};
    for (const [kind, rec] of [...byKind].sort(([a], [b]) => a.localeCompare(b))) report.byOp[kind] = summarize(rec.sorted());
  }
  if (opts.workload === "cas") report.cas = cas;
  if (opts.workload === "txn") report.txn = txn;
  if (prepopulated !== undefined) report.prepopulated = prepopulated;
  if (aborted) report.aborted = aborted;
  return report;
}
