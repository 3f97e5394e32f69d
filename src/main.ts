#!/usr/bin/env bun
// raftkv: one binary that is both a Raft node (`serve`) and its client (`put`, `get`, `del`, `status`).
// Each command is a thin call into server/ or client/.

import cac from "cac";
import { existsSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { ConfigError, formatAddr, loadNodesConf, type NodeAddr } from "./config";
import { RaftKvClient, RaftKvError, toText } from "./client/client";
import { RaftKvNode, DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS, DEFAULT_SNAPSHOT_ENTRIES } from "./server/node";
import { isLogLevel } from "./server/log";
import { VERSION, type NodeStatus } from "./protocol";
import type { KeyValue } from "./kv/types";

const cli = cac("raftkv");

/** Exit codes: 0 ok, 1 not found / request failed, 2 bad usage or configuration, 3 cluster unavailable. */
class UsageError extends Error {}

interface ClientFlags {
  endpoints?: string;
  config?: string;
  json?: boolean;
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
    .option("--json", "Machine-readable output");

// ---- serve ------------------------------------------------------------------------------

cli
  .command("serve <id> [config]", "Run node <id> of the cluster listed in [config] (default ./nodes.conf)")
  .option("--data-dir <dir>", "Where this node keeps its log and snapshots (default ./data/node-<id>)")
  .option("--heartbeat-ms <ms>", "Leader heartbeat interval", { default: DEFAULT_HEARTBEAT_MS })
  .option("--election-ms <ms>", "Base election timeout (randomized up to 2x)", { default: DEFAULT_ELECTION_MS })
  .option("--snapshot-entries <n>", "Snapshot and compact the log every n applied entries", { default: DEFAULT_SNAPSHOT_ENTRIES })
  .option("--listen-host <host>", "Address to bind (default: the node's address in the config)")
  .option("--log-level <level>", "debug, info, warn or error", { default: "info" })
  .option("--log-format <format>", "text or json", { default: "text" })
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

clientOptions(cli.command("put <key> <value>", "Store <value> under <key>; prints OK once a majority has it on disk"))
  .example("raftkv put 10 42")
  .action((key: string, value: string, flags: ClientFlags) =>
    run(async () => {
      const c = client(flags);
      const r = await c.put(String(key), String(value));
      if (flags.json) printJson({ ok: true, revision: r.revision });
      else console.log("OK");
      c.close();
    }),
  );

clientOptions(cli.command("get <key>", "Print the value of <key> (linearizable unless --serializable); exit 1 if missing"))
  .option("--serializable", "Read the contacted node's local state: faster, possibly stale")
  .example("raftkv get 10")
  .example("raftkv get 10 --serializable --endpoints 127.0.0.1:7002")
  .action((key: string, flags: ClientFlags & { serializable?: boolean }) =>
    run(async () => {
      const c = client(flags);
      const kv = await c.get(String(key), { serializable: !!flags.serializable });
      c.close();
      if (!kv) {
        if (flags.json) printJson({ key: String(key), found: false });
        console.error(`key not found: ${key}`);
        return 1;
      }
      if (flags.json) printJson({ found: true, ...kvJson(kv) });
      else console.log(toText(kv.value));
    }),
  );

clientOptions(cli.command("del <key>", "Delete <key>; prints how many keys were deleted"))
  .alias("delete")
  .example("raftkv del 10")
  .action((key: string, flags: ClientFlags) =>
    run(async () => {
      const c = client(flags);
      const r = await c.delete(String(key));
      c.close();
      if (flags.json) printJson({ deleted: r.deleted, revision: r.revision });
      else console.log(`deleted ${r.deleted}`);
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
      if (flags.json) {
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
