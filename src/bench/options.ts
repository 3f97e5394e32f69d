// Options of `raftkv bench`: their defaults, their validation (errors name the command-line flag), and
// the shape of the keys and values a run uses.

export const WORKLOADS = ["put", "get", "mixed", "cas", "txn"] as const;
export type Workload = (typeof WORKLOADS)[number];

export interface BenchOptions {
  /**
   * put: blind puts of random keys. get: reads of random keys (the key space is filled first, not
   * measured). mixed: reads with probability readRatio, else puts (key space filled first). cas: read a
   * random key, then a txn that puts a new value only if its modRevision is unchanged (conflicts counted).
   * txn: one txn per request with a compare on one key's version and two puts.
   */
  workload: Workload;
  endpoints: string[];
  /** Concurrent requests in flight (one loop each). Default 16. */
  clients?: number;
  /**
   * RaftKvClient instances (each with its own TCP connection to the leader) the concurrent clients are
   * spread over. Default min(clients, 8). Each client gives every write in flight its own server
   * session ("lane"), so sharing a connection keeps writes exactly-once.
   */
  connections?: number;
  /** Total requests. Default 10,000 unless durationMs is given. */
  requests?: number;
  /** Run for this long instead of a fixed number of requests. */
  durationMs?: number;
  /** Keys are chosen uniformly from this many. Default 1000. */
  keySpace?: number;
  /** Bytes per key: the key number, zero-padded. Default 8. */
  keySize?: number;
  /** Bytes per value. Default 100. */
  valueSize?: number;
  /** Share of reads in the mixed workload, 0..1. Default 0.5. */
  readRatio?: number;
  /** Serializable (local, possibly stale) reads instead of linearizable ones. */
  serializable?: boolean;
  /** Total requests per second across all clients; 0 = as fast as possible. Default 0. */
  rate?: number;
  /** Per-request timeout, retries included. Default 5000 ms. */
  timeoutMs?: number;
  /** Seed of the key choices. Default: random. */
  seed?: number;
  /** runBench prints the report as JSON (no progress on stdout either way). */
  json?: boolean;
  /** Every key the run writes starts with this (not empty). Default BENCH_DEFAULTS.prefix. */
  prefix?: string;
  /** Leave the keys under the prefix in place instead of deleting them after the run. */
  keep?: boolean;
}

export interface ResolvedBenchOptions {
  workload: Workload;
  endpoints: string[];
  clients: number;
  connections: number;
  requests: number;
  durationMs: number;
  keySpace: number;
  keySize: number;
  valueSize: number;
  readRatio: number;
  serializable: boolean;
  rate: number;
  timeoutMs: number;
  seed: number;
  json: boolean;
  prefix: string;
  keep: boolean;
}

export const BENCH_DEFAULTS = {
  clients: 16,
  maxDefaultConnections: 8,
  requests: 10_000,
  keySpace: 1000,
  keySize: 8,
  valueSize: 100,
  readRatio: 0.5,
  rate: 0,
  timeoutMs: 5000,
  /** Where a run's keys go, so it never touches the user's keys and can delete its own afterwards. */
  prefix: "__bench/",
} as const;

/** Limits of the options themselves (raftkv's own key and value caps are 4 KiB and 1 MiB). */
export const BENCH_LIMITS = {
  maxClients: 10_000,
  maxKeySize: 4096,
  maxValueSize: 1024 * 1024,
  maxKeySpace: 100_000_000,
} as const;

export class BenchOptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BenchOptionError";
  }
}

/** Values from a command-line parser may arrive as strings; numbers pass through. */
function num(v: unknown): number {
  if (typeof v === "number") return v;
  if (typeof v === "string" && v.trim() !== "") return Number(v);
  return NaN;
}

function intOption(name: string, v: unknown, min: number, max: number): number {
  const n = num(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new BenchOptionError(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  }
  return n;
}

/** Fills in defaults and checks every option; throws BenchOptionError naming the flag at fault. */
export function resolveBenchOptions(opts: BenchOptions): ResolvedBenchOptions {
  if (!WORKLOADS.includes(opts.workload as Workload)) {
    throw new BenchOptionError(`--workload must be one of ${WORKLOADS.join(", ")}, got ${JSON.stringify(opts.workload)}`);
  }
  const endpoints = (opts.endpoints ?? []).map((e) => String(e).trim()).filter(Boolean);
  if (!endpoints.length) throw new BenchOptionError("no endpoints given");

  const clients = opts.clients === undefined ? BENCH_DEFAULTS.clients : intOption("clients", opts.clients, 1, BENCH_LIMITS.maxClients);
  const connections =
    opts.connections === undefined
      ? Math.min(clients, BENCH_DEFAULTS.maxDefaultConnections)
      : intOption("connections", opts.connections, 1, clients);

  if (opts.requests !== undefined && opts.durationMs !== undefined) {
    throw new BenchOptionError("give either --requests or --duration, not both");
  }
  const durationMs = opts.durationMs === undefined ? 0 : intOption("duration", opts.durationMs, 1, 24 * 3600 * 1000);
  const requests =
    opts.requests === undefined ? (durationMs ? 0 : BENCH_DEFAULTS.requests) : intOption("requests", opts.requests, 1, 1_000_000_000);

  const keySpace = opts.keySpace === undefined ? BENCH_DEFAULTS.keySpace : intOption("key-space", opts.keySpace, 1, BENCH_LIMITS.maxKeySpace);
  const keySize = opts.keySize === undefined ? BENCH_DEFAULTS.keySize : intOption("key-size", opts.keySize, 1, BENCH_LIMITS.maxKeySize);
  const prefix = opts.prefix ?? BENCH_DEFAULTS.prefix;
  if (!prefix) throw new BenchOptionError("--prefix must not be empty: the run deletes everything under it afterwards");
  const prefixBytes = new TextEncoder().encode(prefix).length;
  if (keySize + prefixBytes > BENCH_LIMITS.maxKeySize) {
    throw new BenchOptionError(`--key-size ${keySize} plus the ${prefixBytes}-byte --prefix is over the ${BENCH_LIMITS.maxKeySize}-byte key limit`);
  }
  const digits = String(keySpace - 1).length;
  if (keySize < digits) {
    throw new BenchOptionError(`--key-size ${keySize} is too small for --key-space ${keySpace}: key numbers need ${digits} digits`);
  }
  const valueSize =
    opts.valueSize === undefined ? BENCH_DEFAULTS.valueSize : intOption("value-size", opts.valueSize, 0, BENCH_LIMITS.maxValueSize);

  let readRatio: number = BENCH_DEFAULTS.readRatio;
  if (opts.readRatio !== undefined) {
    readRatio = num(opts.readRatio);
    if (!(readRatio >= 0 && readRatio <= 1)) {
      throw new BenchOptionError(`--read-ratio must be a number from 0 to 1, got ${JSON.stringify(opts.readRatio)}`);
    }
  }

  let rate: number = BENCH_DEFAULTS.rate;
  if (opts.rate !== undefined) {
    rate = num(opts.rate);
    if (!(rate >= 0 && Number.isFinite(rate))) {
      throw new BenchOptionError(`--rate must be a number of requests per second >= 0 (0 = unlimited), got ${JSON.stringify(opts.rate)}`);
    }
  }

  const timeoutMs = opts.timeoutMs === undefined ? BENCH_DEFAULTS.timeoutMs : intOption("timeout", opts.timeoutMs, 1, 3_600_000);
  const seed = opts.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : intOption("seed", opts.seed, 0, 2 ** 32 - 1);

  return {
    workload: opts.workload as Workload,
    endpoints,
    clients,
    connections,
    requests,
    durationMs,
    keySpace,
    keySize,
    valueSize,
    readRatio,
    serializable: !!opts.serializable,
    rate,
    timeoutMs,
    seed,
    json: !!opts.json,
    prefix,
    keep: !!opts.keep,
  };
}

/** Whether a workload's keys must exist before it is measured. */
export function needsPrepopulate(workload: Workload): boolean {
  return workload === "get" || workload === "mixed";
}

const te = new TextEncoder();

/** Key number `i` as `keySize` bytes: the decimal number, zero-padded ("00000042"). */
export function benchKey(i: number, keySize: number): Uint8Array {
  return te.encode(String(i).padStart(keySize, "0"));
}

/**
 * A value of exactly `size` bytes whose first bytes carry `tag` (so successive values differ), the rest
 * filled with a printable pattern.
 */
export function benchValue(size: number, tag = ""): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = 97 + (i % 26); // a..z
  const t = te.encode(tag);
  out.set(t.subarray(0, size));
  return out;
}
