// Latency bookkeeping for the benchmark: every sample is kept (8 bytes each, in a growable
// Float64Array), so percentiles are exact rather than bucket approximations. A million samples cost
// 8 MB; a run long enough to matter for memory would be far longer than anything `raftkv bench` is for.

/** Latencies in milliseconds, appended one at a time. */
export class LatencyRecorder {
  private samples: Float64Array;
  private n = 0;
  private total = 0;

  constructor(initialCapacity = 16_384) {
    this.samples = new Float64Array(Math.max(16, initialCapacity));
  }

  record(ms: number): void {
    if (this.n === this.samples.length) {
      const bigger = new Float64Array(this.samples.length * 2);
      bigger.set(this.samples);
      this.samples = bigger;
    }
    this.samples[this.n++] = ms;
    this.total += ms;
  }

  get count(): number {
    return this.n;
  }

  get sum(): number {
    return this.total;
  }

  /** A sorted copy of the samples (the recorder itself is left as it is). */
  sorted(): Float64Array {
    return this.samples.slice(0, this.n).sort();
  }
}

/**
 * The p-th percentile (0..100) of ascending `sorted` by the nearest-rank method: the smallest sample
 * such that at least p% of all samples are <= it. p = 0 gives the minimum. NaN for no samples.
 */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be within 0..100, got ${p}`);
  const rank = Math.ceil((p / 100) * n);
  return sorted[Math.min(n - 1, Math.max(0, rank - 1))]!;
}

export interface LatencySummary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export interface HistogramBucket {
  /** Lower edge, ms (inclusive). */
  fromMs: number;
  /** Upper edge, ms (exclusive, except for the last bucket which includes max). */
  toMs: number;
  count: number;
}

export function summarize(sorted: ArrayLike<number>): LatencySummary {
  const n = sorted.length;
  if (n === 0) return { count: 0, min: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  return {
    count: n,
    min: sorted[0]!,
    mean: sum / n,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    max: sorted[n - 1]!,
  };
}

/** Smallest latency a histogram edge may have: keeps log spacing defined when min is 0. */
const MIN_EDGE_MS = 0.001;

/**
 * `buckets` log-spaced buckets from the smallest to the largest sample of ascending `sorted`. Every
 * sample falls in exactly one bucket, so the counts add up to sorted.length.
 */
export function logHistogram(sorted: ArrayLike<number>, buckets = 10): HistogramBucket[] {
  const n = sorted.length;
  if (n === 0) return [];
  if (!Number.isInteger(buckets) || buckets < 1) throw new RangeError(`buckets must be a positive integer, got ${buckets}`);
  const lo = Math.max(sorted[0]!, MIN_EDGE_MS);
  const hi = Math.max(sorted[n - 1]!, lo);
  if (hi === lo) return [{ fromMs: sorted[0]!, toMs: hi, count: n }];
  const ratio = hi / lo;
  const edges: number[] = [];
  for (let i = 0; i <= buckets; i++) edges.push(lo * Math.pow(ratio, i / buckets));
  edges[0] = Math.min(sorted[0]!, lo);
  edges[buckets] = hi;
  const out: HistogramBucket[] = [];
  let i = 0;
  for (let b = 0; b < buckets; b++) {
    const upper = edges[b + 1]!;
    const last = b === buckets - 1;
    let count = 0;
    while (i < n && (last || sorted[i]! < upper)) {
      count++;
      i++;
    }
    out.push({ fromMs: edges[b]!, toMs: upper, count });
  }
  return out;
}

/** Milliseconds with about three significant digits: 0.0123, 0.456, 7.89, 12.3, 456, 7890. */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  const a = Math.abs(ms);
  if (a === 0) return "0";
  if (a < 0.1) return ms.toFixed(4);
  if (a < 1) return ms.toFixed(3);
  if (a < 10) return ms.toFixed(2);
  if (a < 100) return ms.toFixed(1);
  return ms.toFixed(0);
}

/**
 * A small seeded generator (xoshiro128** on four 32-bit words) so key choices and test data repeat
 * exactly for a given seed.
 */
export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    // Spread the seed over four words with a simple integer hash; avoid the all-zero state.
    let s = (seed >>> 0) ^ 0x9e3779b9;
    const next = () => {
      s = Math.imul(s ^ (s >>> 16), 0x85ebca6b);
      s = Math.imul(s ^ (s >>> 13), 0xc2b2ae35);
      s ^= s >>> 16;
      return s >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next() | 1;
  }

  /** Uniform 32-bit unsigned integer (xoshiro128** step). */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
