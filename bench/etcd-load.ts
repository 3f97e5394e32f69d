// Load and failover probe for etcd, used by bench/compare-etcd.sh. It speaks etcd's HTTP/JSON gateway
// (POST /v3/kv/put, /v3/kv/range, /v3/kv/txn with base64 keys and values; part of every etcd 3.x
// server, no client dependency) and is measured by the very same loop as raftkv (src/bench/runner.ts).
//
//   bun bench/etcd-load.ts run --endpoints 127.0.0.1:2379,... --workload put --clients 64 --duration-ms 3000 [--json]
//   bun bench/etcd-load.ts leader --endpoints ...                  # prints the leader's index in --endpoints
//   bun bench/etcd-load.ts failover --endpoints ... --kill-pid PID # JSON: FailoverResult
//   bun bench/etcd-load.ts table --rows FILE [--failover FILE]     # the side-by-side table of compare-etcd.sh
//   bun bench/etcd-load.ts summary REPORT.json...                  # one line per report
//
// Endpoint choice (--target): "spread" (default) gives slot i endpoint i % n, as etcd's own client
// balances over its endpoints (followers forward writes and ReadIndex requests to the leader);
// "leader" sends everything to the leader, as raftkv's client does. On a connection error or an
// UNAVAILABLE answer (no leader, leader changed) a slot moves to the next endpoint and retries, with
// the same 20..200 ms backoff, 2 s per attempt and --timeout-ms overall as raftkv's client.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import {
  formatComparison,
  formatFailover,
  formatMs,
  formatReport,
  measureFailover,
  resolveBenchOptions,
  runWorkload,
  type BenchOptions,
  type BenchReport,
  type ComparisonRow,
  type FailoverFigures,
  type KvDriver,
  type Workload,
} from "../src/bench/bench";

/** Per-attempt timeout, as raftkv's client (src/client/client.ts); --attempt-timeout-ms changes it. */
const ATTEMPT_TIMEOUT_MS = 2000;
/** gRPC status codes the gateway passes through that mean "try again, maybe elsewhere". */
const GRPC_UNAVAILABLE = 14;
const GRPC_NAMES: Record<number, string> = {
  1: "CANCELLED",
  2: "UNKNOWN",
  3: "INVALID_ARGUMENT",
  4: "DEADLINE_EXCEEDED",
  5: "NOT_FOUND",
  8: "RESOURCE_EXHAUSTED",
  9: "FAILED_PRECONDITION",
  13: "INTERNAL",
  14: "UNAVAILABLE",
};

export class EtcdError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "EtcdError";
  }
}

const b64Cache = new WeakMap<Uint8Array, string>();
function b64(bytes: Uint8Array): string {
  let s = b64Cache.get(bytes);
  if (s === undefined) {
    s = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
    b64Cache.set(bytes, s);
  }
  return s;
}

interface EtcdKv {
  mod_revision?: string;
  version?: string;
}

export class EtcdGatewayDriver implements KvDriver {
  readonly name = "etcd";
  private readonly urls: string[];
  private readonly slotTarget = new Map<number, number>();
  private preferred = -1;

  constructor(
    endpoints: string[],
    private readonly timeoutMs: number,
    private readonly target: "spread" | "leader" = "spread",
    private readonly attemptTimeoutMs = ATTEMPT_TIMEOUT_MS,
  ) {
    this.urls = endpoints.map((e) => (e.startsWith("http") ? e.replace(/\/$/, "") : `http://${e}`));
  }

  /** With target "leader": find it once before the run. */
  async init(): Promise<void> {
    if (this.target === "leader") this.preferred = await etcdLeaderIndex(this.urls);
  }

  private targetOf(slot: number): number {
    let t = this.slotTarget.get(slot);
    if (t === undefined) {
      t = this.preferred >= 0 ? this.preferred : slot % this.urls.length;
      this.slotTarget.set(slot, t);
    }
    return t;
  }

  private async call(slot: number, path: string, body: unknown): Promise<any> {
    const deadline = Date.now() + this.timeoutMs;
    const payload = JSON.stringify(body);
    let backoff = 20;
    let last = "";
    let lastCode = "UNAVAILABLE";
    let failures = 0;
    while (Date.now() < deadline) {
      const idx = this.targetOf(slot);
      const url = this.urls[idx]! + path;
      let res: Response;
      try {
        res = await fetch(url, {
          method: "POST",
          body: payload,
          headers: { "content-type": "application/json" },
          signal: AbortSignal.timeout(Math.max(1, Math.min(this.attemptTimeoutMs, deadline - Date.now()))),
        });
      } catch (err) {
        last = `${url}: ${(err as Error).message}`;
        lastCode = "CONNECTION";
        this.slotTarget.set(slot, (idx + 1) % this.urls.length);
        if (++failures >= this.urls.length) await Bun.sleep(Math.min(backoff, Math.max(0, deadline - Date.now()))), (backoff = Math.min(backoff * 2, 200));
        continue;
      }
      const text = await res.text();
      let json: any;
      try {
        json = text ? JSON.parse(text) : {};
      } catch {
        throw new EtcdError("BAD_RESPONSE", `${url}: HTTP ${res.status}: ${text.slice(0, 200)}`);
      }
      if (res.ok && json.error === undefined) return json;
      const grpc = typeof json.code === "number" ? json.code : -1;
      const message = String(json.message ?? json.error ?? `HTTP ${res.status}`);
      if (grpc !== GRPC_UNAVAILABLE) throw new EtcdError(GRPC_NAMES[grpc] ?? `HTTP_${res.status}`, message);
      last = message;
      lastCode = "UNAVAILABLE";
      this.slotTarget.set(slot, (idx + 1) % this.urls.length);
      await Bun.sleep(Math.min(backoff, Math.max(0, deadline - Date.now())));
      backoff = Math.min(backoff * 2, 200);
    }
    throw new EtcdError(lastCode === "CONNECTION" ? "UNAVAILABLE" : "TIMEOUT", `no success within ${this.timeoutMs} ms: ${last}`);
  }

  async put(slot: number, key: Uint8Array, value: Uint8Array): Promise<void> {
    await this.call(slot, "/v3/kv/put", { key: b64(key), value: b64(value) });
  }

  async get(slot: number, key: Uint8Array, serializable: boolean): Promise<{ modRevision: number } | null> {
    const r = await this.call(slot, "/v3/kv/range", serializable ? { key: b64(key), serializable: true } : { key: b64(key) });
    const kv = (r.kvs as EtcdKv[] | undefined)?.[0];
    return kv ? { modRevision: Number(kv.mod_revision ?? 0) } : null;
  }

  async casPut(slot: number, key: Uint8Array, modRevision: number, value: Uint8Array): Promise<boolean> {
    const r = await this.call(slot, "/v3/kv/txn", {
      compare: [{ key: b64(key), target: "MOD", result: "EQUAL", mod_revision: String(modRevision) }],
      success: [{ request_put: { key: b64(key), value: b64(value) } }],
    });
    return r.succeeded === true;
  }

  async txnPuts(slot: number, compareKey: Uint8Array, puts: [Uint8Array, Uint8Array][]): Promise<boolean> {
    const r = await this.call(slot, "/v3/kv/txn", {
      compare: [{ key: b64(compareKey), target: "VERSION", result: "GREATER", version: "-1" }],
      success: puts.map(([key, value]) => ({ request_put: { key: b64(key), value: b64(value) } })),
    });
    return r.succeeded === true;
  }

  async close(): Promise<void> {}
}

/** Index in `urls` of the member every reachable member names as leader; throws if none answers. */
export async function etcdLeaderIndex(urls: string[]): Promise<number> {
  const answers = await Promise.all(
    urls.map(async (u) => {
      try {
        const res = await fetch(`${u}/v3/maintenance/status`, { method: "POST", body: "{}", signal: AbortSignal.timeout(1000) });
        const j: any = await res.json();
        return { member: String(j.header?.member_id ?? ""), leader: String(j.leader ?? "") };
      } catch {
        return null;
      }
    }),
  );
  const idx = answers.findIndex((a) => a && a.member && a.member === a.leader);
  if (idx < 0) throw new EtcdError("NO_LEADER", "no etcd member reports itself as leader");
  return idx;
}

// ---- command line -------------------------------------------------------------------------------

if (import.meta.main) {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      endpoints: { type: "string" },
      target: { type: "string", default: "spread" },
      workload: { type: "string", default: "put" },
      clients: { type: "string" },
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
      "attempt-timeout-ms": { type: "string", default: String(ATTEMPT_TIMEOUT_MS) },
      rows: { type: "string" },
      failover: { type: "string" },
    },
  });
  const opt = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const endpoints = () => {
    const list = (values.endpoints ?? "").split(",").map((s) => s.trim()).filter(Boolean);
    if (!list.length) throw new Error("--endpoints host:port,... is required");
    return list;
  };
  const target = values.target === "leader" ? "leader" : values.target === "spread" ? "spread" : null;

  async function main(): Promise<number> {
    if (!target) throw new Error(`--target must be spread or leader, got ${JSON.stringify(values.target)}`);
    switch (positionals[0] ?? "run") {
      case "run": {
        const opts: BenchOptions = {
          workload: values.workload as Workload,
          endpoints: endpoints(),
          clients: opt(values.clients),
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
        const resolved = resolveBenchOptions(opts);
        const driver = new EtcdGatewayDriver(resolved.endpoints, resolved.timeoutMs, target, Number(values["attempt-timeout-ms"]));
        await driver.init();
        const report = await runWorkload(driver, resolved, { out: (s) => console.log(s) });
        await driver.close();
        console.log(resolved.json ? JSON.stringify(report) : formatReport(report));
        return report.aborted ? 1 : 0;
      }
      case "leader": {
        const urls = endpoints().map((e) => `http://${e}`);
        console.log(await etcdLeaderIndex(urls));
        return 0;
      }
      case "failover": {
        if (!values["kill-pid"]) throw new Error("--kill-pid is required");
        const driver = new EtcdGatewayDriver(endpoints(), Number(values["timeout-ms"]), target, Number(values["attempt-timeout-ms"]));
        await driver.init();
        const r = await measureFailover(driver, { killPid: Number(values["kill-pid"]), warmupMs: opt(values["warmup-ms"]) });
        console.log(JSON.stringify(r));
        return 0;
      }
      case "summary": {
        // One line per JSON report file given: throughput, p50, p99, errors.
        for (const path of positionals.slice(1)) {
          let r: BenchReport;
          try {
            r = JSON.parse(readFileSync(path, "utf8").trim().split("\n").at(-1)!) as BenchReport;
          } catch {
            console.log(`no report (see the load log)`);
            continue;
          }
          const errors = r.errors ? `  errors ${Object.entries(r.errorsByCode).map(([c, n]) => `${c} ${n}`).join(", ")}` : "";
          console.log(`${r.throughput.toFixed(0).padStart(7)} req/s  p50 ${formatMs(r.latencyMs.p50)} ms  p99 ${formatMs(r.latencyMs.p99)} ms${errors}`);
        }
        return 0;
      }
      case "table": {
        // --rows: lines "label<TAB>raftkv-report.json<TAB>etcd-report.json";
        // --failover: lines "system<TAB>ms" (ms empty or "null" for a round that never recovered).
        if (!values.rows) throw new Error("--rows FILE is required");
        const load = (path: string): BenchReport | null => {
          try {
            return JSON.parse(readFileSync(path, "utf8").trim().split("\n").at(-1)!) as BenchReport;
          } catch {
            return null;
          }
        };
        const rows: ComparisonRow[] = readFileSync(values.rows, "utf8")
          .split("\n")
          .filter(Boolean)
          .map((line) => {
            const [label, a, b] = line.split("\t");
            return { label: label!, a: a ? load(a) : null, b: b ? load(b) : null };
          });
        console.log(formatComparison("raftkv", "etcd", rows));
        if (values.failover) {
          const bySystem = new Map<string, number[]>();
          const missed = new Map<string, number>();
          for (const line of readFileSync(values.failover, "utf8").split("\n").filter(Boolean)) {
            const [system, ms] = line.split("\t");
            if (!bySystem.has(system!)) bySystem.set(system!, []);
            if (ms && ms !== "null" && Number.isFinite(Number(ms))) bySystem.get(system!)!.push(Number(ms));
            else missed.set(system!, (missed.get(system!) ?? 0) + 1);
          }
          const figures: FailoverFigures[] = [...bySystem].map(([label, samples]) => ({ label, samples }));
          console.log("");
          console.log(formatFailover(figures));
          for (const [system, n] of missed) console.log(`${system}: ${n} round(s) without a figure (see the logs)`);
        }
        return 0;
      }
      default:
        console.error(`error: unknown mode ${JSON.stringify(positionals[0])}: run, leader, failover, summary or table`);
        return 2;
    }
  }

  try {
    process.exit(await main());
  } catch (err) {
    console.error(`error: ${(err as Error).message}`);
    process.exit(2);
  }
}
