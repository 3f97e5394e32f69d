#!/usr/bin/env bun
// raftkv: one binary that is both a Raft node (`serve`) and its client (`put`, `get`, `del`, `status`).
// Each command is a thin call into server/ or client/.

import cac from "cac";
import { existsSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { ConfigError, formatAddr, loadNodesConf, type NodeAddr } from "./config";
import { readFileSync } from "node:fs";
import { RaftKvClient, RaftKvError, toBytes, toText } from "./client/client";
import { contend, electionPrefix, holder, lockPrefix } from "./client/recipes";
import { parseTxn, TxnSyntaxError } from "./cli/txn";
import { BenchOptionError, runBench, type BenchOptions } from "./bench/bench";
import { RaftKvNode, DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS, DEFAULT_SNAPSHOT_ENTRIES } from "./server/node";
import { isLogLevel } from "./server/log";
import { VERSION, type NodeStatus } from "./protocol";
import type { DelResult, KeyValue, RangeResult } from "./kv/types";

const cli = cac("raftkv");

/** Exit codes: 0 ok, 1 not found / request failed, 2 bad usage or configuration, 3 cluster unavailable. */
class UsageError extends Error {}

interface ClientFlags {
  endpoints?: string;
  config?: string;
  json?: boolean;
  writeOut?: string;
  timeout?: number;
}

function endpointsFrom(flags: ClientFlags): string[] {
  if (flags.endpoints) return String(flags.endpoints).split(",").map((s) => s.trim()).filter(Boolean);
  const env = process.env.RAFTKV_ENDPOINTS;
  if (env) return env.split(",").map((s) => s.trim()).filter(Boolean);
  const path = flags.config ?? "nodes.conf";
  if (!existsSync(path)) {
    throw new UsageError(`no cluster given: pass --endpoints host:port,..., set RAFTKV_ENDPOINTS, or run where ${path} is (-c FILE for another)`);
  }
  return loadNodesConf(path).map(formatAddr);
}

function client(flags: ClientFlags): RaftKvClient {
  return new RaftKvClient({ endpoints: endpointsFrom(flags), timeoutMs: Number(flags.timeout ?? 5000) });
}

function printJson(v: unknown): void {
  console.log(
    JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? toText(x) : x)),
  );
}

function kvJson(kv: KeyValue) {
  return {
    key: toText(kv.key),
    value: toText(kv.value),
    createRevision: kv.createRevision,
    modRevision: kv.modRevision,
    version: kv.version,
    lease: kv.lease,
  };
}

async function run(fn: () => Promise<number | void>): Promise<void> {
  let code = 0;
  try {
    code = (await fn()) ?? 0;
  } catch (err) {
    if (err instanceof UsageError || err instanceof ConfigError) {
      console.error(`error: ${err.message}`);
      code = 2;
    } else if (err instanceof RaftKvError) {
      console.error(`error: ${err.message}`);
      code = ["NO_QUORUM", "UNAVAILABLE", "TIMEOUT"].includes(err.code) ? 3 : 1;
    } else {
      console.error(`error: ${(err as Error).message}`);
      code = 1;
    }
  }
  process.exit(code);
}

const clientOptions = (cmd: ReturnType<typeof cli.command>) =>
  cmd
    .option("--endpoints <list>", "Comma-separated host:port of cluster nodes (else $RAFTKV_ENDPOINTS, else ./nodes.conf)")
    .option("-c, --config <file>", "nodes.conf to read endpoints from", { default: "nodes.conf" })
    .option("--timeout <ms>", "Give up after this long, retries included", { default: 5000 })
    .option("--json", "Machine-readable output (one JSON document, or one per line when streaming)")
    .option("-w, --write-out <format>", "simple or json (same as --json)");

// ---- serve ------------------------------------------------------------------------------

cli
  .command("serve <id> [config]", "Run node <id> of the cluster listed in [config] (default ./nodes.conf)")
  .option("--data-dir <dir>", "Where this node keeps its log and snapshots (default ./data/node-<id>)")
  .option("--heartbeat-ms <ms>", "Leader heartbeat interval", { default: DEFAULT_HEARTBEAT_MS })
  .option("--election-ms <ms>", "Base election timeout (randomized up to 2x)", { default: DEFAULT_ELECTION_MS })
  .option("--snapshot-entries <n>", "Snapshot and compact the log after n applied entries (and once the log since the last snapshot is a quarter of the state)", { default: DEFAULT_SNAPSHOT_ENTRIES })
  .option("--listen-host <host>", "Address to bind (default: the node's address in the config)")
  .option("--log-level <level>", "debug, info, warn or error", { default: "info" })
  .option("--log-format <format>", "text or json", { default: "text" })
  .option("--http-port <port>", "Also serve GET /health, /status and /metrics (Prometheus) over HTTP on this port")
  .option("--session-ttl <ttl>", "Forget a client's exactly-once session after this idle time (use the same on every node)", { default: "10m" })
  .option("--no-group-commit", "Benchmarking only: one fsync per log entry instead of one per batch")
  .example("raftkv serve 0 nodes.conf")
  .action((idText: string, configPath: string | undefined, flags) =>
    run(async () => {
      if (!/^\d+$/.test(String(idText))) throw new UsageError(`node id must be a number, got ${JSON.stringify(idText)}`);
      const id = Number(idText);
      const nodes = loadNodesConf(configPath ?? "nodes.conf");
      if (!isLogLevel(flags.logLevel)) throw new UsageError(`--log-level must be debug, info, warn or error`);
      if (flags.logFormat !== "text" && flags.logFormat !== "json") throw new UsageError(`--log-format must be text or json`);
      for (const [name, v] of [["--heartbeat-ms", flags.heartbeatMs], ["--election-ms", flags.electionMs], ["--snapshot-entries", flags.snapshotEntries]] as const) {
        if (!Number.isInteger(Number(v)) || Number(v) <= 0) throw new UsageError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
      }
      let node: RaftKvNode;
      try {
        node = new RaftKvNode({
          id,
          nodes,
          dataDir: flags.dataDir ?? `data/node-${id}`,
          heartbeatMs: Number(flags.heartbeatMs),
          electionMs: Number(flags.electionMs),
          snapshotEntries: Number(flags.snapshotEntries),
          logLevel: flags.logLevel,
          logFormat: flags.logFormat,
          listenHost: flags.listenHost,
          groupCommit: flags.groupCommit !== false,
          sessionTtlMs: parseTtlMs(String(flags.sessionTtl)),
          httpPort: flags.httpPort === undefined ? undefined : positiveInt("--http-port", flags.httpPort),
        });
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      await node.start();
      await new Promise<void>((resolve) => {
        const shutdown = () => {
          node.stop().finally(resolve);
        };
        process.once("SIGINT", shutdown);
        process.once("SIGTERM", shutdown);
      });
    }),
  );

// ---- client commands ---------------------------------------------------------------------

function isJson(flags: ClientFlags): boolean {
  return !!flags.json || flags.writeOut === "json";
}

function positiveInt(name: string, v: unknown): number {
  if (!/^\d+$/.test(String(v)) || Number(v) <= 0) throw new UsageError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** TTLs: "10" or "10s" (seconds, as etcd), "500ms", "2m". */
function parseTtlMs(v: string): number {
  const m = /^(\d+)(ms|s|m)?$/.exec(String(v).trim());
  if (!m || Number(m[1]) <= 0) throw new UsageError(`TTL must look like 10, 10s, 500ms or 2m, got ${JSON.stringify(v)}`);
  return Number(m[1]) * (m[2] === "ms" ? 1 : m[2] === "m" ? 60_000 : 1000);
}

clientOptions(cli.command("put <key> <value>", "Store <value> under <key>; prints OK once a majority has it on disk"))
  .option("--lease <id>", "Attach the key to a lease: it is deleted when the lease expires or is revoked")
  .example("raftkv put 10 42")
  .example("raftkv put service/a 10.0.0.5 --lease 7")
  .action((key: string, value: string, flags: ClientFlags & { lease?: string }) =>
    run(async () => {
      const c = client(flags);
      const lease = flags.lease === undefined ? undefined : positiveInt("--lease", flags.lease);
      const r = await c.put(String(key), String(value), { lease });
      c.close();
      if (isJson(flags)) printJson({ ok: true, revision: r.revision });
      else console.log("OK");
    }),
  );

clientOptions(cli.command("get <key> [rangeEnd]", "Print the value of <key>, or the keys in [key, rangeEnd); linearizable unless --serializable"))
  .option("--prefix", "Every key that starts with <key> (\"\" for all keys)")
  .option("--limit <n>", "At most n keys")
  .option("--keys-only", "Print keys without values")
  .option("--count-only", "Print only how many keys match")
  .option("--serializable", "Read the contacted node's local state: faster, possibly stale")
  .example("raftkv get 10")
  .example("raftkv get 10 --json                # value with create/mod revision and version")
  .example("raftkv get config/ --prefix --keys-only")
  .example("raftkv get a c                      # keys from a up to (not including) c")
  .example("raftkv get 10 --serializable --endpoints 127.0.0.1:7002")
  .action((key: string, rangeEnd: string | undefined, flags: ClientFlags & { serializable?: boolean; prefix?: boolean; limit?: string; keysOnly?: boolean; countOnly?: boolean }) =>
    run(async () => {
      if (flags.prefix && rangeEnd !== undefined) throw new UsageError("give either --prefix or a range end, not both");
      const single = !flags.prefix && rangeEnd === undefined;
      const c = client(flags);
      const r = await c.range(
        {
          key: toBytes(String(key)),
          ...(flags.prefix ? { prefix: true } : {}),
          ...(rangeEnd !== undefined ? { rangeEnd: toBytes(String(rangeEnd)) } : {}),
          ...(flags.limit !== undefined ? { limit: positiveInt("--limit", flags.limit) } : {}),
          ...(flags.keysOnly ? { keysOnly: true } : {}),
          ...(flags.countOnly ? { countOnly: true } : {}),
        },
        { serializable: !!flags.serializable },
      );
      c.close();
      if (single && !flags.countOnly) {
        const kv = r.kvs[0];
        if (!kv) {
          if (isJson(flags)) printJson({ key: String(key), found: false, revision: r.revision });
          console.error(`key not found: ${key}`);
          return 1;
        }
        if (isJson(flags)) printJson({ found: true, ...kvJson(kv), revision: r.revision });
        else console.log(flags.keysOnly ? toText(kv.key) : toText(kv.value));
        return;
      }
      if (isJson(flags)) {
        printJson({ revision: r.revision, count: r.count, more: r.more, kvs: r.kvs.map(kvJson) });
      } else if (flags.countOnly) {
        console.log(String(r.count));
      } else {
        for (const kv of r.kvs) {
          console.log(toText(kv.key));
          if (!flags.keysOnly) console.log(toText(kv.value));
        }
        if (r.more) console.error(`(${r.count - r.kvs.length} more keys not shown: raise --limit)`);
      }
    }),
  );

clientOptions(cli.command("del <key> [rangeEnd]", "Delete <key> (or keys in [key, rangeEnd), or --prefix); prints how many were deleted"))
  .alias("delete")
  .option("--prefix", "Delete every key that starts with <key>")
  .example("raftkv del 10")
  .example("raftkv del config/ --prefix")
  .action((key: string, rangeEnd: string | undefined, flags: ClientFlags & { prefix?: boolean }) =>
    run(async () => {
      if (flags.prefix && rangeEnd !== undefined) throw new UsageError("give either --prefix or a range end, not both");
      const c = client(flags);
      const r = (await c.write({
        op: "del",
        key: toBytes(String(key)),
        ...(flags.prefix ? { prefix: true } : {}),
        ...(rangeEnd !== undefined ? { rangeEnd: toBytes(String(rangeEnd)) } : {}),
      })) as DelResult;
      c.close();
      if (isJson(flags)) printJson({ deleted: r.deleted, revision: r.revision });
      else console.log(`deleted ${r.deleted}`);
    }),
  );

clientOptions(cli.command("cas <key> <expected> <value>", "Set <key> to <value> only if it is now <expected> (the word absent: only if it does not exist)"))
  .example("raftkv cas config/mode blue green")
  .example("raftkv cas config/owner absent me")
  .action((key: string, expected: string, value: string, flags: ClientFlags) =>
    run(async () => {
      const c = client(flags);
      const r = await c.cas(String(key), String(expected) === "absent" ? "absent" : String(expected), String(value));
      c.close();
      const current = r.succeeded ? undefined : (r.results[0] as RangeResult | undefined)?.kvs[0];
      if (isJson(flags)) {
        printJson({ succeeded: r.succeeded, revision: r.revision, ...(r.succeeded ? {} : { current: current ? kvJson(current) : null }) });
      } else if (r.succeeded) {
        console.log("OK");
      } else {
        console.error(`FAILED: ${key} is ${current ? JSON.stringify(toText(current.value)) : "absent"}, not ${expected === "absent" ? "absent" : JSON.stringify(expected)}`);
      }
      return r.succeeded ? 0 : 1;
    }),
  );

clientOptions(cli.command("txn [file]", "Run a transaction read from [file] or stdin (format: raftkv txn --help)"))
  .example(`printf 'if\\n  value(mode) = "blue"\\nthen\\n  put mode green\\nelse\\n  get mode\\n' | raftkv txn`)
  .usage(`txn [file]

  Format: an "if" section of guards, a "then" section run when all hold, an "else" section otherwise.
    if
      value(KEY) = "text"        (value compares bytewise: = != > <)
      version(KEY) > 2           (version, create, mod, lease: = != > < a number)
      exists(KEY)  /  absent(KEY)
    then
      put KEY VALUE
      del KEY [--prefix]
      get KEY [--prefix]
    else
      ...
  Keys and values are bare words or "double-quoted" strings; # starts a comment.
  Prints SUCCESS or FAILURE (exit 0 either way) and each operation's result.`)
  .action((file: string | undefined, flags: ClientFlags) =>
    run(async () => {
      const source = file && file !== "-" ? readFileSync(String(file), "utf8") : await new Response(Bun.stdin.stream()).text();
      let txn;
      try {
        txn = parseTxn(source);
      } catch (err) {
        if (err instanceof TxnSyntaxError) throw new UsageError(`txn: ${err.message}`);
        throw err;
      }
      const c = client(flags);
      const r = await c.txn(txn);
      c.close();
      if (isJson(flags)) {
        printJson({ succeeded: r.succeeded, revision: r.revision, results: r.results.map((x) => (x.op === "range" ? { ...x, kvs: x.kvs.map(kvJson) } : x)) });
        return;
      }
      console.log(r.succeeded ? "SUCCESS" : "FAILURE");
      for (const x of r.results) {
        if (x.op === "put") console.log("OK");
        else if (x.op === "del") console.log(`deleted ${x.deleted}`);
        else for (const kv of x.kvs) console.log(`${toText(kv.key)}\n${toText(kv.value)}`);
      }
    }),
  );

clientOptions(cli.command("watch <key> [rangeEnd]", "Print every change to <key> (or --prefix / a range) as it happens, until Ctrl-C"))
  .option("--prefix", "Watch every key that starts with <key>")
  .option("--rev <revision>", "First replay the changes since this revision (while the cluster still keeps them)")
  .example("raftkv watch config/ --prefix")
  .example("raftkv watch config/mode --rev 1 --json")
  .action((key: string, rangeEnd: string | undefined, flags: ClientFlags & { prefix?: boolean; rev?: string }) =>
    run(async () => {
      const c = client(flags);
      const w = c.watch(String(key), {
        ...(flags.prefix ? { prefix: true } : {}),
        ...(rangeEnd !== undefined ? { rangeEnd: String(rangeEnd) } : {}),
        ...(flags.rev !== undefined ? { fromRevision: positiveInt("--rev", flags.rev) } : {}),
      });
      const stop = () => w.close();
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      for await (const ev of w) {
        if (isJson(flags)) {
          printJson({ type: ev.type, key: toText(ev.key), value: ev.value ? toText(ev.value) : undefined, modRevision: ev.modRevision, createRevision: ev.createRevision, version: ev.version });
        } else if (ev.type === "put") {
          console.log(`PUT ${toText(ev.key)} ${toText(ev.value!)} (rev ${ev.modRevision})`);
        } else {
          console.log(`DELETE ${toText(ev.key)} (rev ${ev.modRevision})`);
        }
      }
      c.close();
    }),
  );

clientOptions(cli.command("lease <action> [arg]", "Leases: grant TTL | keepalive ID | revoke ID (keys put --lease ID vanish when it expires)"))
  .option("--once", "keepalive: renew once and exit instead of every TTL/3 until Ctrl-C")
  .example("raftkv lease grant 10s            # prints the lease id")
  .example("raftkv lease keepalive 7          # renews until Ctrl-C")
  .example("raftkv lease revoke 7             # deletes the lease and its keys")
  .action((action: string, arg: string | undefined, flags: ClientFlags & { once?: boolean }) =>
    run(async () => {
      if (arg === undefined) throw new UsageError(`lease ${action} needs an argument; see raftkv lease --help`);
      const c = client(flags);
      try {
        switch (action) {
          case "grant": {
            const r = await c.leaseGrant(parseTtlMs(arg));
            if (isJson(flags)) printJson({ id: r.id, ttlMs: r.ttlMs });
            else console.log(`lease ${r.id} granted with TTL ${r.ttlMs / 1000}s`);
            return;
          }
          case "keepalive": {
            const id = positiveInt("lease id", arg);
            let stopped = false;
            process.once("SIGINT", () => (stopped = true));
            process.once("SIGTERM", () => (stopped = true));
            for (;;) {
              const r = await c.leaseKeepAlive(id);
              if (isJson(flags)) printJson({ id: r.id, ttlMs: r.ttlMs });
              else console.log(`lease ${r.id} kept alive with TTL ${r.ttlMs / 1000}s`);
              if (flags.once) return;
              const until = Date.now() + Math.max(100, r.ttlMs / 3);
              while (!stopped && Date.now() < until) await Bun.sleep(50);
              if (stopped) return;
            }
          }
          case "revoke": {
            const r = await c.leaseRevoke(positiveInt("lease id", arg));
            if (isJson(flags)) printJson({ revoked: true, deleted: r.deleted, revision: r.revision });
            else console.log(`lease revoked; deleted ${r.deleted} key(s)`);
            return;
          }
          default:
            throw new UsageError(`unknown lease action ${JSON.stringify(action)}: grant, keepalive or revoke`);
        }
      } finally {
        c.close();
      }
    }),
  );

clientOptions(cli.command("lock <name> [...command]", "Hold the lock <name> while running COMMAND (raftkv lock NAME -- COMMAND ARGS...); exit with its code"))
  .option("--ttl <ttl>", "Lease TTL: if this process dies the lock frees itself after it", { default: "10s" })
  .example("raftkv lock backups -- ./backup.sh --full")
  .action((name: string, command: string[], flags: ClientFlags & { ttl: string; "--"?: string[] }) =>
    run(async () => {
      const argv = [...(command ?? []), ...(flags["--"] ?? [])];
      if (!argv.length) throw new UsageError("lock needs a command: raftkv lock NAME -- COMMAND ARGS...");
      const c = client(flags);
      const held = await contend(c, lockPrefix(String(name)), {
        ttlMs: parseTtlMs(flags.ttl),
        onWait: (h) => console.error(`waiting for lock ${name} (held by ${toText(h.value) || "another process"})`),
        value: `pid ${process.pid}`,
      });
      const child = Bun.spawn(argv, { stdin: "inherit", stdout: "inherit", stderr: "inherit" });
      const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
      process.on("SIGINT", forward("SIGINT"));
      process.on("SIGTERM", forward("SIGTERM"));
      const lost = held.lost.then((why) => {
        console.error(`error: lost lock ${name}: ${why}; stopping the command`);
        child.kill("SIGTERM");
        return true;
      });
      const code = await child.exited;
      const wasLost = await Promise.race([lost, Promise.resolve(false)]);
      await held.release().catch(() => {});
      c.close();
      return wasLost ? 1 : code;
    }),
  );

clientOptions(cli.command("elect <name> [proposal]", "Campaign to lead <name> with [proposal]; prints when elected and holds until Ctrl-C. --listen prints who leads"))
  .option("--listen", "Do not campaign: print the current leader's proposal and every change")
  .option("--ttl <ttl>", "Lease TTL: if this process dies, leadership passes on after it", { default: "10s" })
  .example("raftkv elect scheduler host-a")
  .example("raftkv elect scheduler --listen")
  .action((name: string, proposal: string | undefined, flags: ClientFlags & { listen?: boolean; ttl: string }) =>
    run(async () => {
      const c = client(flags);
      const prefix = electionPrefix(String(name));
      if (flags.listen) {
        let current: string | null | undefined;
        const show = async () => {
          const h = await holder(c, prefix);
          const now = h ? toText(h.value) : null;
          if (now !== current) {
            current = now;
            if (isJson(flags)) printJson({ name, leader: now });
            else console.log(now === null ? `${name}: no leader` : `${name}: ${now}`);
          }
        };
        await show();
        const w = c.watch(prefix, { prefix: true });
        process.once("SIGINT", () => w.close());
        process.once("SIGTERM", () => w.close());
        for await (const _ev of w) await show();
        c.close();
        return;
      }
      if (proposal === undefined) throw new UsageError("elect needs a proposal (what to announce when elected), or --listen");
      const ac = new AbortController();
      let resign!: () => void;
      const resigned = new Promise<void>((r) => (resign = r));
      const onSignal = () => {
        ac.abort();
        resign();
      };
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      const held = await contend(c, prefix, { ttlMs: parseTtlMs(flags.ttl), value: String(proposal), signal: ac.signal });
      if (isJson(flags)) printJson({ name, elected: true, proposal });
      else console.log(`elected: ${name} = ${proposal}`);
      const lost = await Promise.race([held.lost, resigned.then(() => null)]);
      await held.release().catch(() => {});
      c.close();
      if (lost) {
        console.error(`error: lost leadership of ${name}: ${lost}`);
        return 1;
      }
    }),
  );

clientOptions(cli.command("bench", "Load the cluster and report throughput, latency percentiles and a histogram"))
  .option("--workload <name>", "put, get (linearizable unless --serializable), mixed, cas or txn", { default: "put" })
  .option("--clients <n>", "Concurrent requests in flight", { default: 16 })
  .option("--connections <n>", "Client connections the requests are spread over (default: min(clients, 8))")
  .option("--requests <n>", "Total requests (default 10000, unless --duration)")
  .option("--duration <ms>", "Run for this long instead of a fixed number of requests")
  .option("--key-space <n>", "Distinct keys", { default: 1000 })
  .option("--key-size <bytes>", "Key size", { default: 8 })
  .option("--value-size <bytes>", "Value size", { default: 100 })
  .option("--read-ratio <r>", "mixed: fraction of requests that are reads", { default: 0.5 })
  .option("--serializable", "Reads served locally by the contacted node (possibly stale)")
  .option("--rate <n>", "Limit to n requests/s in total (0: unlimited)", { default: 0 })
  .option("--seed <n>", "Seed of the key choice")
  .example("raftkv bench --workload put --clients 64 --requests 50000")
  .example("raftkv bench --workload mixed --read-ratio 0.9 --duration 10000 --json")
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
            durationMs: flags.duration as number | undefined,
            keySpace: flags.keySpace as number,
            keySize: flags.keySize as number,
            valueSize: flags.valueSize as number,
            readRatio: flags.readRatio as number,
            serializable: !!flags.serializable,
            rate: flags.rate as number,
            seed: flags.seed as number | undefined,
            endpoints: endpointsFrom(flags),
            timeoutMs: Number(flags.timeout ?? 5000),
            json: isJson(flags),
          },
          { out: (line) => console.log(line) },
        );
      } catch (err) {
        if (err instanceof BenchOptionError) throw new UsageError(err.message);
        throw err;
      }
      return report.aborted ? 1 : 0;
    }),
  );

function statusTable(rows: { endpoint: string; status?: NodeStatus; error?: string }[]): string {
  const head = ["ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "SNAPSHOT", "WAL", "KEYS"];
  const fmtBytes = (n: number) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)}M` : n >= 1024 ? `${(n / 1024).toFixed(1)}K` : `${n}B`);
  const body = rows.map(({ endpoint, status: s, error }) =>
    s
      ? [String(s.id), s.addr, s.role, String(s.term), s.leader < 0 ? "-" : String(s.leader), String(s.commitIndex), String(s.appliedIndex), String(s.lastIndex), String(s.snapshotIndex), fmtBytes(s.walBytes), String(s.keys)]
      : ["?", endpoint, "unreachable", "-", "-", "-", "-", "-", "-", "-", "-"],
  );
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  const errors = rows.filter((r) => r.error).map((r) => `${r.endpoint}: ${r.error}`);
  return [line(head), ...body.map(line), ...(errors.length ? ["", ...errors] : [])].join("\n");
}

clientOptions(cli.command("status", "Show every node: role, term, leader, commit/applied/last index, snapshot, WAL size"))
  .example("raftkv status")
  .example("raftkv status --json")
  .action((flags: ClientFlags) =>
    run(async () => {
      const c = client(flags);
      const rows = await c.statusAll();
      c.close();
      if (isJson(flags)) {
        printJson(rows.map((r) => (r.status ? { reachable: true, ...r.status } : { reachable: false, endpoint: r.endpoint, error: r.error })));
      } else {
        console.log(statusTable(rows));
      }
      return rows.some((r) => r.status) ? 0 : 3;
    }),
  );

// ---- cluster: every local node of a config as child processes ------------------------------

function isLocalHost(host: string): boolean {
  if (["127.0.0.1", "localhost", "::1", "0.0.0.0"].includes(host) || host.startsWith("127.")) return true;
  for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) if (i.address === host) return true;
  return false;
}

/** How to start this same program again: the compiled binary itself, or bun + this script. */
function selfCommand(): string[] {
  const main = Bun.main;
  return main.includes("$bunfs") || main.startsWith("B:/~BUN") ? [process.execPath] : [process.execPath, main];
}

cli
  .command("cluster [config]", "Start every node of [config] whose address is on this machine, as child processes; Ctrl-C stops them all")
  .option("--data-root <dir>", "Data directories go under here as node-<id>", { default: "data" })
  .option("--heartbeat-ms <ms>", "Passed to each node", { default: DEFAULT_HEARTBEAT_MS })
  .option("--election-ms <ms>", "Passed to each node", { default: DEFAULT_ELECTION_MS })
  .option("--log-level <level>", "Passed to each node", { default: "info" })
  .example("raftkv cluster nodes.conf")
  .action((configPath: string | undefined, flags) =>
    run(async () => {
      const path = configPath ?? "nodes.conf";
      const local: NodeAddr[] = loadNodesConf(path).filter((n) => isLocalHost(n.host));
      if (!local.length) throw new UsageError(`no node of ${path} has an address on this machine`);
      const children = local.map((n) => {
        const child = Bun.spawn(
          [
            ...selfCommand(),
            "serve", String(n.id), path,
            "--data-dir", `${flags.dataRoot}/node-${n.id}`,
            "--heartbeat-ms", String(flags.heartbeatMs),
            "--election-ms", String(flags.electionMs),
            "--log-level", String(flags.logLevel),
          ],
          { stdout: "pipe", stderr: "pipe", stdin: "ignore" },
        );
        for (const stream of [child.stdout, child.stderr]) void prefixLines(stream, `[n${n.id}] `);
        return { node: n, child };
      });
      console.error(`started ${children.length} node(s): ${children.map((c) => `${c.node.id}@${formatAddr(c.node)} (pid ${c.child.pid})`).join(", ")}; Ctrl-C stops them`);
      let stopping = false;
      const stopAll = () => {
        if (stopping) return;
        stopping = true;
        for (const { child } of children) child.kill("SIGTERM");
      };
      process.on("SIGINT", stopAll);
      process.on("SIGTERM", stopAll);
      const codes = await Promise.all(children.map((c) => c.child.exited));
      return stopping ? 0 : codes.find((c) => c !== 0) ?? 0;
    }),
  );

async function prefixLines(stream: ReadableStream<Uint8Array>, prefix: string): Promise<void> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      process.stdout.write(prefix + buf.slice(0, nl + 1));
      buf = buf.slice(nl + 1);
    }
  }
  if (buf) process.stdout.write(prefix + buf + "\n");
}

cli.help();
cli.version(VERSION);

try {
  cli.parse(process.argv, { run: false });
  if (!cli.matchedCommand) {
    if (cli.args.length) {
      console.error(`error: unknown command ${JSON.stringify(cli.args[0])}; see raftkv --help`);
      process.exit(2);
    }
    if (!cli.options.help && !cli.options.version) {
      cli.outputHelp();
      process.exit(cli.rawArgs.length > 2 ? 2 : 0);
    }
  } else {
    await cli.runMatchedCommand();
  }
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  process.exit(2);
}
