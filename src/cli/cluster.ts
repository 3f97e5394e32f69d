// raftkv cluster: every local node of a config as child processes.

import type { Subprocess } from "bun";
import type { CAC } from "cac";
import { networkInterfaces } from "node:os";
import { formatAddr, loadNodesConf, type NodeAddr } from "../config";
import { DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS } from "../server/node";
import { EXIT, run, streamLines, UsageError } from "./common";
import { EXIT_WITH_STDIN_ENV } from "./serve";

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

async function prefixLines(stream: ReadableStream<Uint8Array>, prefix: string): Promise<void> {
  for await (const line of streamLines(stream)) process.stdout.write(`${prefix}${line}\n`);
}

/** A node that dies is restarted after this, doubling per quick death up to RESTART_MAX_BACKOFF_MS. */
export const RESTART_MIN_BACKOFF_MS = 500;
export const RESTART_MAX_BACKOFF_MS = 10_000;
/** A node that ran this long before dying is restarted after RESTART_MIN_BACKOFF_MS again. */
const RESTART_RESET_AFTER_MS = 30_000;

function describeExit(code: number | null, signal: unknown): string {
  return signal ? `was killed by ${String(signal)}` : `exited with code ${code}`;
}

/** Default HTTP port of a node started by `cluster`: its Raft port plus this. */
const HTTP_PORT_OFFSET = 1000;
/** How long `cluster` waits for a leader before it stops waiting to print the dashboard's address. */
const READY_WAIT_MS = 60_000;

function portNumber(flag: string, value: unknown): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`${flag} must be a port number (0-65535), got ${JSON.stringify(value)}`);
  return n;
}

/** Once a node knows a leader (its /health says ok), print where the dashboard is. */
async function announceDashboard(urls: string[]): Promise<void> {
  const deadline = Date.now() + READY_WAIT_MS;
  while (Date.now() < deadline) {
    for (const url of urls) {
      const health = await fetch(`${url}health`).then((r) => (r.ok ? (r.json() as Promise<{ leader: number }>) : null), () => null);
      if (health) {
        console.error(`cluster ready (leader: node ${health.leader}); dashboard: ${urls.join(" ")}`);
        return;
      }
    }
    await Bun.sleep(100);
  }
}

export function registerCluster(cli: CAC): void {
  cli
    .command("cluster [config]", "Start every node of [config] whose address is on this machine, as child processes; restarts a node that dies; Ctrl-C stops them all", { passThrough: true } as object)
    .usage("cluster [config] [options] [-- serve options for every node]")
    .option("--data-root <dir>", "Data directories go under here as node-<id>", { default: "data" })
    .option("--heartbeat-ms <ms>", "Passed to each node", { default: DEFAULT_HEARTBEAT_MS })
    .option("--election-ms <ms>", "Passed to each node", { default: DEFAULT_ELECTION_MS })
    .option("--log-level <level>", "Passed to each node", { default: "info" })
    .option("--http-port <port>", "HTTP port (dashboard, /metrics) of the first local node, the next ones counting up; 0: none (default: its Raft port + 1000)")
    .example("raftkv cluster nodes.conf")
    .example("raftkv cluster nodes.conf -- --snapshot-entries 1000 --session-ttl 5m")
    .action((configPath: string | undefined, flags) =>
      run(async () => {
        const path = configPath ?? "nodes.conf";
        const local: NodeAddr[] = loadNodesConf(path).filter((n) => isLocalHost(n.host));
        if (!local.length) throw new UsageError(`no node of ${path} has an address on this machine`);
        const httpBase = flags.httpPort === undefined ? local[0]!.port + HTTP_PORT_OFFSET : portNumber("--http-port", flags.httpPort);
        const serveArgs = (n: NodeAddr) => [
          "serve", String(n.id), path,
          "--data-dir", `${flags.dataRoot}/node-${n.id}`,
          "--heartbeat-ms", String(flags.heartbeatMs),
          "--election-ms", String(flags.electionMs),
          "--log-level", String(flags.logLevel),
          ...(httpBase ? ["--http-port", String(httpBase + local.indexOf(n))] : []),
          ...(flags["--"] as string[]),
        ];
        let stopping = false;
        const running = new Map<number, Subprocess<"pipe", "pipe", "pipe">>();
        // One loop per node: start it, and when it dies unasked, say how and start it again after a backoff.
        // Its stdin is a pipe from this process that is never written: when this process dies, even by
        // kill -9, the pipe closes and the node stops (EXIT_WITH_STDIN_ENV), so no node is left orphaned.
        const supervise = async (n: NodeAddr): Promise<number> => {
          let backoff = RESTART_MIN_BACKOFF_MS;
          for (;;) {
            const started = Date.now();
            const child = Bun.spawn([...selfCommand(), ...serveArgs(n)], {
              stdout: "pipe",
              stderr: "pipe",
              stdin: "pipe",
              env: { ...process.env, [EXIT_WITH_STDIN_ENV]: "1" },
            });
            running.set(n.id, child);
            for (const stream of [child.stdout, child.stderr]) void prefixLines(stream, `[n${n.id}] `);
            const code = await child.exited;
            running.delete(n.id);
            if (stopping) return 0;
            const how = describeExit(code, child.signalCode);
            if (code === EXIT.usage) {
              console.error(`error: node ${n.id} (pid ${child.pid}) ${how}: its configuration is refused; not restarting it`);
              return code;
            }
            if (Date.now() - started >= RESTART_RESET_AFTER_MS) backoff = RESTART_MIN_BACKOFF_MS;
            console.error(`warning: node ${n.id} (pid ${child.pid}) ${how}; restarting it in ${backoff} ms`);
            const until = Date.now() + backoff;
            while (!stopping && Date.now() < until) await Bun.sleep(50);
            if (stopping) return 0;
            backoff = Math.min(backoff * 2, RESTART_MAX_BACKOFF_MS);
          }
        };
        const stopAll = () => {
          if (stopping) return;
          stopping = true;
          for (const child of running.values()) child.kill("SIGTERM");
        };
        process.on("SIGINT", stopAll);
        process.on("SIGTERM", stopAll);
        process.on("SIGHUP", stopAll);
        const loops = local.map(supervise);
        console.error(`started ${local.length} node(s): ${local.map((n) => `${n.id}@${formatAddr(n)} (pid ${running.get(n.id)?.pid})`).join(", ")}; Ctrl-C stops them`);
        if (httpBase) void announceDashboard(local.map((n, i) => `http://${n.host}:${httpBase + i}/`));
        const codes = await Promise.all(loops);
        return stopping ? 0 : codes.find((c) => c !== 0) ?? 0;
      }),
    );
}
