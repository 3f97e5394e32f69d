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
    .usage(`serve <id> [config]\n\n  ${formatLimitsHelp()}`)
    .example("raftkv serve 0 nodes.conf")
    .example("raftkv serve 0 nodes.conf --certs certs    # mutual TLS; SIGHUP re-reads the certificate files")
    .example(`\nLimits of the node port (over a limit the client gets a clear error or a logged disconnect):\n${describeNetLimits()}`)
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
            httpPort: flags.httpPort === undefined ? undefined : positiveInt("--http-port", flags.httpPort),
            tls,
            limits: {
              maxConnections: positiveInt("--max-connections", flags.maxConnections),
              maxConnectionsPerAddress: positiveInt("--max-connections-per-address", flags.maxConnectionsPerAddress),
            },
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
          process.on("SIGHUP", () => node.reloadTls());
        });
      }),
    );
}
