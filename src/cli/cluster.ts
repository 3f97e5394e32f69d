// raftkv cluster: every local node of a config as child processes.

import type { CAC } from "cac";
import { networkInterfaces } from "node:os";
import { formatAddr, loadNodesConf, type NodeAddr } from "../config";
import { DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS } from "../server/node";
import { run, UsageError } from "./common";

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
    .command("cluster [config]", "Start every node of [config] whose address is on this machine, as child processes; Ctrl-C stops them all")
    .option("--data-root <dir>", "Data directories go under here as node-<id>", { default: "data" })
    .option("--heartbeat-ms <ms>", "Passed to each node", { default: DEFAULT_HEARTBEAT_MS })
    .option("--election-ms <ms>", "Passed to each node", { default: DEFAULT_ELECTION_MS })
    .option("--log-level <level>", "Passed to each node", { default: "info" })
    .option("--http-port <port>", "HTTP port (dashboard, /metrics) of the first local node, the next ones counting up; 0: none (default: its Raft port + 1000)")
    .example("raftkv cluster nodes.conf")
    .action((configPath: string | undefined, flags) =>
      run(async () => {
        const path = configPath ?? "nodes.conf";
        const local: NodeAddr[] = loadNodesConf(path).filter((n) => isLocalHost(n.host));
        if (!local.length) throw new UsageError(`no node of ${path} has an address on this machine`);
        const httpBase = flags.httpPort === undefined ? local[0]!.port + HTTP_PORT_OFFSET : portNumber("--http-port", flags.httpPort);
        const children = local.map((n, i) => {
          const child = Bun.spawn(
            [
              ...selfCommand(),
              "serve", String(n.id), path,
              "--data-dir", `${flags.dataRoot}/node-${n.id}`,
              "--heartbeat-ms", String(flags.heartbeatMs),
              "--election-ms", String(flags.electionMs),
              "--log-level", String(flags.logLevel),
              ...(httpBase ? ["--http-port", String(httpBase + i)] : []),
            ],
            { stdout: "pipe", stderr: "pipe", stdin: "ignore" },
          );
          for (const stream of [child.stdout, child.stderr]) void prefixLines(stream, `[n${n.id}] `);
          return { node: n, child };
        });
        console.error(`started ${children.length} node(s): ${children.map((c) => `${c.node.id}@${formatAddr(c.node)} (pid ${c.child.pid})`).join(", ")}; Ctrl-C stops them`);
        if (httpBase) void announceDashboard(local.map((n, i) => `http://${n.host}:${httpBase + i}/`));
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
}
