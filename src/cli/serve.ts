// raftkv serve: run one node of the cluster.

import type { CAC } from "cac";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { loadNodesConf } from "../config";
import { CA_FILE, DEFAULT_NET_LIMITS, describeNetLimits, nodeCertName } from "../net";
import { RaftKvNode, DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS, DEFAULT_SNAPSHOT_ENTRIES } from "../server/node";
import { isLogLevel } from "../server/log";
import { formatLimitsHelp } from "../server/limits";
import { positiveInt, run, tlsFilesFrom, UsageError } from "./common";

/** Set by `raftkv cluster` for its children: stop when stdin (a pipe from the supervisor) closes. */
export const EXIT_WITH_STDIN_ENV = "RAFTKV_EXIT_WITH_STDIN";

function portInUse(host: string, port: number): UsageError {
  return new UsageError(`port ${port} on ${host} is already in use by another process (a node already running? \`ss -ltnp 'sport = :${port}'\` shows which)`);
}

/** Refuses to start (before the data dir is touched) when another process has the port. */
function checkPortFree(host: string, port: number): void {
  let probe;
  try {
    probe = Bun.listen({ hostname: host, port, socket: { data() {} } });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE" || /in use|Failed to listen/i.test((err as Error).message)) throw portInUse(host, port);
    throw new UsageError(`cannot listen on ${host}:${port}: ${(err as Error).message}`);
  }
  probe.stop(true);
}

/** A data dir that cannot be created or used, in words; undefined for other errors. */
function dataDirProblem(err: unknown, dataDir: string): UsageError | undefined {
  const code = (err as NodeJS.ErrnoException).code;
  const why: Record<string, string> = {
    ENOENT: "cannot be created: a directory on its path does not exist",
    ENOTDIR: "cannot be created: a part of its path is a file, not a directory",
    EACCES: "cannot be used: permission denied",
    EROFS: "cannot be used: the file system is read-only",
  };
  return code && why[code] ? new UsageError(`data dir ${JSON.stringify(dataDir)} ${why[code]}`) : undefined;
}

export function registerServe(cli: CAC): void {
  cli
    .command("serve <id> [config]", "Run node <id> of the cluster listed in [config] (default ./nodes.conf)")
    .option("--data-dir <dir>", "Where this node keeps its log and snapshots (default ./data/node-<id>)")
    .option("--heartbeat-ms <ms>", "Leader heartbeat interval", { default: DEFAULT_HEARTBEAT_MS })
    .option("--election-ms <ms>", "Base election timeout (randomized up to 2x)", { default: DEFAULT_ELECTION_MS })
    .option("--snapshot-entries <n>", "Snapshot and compact the log after n applied entries (and once the log since the last snapshot is a quarter of the state)", { default: DEFAULT_SNAPSHOT_ENTRIES })
    .option("--listen-host <host>", "Address to bind (default: the node's address in the config)")
    .option("--log-level <level>", "debug, info, warn or error", { default: "info" })
    .option("--log-format <format>", "text or json", { default: "text" })
    .option("--http-port <port>", "Also serve the dashboard (/) and GET /health, /status and /metrics (Prometheus) over HTTP on this port (HTTPS when TLS is on)")
    .option("--session-ttl <ttl>", "Removed: the session TTL is one cluster-wide setting, changed through the log (raftkv session-ttl)")
    .option("--certs <dir>", "Mutual TLS with the certificates of `raftkv certs init` (ca.pem, node-<id>.pem/.key); on by default when certs/ sits beside the config")
    .option("--ca <file>", "TLS: the cluster CA certificate (with --cert and --key, instead of --certs)")
    .option("--cert <file>", "TLS: this node's certificate")
    .option("--key <file>", "TLS: this node's private key")
    .option("--max-connections <n>", "Connections open at once, peers included", { default: DEFAULT_NET_LIMITS.maxConnections })
    .option("--max-connections-per-address <n>", "Connections open at once from one remote address", { default: DEFAULT_NET_LIMITS.maxConnectionsPerAddress })
    .option("--no-group-commit", "Benchmarking only: one fsync per log entry instead of one per batch")
    .option("--join", "Join a running cluster after `raftkv member add ID HOST:PORT`: [config] lists at least one member and this node; the configuration comes from the cluster")
    .usage(`serve <id> [config]\n\n  ${formatLimitsHelp()}\n\n  Limits of the node port (over a limit the client gets a clear error or a logged disconnect):\n${describeNetLimits()}`)
    .example("raftkv serve 0 nodes.conf")
    .example("raftkv serve 0 nodes.conf --certs certs    # mutual TLS; SIGHUP re-reads the certificate files")
    .action((idText: string, configPath: string | undefined, flags) =>
      run(async () => {
        if (!/^\d+$/.test(String(idText))) throw new UsageError(`node id must be a number, got ${JSON.stringify(idText)}`);
        const id = Number(idText);
        if (flags.sessionTtl !== undefined) {
          // A per-node value was part of the apply function: nodes with different values diverged.
          throw new UsageError("--session-ttl was removed: the session TTL is one cluster-wide setting, changed through the log; run `raftkv session-ttl TTL` against the running cluster");
        }
        const conf = configPath ?? "nodes.conf";
        const nodes = loadNodesConf(conf);
        const beside = join(dirname(conf), "certs");
        const tls = tlsFilesFrom(flags, nodeCertName(id), existsSync(join(beside, CA_FILE)) ? beside : undefined);
        if (!isLogLevel(flags.logLevel)) throw new UsageError(`--log-level must be debug, info, warn or error`);
        if (flags.logFormat !== "text" && flags.logFormat !== "json") throw new UsageError(`--log-format must be text or json`);
        for (const [name, v] of [["--heartbeat-ms", flags.heartbeatMs], ["--election-ms", flags.electionMs], ["--snapshot-entries", flags.snapshotEntries]] as const) {
          if (!Number.isInteger(Number(v)) || Number(v) <= 0) throw new UsageError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
        }
        const self = nodes.find((n) => n.id === id);
        const dataDir = String(flags.dataDir ?? `data/node-${id}`);
        // A port in use is refused before a new data dir is created. With an existing one the node
        // checks its lock first (a second process on the same node says "data dir ... is in use by
        // process N"), and a port in use then fails the start, said the same way.
        const listenHost = self ? String(flags.listenHost ?? self.host) : "";
        if (self && !existsSync(dataDir)) checkPortFree(listenHost, self.port);
        let node: RaftKvNode;
        try {
          node = new RaftKvNode({
            id,
            nodes,
            dataDir,
            heartbeatMs: Number(flags.heartbeatMs),
            electionMs: Number(flags.electionMs),
            snapshotEntries: Number(flags.snapshotEntries),
            logLevel: flags.logLevel,
            logFormat: flags.logFormat,
            listenHost: flags.listenHost,
            groupCommit: flags.groupCommit !== false,
            httpPort: flags.httpPort === undefined ? undefined : positiveInt("--http-port", flags.httpPort),
            tls,
            limits: {
              maxConnections: positiveInt("--max-connections", flags.maxConnections),
              maxConnectionsPerAddress: positiveInt("--max-connections-per-address", flags.maxConnectionsPerAddress),
            },
            join: flags.join === true,
          });
        } catch (err) {
          throw dataDirProblem(err, dataDir) ?? new UsageError((err as Error).message);
        }
        try {
          await node.start();
        } catch (err) {
          if (self && /Failed to listen|EADDRINUSE/.test((err as Error).message)) throw portInUse(listenHost, self.port);
          throw dataDirProblem(err, dataDir) ?? err;
        }
        await new Promise<void>((resolve) => {
          let stopping = false;
          const shutdown = () => {
            if (stopping) return;
            stopping = true;
            node.stop().finally(resolve);
          };
          process.once("SIGINT", shutdown);
          process.on("SIGHUP", () => node.reloadTls());
          // SIGTERM on a leader hands leadership over first, so writes pause for a transfer, not an election.
          process.once("SIGTERM", () => {
            node.handOffLeadership().finally(shutdown);
          });
          // Started by `raftkv cluster`: stdin is a pipe from it, and its end means the supervisor is gone.
          if (process.env[EXIT_WITH_STDIN_ENV] === "1") {
            void (async () => {
              for await (const _ of Bun.stdin.stream());
              shutdown();
            })();
          }
        });
      }),
    );
}
