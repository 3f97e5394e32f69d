// The pure parts of `raftkv bench`: percentiles, histograms, option validation, report text, and the
// measuring loop driven through an in-memory store. No cluster and no assertions about time.

import { describe, expect, test } from "bun:test";
import {
  BenchOptionError,
  LatencyRecorder,
  SeededRandom,
  benchKey,
  benchValue,
  formatComparison,
  formatFailover,
  formatReport,
  logHistogram,
  measureFailover,
  median,
  percentile,
  resolveBenchOptions,
  runWorkload,
  summarize,
  type BenchOptions,
  type BenchReport,
  type KvDriver,
} from "../../src/bench/bench";

const EP = ["127.0.0.1:7001"];

/** Nearest-rank percentile on a plain sorted array: the reference the fast path must match. */
function referencePercentile(sortedAsc: number[], p: number): number {
  if (p === 0) return sortedAsc[0]!;
  const rank = Math.ceil((p / 100) * sortedAsc.length);
  return sortedAsc[rank - 1]!;
}

/** Latency-like samples: mostly around a few ms with a long tail. */
function samples(seed: number, n: number): number[] {
  const rng = new SeededRandom(seed);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const u = rng.next();
    const tail = rng.next() < 0.02 ? 20 * rng.next() : 0;
    out.push(0.2 + -Math.log(1 - u) * 2 + tail);
  }
  return out;
}

describe("SeededRandom", () => {
  test("repeats for a seed and differs between seeds", () => {
    const a = new SeededRandom(42);
    const b = new SeededRandom(42);
    const c = new SeededRandom(43);
    const xs = Array.from({ length: 20 }, () => a.nextUint32());
    expect(Array.from({ length: 20 }, () => b.nextUint32())).toEqual(xs);
    expect(Array.from({ length: 20 }, () => c.nextUint32())).not.toEqual(xs);
  });

  test("int(n) stays in range and covers it", () => {
    const r = new SeededRandom(7);
    const seen = new Set<number>();
    for (let i = 0; i < 10_000; i++) {
      const v = r.int(10);
      expect(v >= 0 && v < 10 && Number.isInteger(v)).toBe(true);
      seen.add(v);
    }
    expect(seen.size).toBe(10);
  });
});

describe("percentiles", () => {
  test("match a sorted-array reference on seeded random data", () => {
    for (const seed of [1, 2, 3, 99]) {
      for (const n of [1, 2, 7, 100, 1001, 25_000]) {
        const data = samples(seed, n);
        const rec = new LatencyRecorder(16); // small start: exercises growth
        for (const x of data) rec.record(x);
        expect(rec.count).toBe(n);
        const sorted = rec.sorted();
        const ref = [...data].sort((a, b) => a - b);
        expect(Array.from(sorted)).toEqual(ref);
        for (const p of [0, 0.1, 1, 25, 50, 75, 90, 99, 99.9, 99.99, 100]) {
          expect(percentile(sorted, p)).toBe(referencePercentile(ref, p));
        }
        const s = summarize(sorted);
        expect(s.count).toBe(n);
        expect(s.min).toBe(ref[0]!);
        expect(s.max).toBe(ref[n - 1]!);
        expect(s.p50).toBe(referencePercentile(ref, 50));
        expect(s.p90).toBe(referencePercentile(ref, 90));
        expect(s.p99).toBe(referencePercentile(ref, 99));
        expect(s.p999).toBe(referencePercentile(ref, 99.9));
        expect(s.mean).toBeCloseTo(ref.reduce((a, b) => a + b, 0) / n, 9);
        expect(rec.sum).toBeCloseTo(ref.reduce((a, b) => a + b, 0), 6);
      }
    }
  });

  test("nearest rank on a small known set", () => {
    const xs = Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(percentile(xs, 0)).toBe(1);
    expect(percentile(xs, 10)).toBe(1);
    expect(percentile(xs, 11)).toBe(2);
    expect(percentile(xs, 50)).toBe(5);
    expect(percentile(xs, 90)).toBe(9);
    expect(percentile(xs, 99)).toBe(10);
    expect(percentile(xs, 100)).toBe(10);
  });

  test("empty input and bad p", () => {
    expect(percentile([], 50)).toBeNaN();
    expect(summarize([]).count).toBe(0);
    expect(() => percentile([1], 101)).toThrow(RangeError);
    expect(() => percentile([1], -1)).toThrow(RangeError);
    expect(() => percentile([1], NaN)).toThrow(RangeError);
  });

  test("sorting is numeric, not lexicographic", () => {
    const rec = new LatencyRecorder();
    for (const x of [10, 9, 100, 1.5, 2]) rec.record(x);
    expect(Array.from(rec.sorted())).toEqual([1.5, 2, 9, 10, 100]);
  });
});

describe("logHistogram", () => {
  const cases: [string, number[]][] = [
    ["latency-like", samples(5, 10_000)],
    ["uniform", Array.from({ length: 997 }, (_, i) => 1 + i / 10)],
    ["constant", Array.from({ length: 50 }, () => 3)],
    ["single", [0.42]],
    ["with zeros", [0, 0, 0.5, 1, 2, 4, 8, 16]],
    ["two values", [1, 1000]],
  ];
  for (const [name, data] of cases) {
    test(`bucket counts add up to n (${name})`, () => {
      const sorted = Float64Array.from(data).sort();
      const buckets = logHistogram(sorted, 10);
      expect(buckets.length).toBeGreaterThan(0);
      expect(buckets.length).toBeLessThanOrEqual(10);
      expect(buckets.reduce((s, b) => s + b.count, 0)).toBe(data.length);
      expect(buckets[0]!.fromMs).toBeLessThanOrEqual(sorted[0]!);
      expect(buckets.at(-1)!.toMs).toBeGreaterThanOrEqual(sorted[sorted.length - 1]!);
      for (let i = 1; i < buckets.length; i++) {
        expect(buckets[i]!.fromMs).toBe(buckets[i - 1]!.toMs);
        expect(buckets[i]!.toMs).toBeGreaterThan(buckets[i]!.fromMs);
      }
    });
  }

  test("each sample lands in the bucket whose range holds it", () => {
    const sorted = Float64Array.from(samples(11, 3000)).sort();
    const buckets = logHistogram(sorted, 10);
    let i = 0;
    buckets.forEach((b, bi) => {
      for (let k = 0; k < b.count; k++, i++) {
        const x = sorted[i]!;
        expect(x).toBeGreaterThanOrEqual(b.fromMs);
        if (bi < buckets.length - 1) expect(x).toBeLessThan(b.toMs);
        else expect(x).toBeLessThanOrEqual(b.toMs);
      }
    });
  });

  test("edges are log-spaced", () => {
    const buckets = logHistogram(Float64Array.from([1, 1024]), 10);
    const ratios = buckets.map((b) => b.toMs / b.fromMs);
    for (const r of ratios) expect(r).toBeCloseTo(2, 6);
  });

  test("no samples, no buckets; bad bucket count throws", () => {
    expect(logHistogram([], 10)).toEqual([]);
    expect(() => logHistogram([1, 2], 0)).toThrow(RangeError);
  });
});

describe("resolveBenchOptions", () => {
  test("defaults", () => {
    const o = resolveBenchOptions({ workload: "put", endpoints: EP });
    expect(o.clients).toBe(16);
    expect(o.connections).toBe(8);
    expect(o.requests).toBe(10_000);
    expect(o.durationMs).toBe(0);
    expect(o.keySpace).toBe(1000);
    expect(o.keySize).toBe(8);
    expect(o.valueSize).toBe(100);
    expect(o.readRatio).toBe(0.5);
    expect(o.serializable).toBe(false);
    expect(o.rate).toBe(0);
    expect(o.timeoutMs).toBe(5000);
    expect(Number.isInteger(o.seed)).toBe(true);
  });

  test("connections default to min(clients, 8); a duration replaces the request count", () => {
    expect(resolveBenchOptions({ workload: "get", endpoints: EP, clients: 3 }).connections).toBe(3);
    expect(resolveBenchOptions({ workload: "get", endpoints: EP, clients: 64 }).connections).toBe(8);
    const d = resolveBenchOptions({ workload: "get", endpoints: EP, durationMs: 2000 });
    expect(d.durationMs).toBe(2000);
    expect(d.requests).toBe(0);
  });

  test("numbers given as strings (from a command line) are accepted", () => {
    const o = resolveBenchOptions({ workload: "mixed", endpoints: EP, clients: "4" as unknown as number, readRatio: "0.9" as unknown as number });
    expect(o.clients).toBe(4);
    expect(o.readRatio).toBe(0.9);
  });

  const bad: [string, Partial<BenchOptions>, RegExp][] = [
    ["unknown workload", { workload: "scan" as never }, /--workload must be one of put, get, mixed, cas, txn/],
    ["no endpoints", { endpoints: [] }, /no endpoints/],
    ["zero clients", { clients: 0 }, /--clients must be an integer from 1/],
    ["fractional clients", { clients: 1.5 }, /--clients/],
    ["non-numeric clients", { clients: "many" as unknown as number }, /--clients.*"many"/],
    ["more connections than clients", { clients: 4, connections: 5 }, /--connections must be an integer from 1 to 4/],
    ["requests and duration", { requests: 10, durationMs: 10 }, /either --requests or --duration/],
    ["zero requests", { requests: 0 }, /--requests/],
    ["key size too small", { keySpace: 100_000, keySize: 3 }, /--key-size 3 is too small for --key-space 100000/],
    ["huge value", { valueSize: 2 * 1024 * 1024 }, /--value-size/],
    ["read ratio above 1", { readRatio: 1.5 }, /--read-ratio must be a number from 0 to 1/],
    ["negative rate", { rate: -1 }, /--rate/],
    ["zero timeout", { timeoutMs: 0 }, /--timeout/],
  ];
  for (const [name, patch, message] of bad) {
    test(`rejects: ${name}`, () => {
      const opts = { workload: "put", endpoints: EP, ...patch } as BenchOptions;
      expect(() => resolveBenchOptions(opts)).toThrow(BenchOptionError);
      expect(() => resolveBenchOptions(opts)).toThrow(message);
    });
  }
});

describe("keys and values", () => {
  test("keys are zero-padded key numbers of keySize bytes", () => {
    expect(new TextDecoder().decode(benchKey(42, 8))).toBe("00000042");
    expect(benchKey(7, 1).length).toBe(1);
  });
  test("values have exactly valueSize bytes and carry their tag", () => {
    for (const n of [0, 1, 5, 100, 4096]) expect(benchValue(n, "tag").length).toBe(n);
    expect(new TextDecoder().decode(benchValue(10, "XY"))).toBe("XYcdefghij");
    expect(benchValue(10, "x1")).not.toEqual(benchValue(10, "x2"));
  });
});

/** An in-memory store with revisions, for driving the measuring loop without a cluster. */
class MemoryDriver implements KvDriver {
  readonly name = "memory";
  readonly data = new Map<string, { value: Uint8Array; mod: number; version: number }>();
  revision = 0;
  puts = 0;
  failEvery = 0;
  calls = 0;
  /** Before each txn compare: lets a test slip in a competing write. */
  beforeCompare?: (key: string) => void;

  private async maybeFail(): Promise<void> {
    await Promise.resolve();
    this.calls++;
    if (this.failEvery && this.calls % this.failEvery === 0) {
      throw Object.assign(new Error("injected failure"), { code: "INJECTED" });
    }
  }
  private write(key: Uint8Array, value: Uint8Array): void {
    const k = new TextDecoder().decode(key);
    const prev = this.data.get(k);
    this.data.set(k, { value, mod: ++this.revision, version: (prev?.version ?? 0) + 1 });
    this.puts++;
  }
  async put(_slot: number, key: Uint8Array, value: Uint8Array): Promise<void> {
    await this.maybeFail();
    this.write(key, value);
  }
  async get(_slot: number, key: Uint8Array): Promise<{ modRevision: number } | null> {
    await this.maybeFail();
    const e = this.data.get(new TextDecoder().decode(key));
    return e ? { modRevision: e.mod } : null;
  }
  async casPut(_slot: number, key: Uint8Array, modRevision: number, value: Uint8Array): Promise<boolean> {
    await this.maybeFail();
    const k = new TextDecoder().decode(key);
    this.beforeCompare?.(k);
    if ((this.data.get(k)?.mod ?? 0) !== modRevision) return false;
    this.write(key, value);
    return true;
  }
  async txnPuts(_slot: number, compareKey: Uint8Array, puts: [Uint8Array, Uint8Array][]): Promise<boolean> {
    await this.maybeFail();
    if (!((this.data.get(new TextDecoder().decode(compareKey))?.version ?? 0) > -1)) return false;
    const keys = new Set(puts.map(([k]) => new TextDecoder().decode(k)));
    if (keys.size !== puts.length) throw Object.assign(new Error("duplicate key in txn"), { code: "DUPLICATE" });
    for (const [k, v] of puts) this.write(k, v);
    return true;
  }
  async close(): Promise<void> {}
}

async function run(driver: KvDriver, opts: Partial<BenchOptions>, progress: string[] = []): Promise<BenchReport> {
  return runWorkload(driver, resolveBenchOptions({ workload: "put", endpoints: EP, seed: 1, ...opts } as BenchOptions), {
    out: () => {},
    progress: (s) => progress.push(s),
  });
}

describe("runWorkload on an in-memory store", () => {
  test("put: every request counted, latencies recorded, progress reported", async () => {
    const d = new MemoryDriver();
    const progress: string[] = [];
    const r = await run(d, { workload: "put", requests: 500, clients: 7 }, progress);
    expect(r.target).toBe("memory");
    expect(r.requests).toBe(500);
    expect(r.ok).toBe(500);
    expect(r.errors).toBe(0);
    expect(d.puts).toBe(500);
    expect(r.latencyMs.count).toBe(500);
    expect(r.histogram.reduce((s, b) => s + b.count, 0)).toBe(500);
    expect(r.prepopulated).toBeUndefined();
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)).toContain("100%");
  });

  test("get fills the key space first, without measuring it", async () => {
    const d = new MemoryDriver();
    const r = await run(d, { workload: "get", requests: 300, keySpace: 50 });
    expect(r.prepopulated).toBe(50);
    expect(d.data.size).toBe(50);
    expect(d.puts).toBe(50);
    expect(r.ok).toBe(300);
  });

  test("mixed splits reads and writes by readRatio and reports each", async () => {
    const d = new MemoryDriver();
    const r = await run(d, { workload: "mixed", requests: 2000, readRatio: 0.8, keySpace: 100 });
    const gets = r.byOp!.get!.count;
    const puts = r.byOp!.put!.count;
    expect(gets + puts).toBe(2000);
    expect(d.puts).toBe(100 + puts);
    expect(gets / 2000).toBeGreaterThan(0.7);
    expect(gets / 2000).toBeLessThan(0.9);
  });

  test("cas counts successes and conflicts", async () => {
    const d = new MemoryDriver();
    let n = 0;
    d.beforeCompare = (key) => {
      // Every third cas loses to a competing write that lands between its read and its txn.
      if (++n % 3 === 0) d.data.set(key, { value: new Uint8Array(1), mod: ++d.revision, version: 1 });
    };
    const r = await run(d, { workload: "cas", requests: 300, clients: 4 });
    expect(r.cas!.succeeded + r.cas!.conflicts).toBe(300);
    expect(r.cas!.conflicts).toBe(100);
    expect(r.ok).toBe(300);
  });

  test("txn puts two distinct keys per request", async () => {
    const d = new MemoryDriver();
    const r = await run(d, { workload: "txn", requests: 400, keySpace: 2 });
    expect(r.txn).toEqual({ succeeded: 400, failed: 0 });
    expect(r.errors).toBe(0);
    expect(d.puts).toBe(800);
  });

  test("errors are counted by code and kept out of the latency figures", async () => {
    const d = new MemoryDriver();
    d.failEvery = 4;
    const r = await run(d, { workload: "put", requests: 400, clients: 1 });
    expect(r.requests).toBe(400);
    expect(r.errors).toBe(100);
    expect(r.errorsByCode).toEqual({ INJECTED: 100 });
    expect(r.errorSamples.INJECTED).toBe("injected failure");
    expect(r.ok).toBe(300);
    expect(r.latencyMs.count).toBe(300);
    expect(r.aborted).toBeUndefined();
  });

  test("a run that never succeeds stops early", async () => {
    const d = new MemoryDriver();
    d.failEvery = 1;
    const r = await run(d, { workload: "put", requests: 100_000 });
    expect(r.ok).toBe(0);
    expect(r.requests).toBeLessThan(100_000);
    expect(r.aborted).toContain("INJECTED");
  });

  test("a duration run ends on its own", async () => {
    const d = new MemoryDriver();
    const r = await run(d, { workload: "put", durationMs: 50, clients: 2 });
    expect(r.ok).toBeGreaterThan(0);
    expect(r.options.durationMs).toBe(50);
  });
});

function fakeReport(patch: Partial<BenchReport> = {}): BenchReport {
  const sorted = Float64Array.from(samples(3, 1000)).sort();
  const { json: _json, ...options } = resolveBenchOptions({ workload: "put", endpoints: EP, seed: 1 });
  return {
    target: "raftkv",
    workload: "put",
    options,
    startedAt: "2026-01-01T00:00:00.000Z",
    elapsedMs: 1234,
    requests: 1000,
    ok: 1000,
    errors: 0,
    errorsByCode: {},
    errorSamples: {},
    throughput: 810.4,
    latencyMs: summarize(sorted),
    histogram: logHistogram(sorted, 10),
    ...patch,
  };
}

describe("formatReport", () => {
  test("has the expected labels and a histogram", () => {
    const text = formatReport(fakeReport());
    for (const label of ["workload put", "16 clients", "elapsed", "requests", "throughput", "810 req/s", "latency (ms)", "min", "mean", "p50", "p90", "p99", "p99.9", "max", "latency histogram"]) {
      expect(text).toContain(label);
    }
    const bars = text.split("\n").filter((l) => l.includes("|") && l.includes("ms"));
    expect(bars.length).toBe(10);
    expect(text).not.toContain("errors  ");
  });

  test("shows errors by code, cas and txn outcomes, and an abort", () => {
    const text = formatReport(
      fakeReport({
        workload: "cas",
        errors: 3,
        errorsByCode: { TIMEOUT: 2, NO_QUORUM: 1 },
        errorSamples: { TIMEOUT: "timed out after 5000 ms", NO_QUORUM: "no leader" },
        cas: { succeeded: 990, conflicts: 7 },
        aborted: "gave up",
      }),
    );
    expect(text).toContain("TIMEOUT 2, NO_QUORUM 1");
    expect(text).toContain("timed out after 5000 ms");
    expect(text).toContain("990 succeeded, 7 conflicts");
    expect(text).toContain("ABORTED");
    expect(formatReport(fakeReport({ workload: "txn", txn: { succeeded: 5, failed: 1 } }))).toContain("5 succeeded, 1 compare failed");
  });

  test("a run without successes says so", () => {
    const text = formatReport(fakeReport({ ok: 0, latencyMs: summarize([]), histogram: [] }));
    expect(text).toContain("no successful requests");
    expect(text).not.toContain("latency histogram");
  });

  test("the JSON form round-trips", () => {
    const r = fakeReport();
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });
});

describe("comparison tables", () => {
  test("side by side with the ratio", () => {
    const a = fakeReport({ throughput: 2000 });
    const b = fakeReport({ target: "etcd", throughput: 1000 });
    const text = formatComparison("raftkv", "etcd", [
      { label: "put 64", a, b },
      { label: "get 64", a, b: null },
    ]);
    expect(text).toContain("raftkv req/s");
    expect(text).toContain("etcd req/s");
    expect(text).toContain("raftkv/etcd");
    expect(text).toContain("2.00x");
    const getLine = text.split("\n").find((l) => l.startsWith("get 64"))!;
    expect(getLine).toContain("-");
  });

  test("failover figures with the median", () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
    const text = formatFailover([{ label: "raftkv", samples: [700, 800, 600] }]);
    expect(text).toContain("median ms");
    expect(text).toContain("700");
  });
});

describe("measureFailover", () => {
  test("reports the time to the first success issued after the kill", async () => {
    const d = new MemoryDriver();
    let killed = -1;
    let down = false;
    const realPut = d.put.bind(d);
    d.put = async (slot, key, value) => {
      if (down) {
        await Bun.sleep(1);
        down = ++d.calls < 1_000_000 && d.calls % 20 !== 0; // a few failures, then the store is back
        throw Object.assign(new Error("no leader"), { code: "NO_LEADER" });
      }
      return realPut(slot, key, value);
    };
    const r = await measureFailover(d, {
      killPid: 12345,
      warmupMs: 5,
      kill: (pid) => {
        killed = pid;
        down = true;
      },
    });
    expect(killed).toBe(12345);
    expect(r.unavailableMs).not.toBeNull();
    expect(r.unavailableMs!).toBeGreaterThanOrEqual(0);
    expect(r.putsBeforeKill).toBeGreaterThan(0);
    expect(r.errorsAfterKill.NO_LEADER).toBeGreaterThan(0);
  });
});
