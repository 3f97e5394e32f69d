// Optional HTTP endpoints for operators and monitoring (`serve --http-port N`):
//   GET /health   200 {"ok":true,...} when this node knows a leader, 503 otherwise
//   GET /status   the same JSON as `raftkv status --json` gives for this node
//   GET /metrics  Prometheus text format

import type { TlsMaterial } from "../net/tls";
import type { NodeStatus } from "../protocol";

export interface HttpEndpoints {
  port: number;
  /** New certificate and key for HTTPS (certificate rotation). */
  reloadTls(tls: TlsMaterial): void;
  stop(): void;
}

export function metricsText(s: NodeStatus): string {
  const roles = ["follower", "precandidate", "candidate", "leader"];
  const lines: string[] = [];
  const gauge = (name: string, help: string, value: number, labels = "") => {
    lines.push(`# HELP raftkv_${name} ${help}`, `# TYPE raftkv_${name} gauge`, `raftkv_${name}${labels} ${value}`);
  };
  gauge("term", "Current Raft term.", s.term);
  gauge("is_leader", "1 if this node is the leader.", s.role === "leader" ? 1 : 0);
  gauge("has_leader", "1 if this node knows a leader.", s.leader >= 0 ? 1 : 0);
  lines.push("# HELP raftkv_role Current role (1 for the active one).", "# TYPE raftkv_role gauge");
  for (const r of roles) lines.push(`raftkv_role{role="${r}"} ${s.role === r ? 1 : 0}`);
  gauge("commit_index", "Highest log index known committed.", s.commitIndex);
  gauge("applied_index", "Highest log index applied to the state machine.", s.appliedIndex);
  gauge("last_index", "Last index in the log.", s.lastIndex);
  gauge("snapshot_index", "Index of the latest snapshot on disk.", s.snapshotIndex);
  gauge("wal_bytes", "Bytes of write-ahead log on disk.", s.walBytes);
  gauge("keys", "Keys in the state machine.", s.keys);
  gauge("revision", "Current store revision.", s.revision);
  gauge("resident_memory_bytes", "Resident set size of the process.", s.rssBytes);
  gauge("uptime_seconds", "Seconds since the node started.", Math.round(s.uptimeMs / 1000));
  return lines.join("\n") + "\n";
}

/**
 * With tls, HTTPS with the node's certificate; no client certificate is asked for, so monitoring can
 * read /health, /status and /metrics (they reveal no keys or values) without one.
 */
export function serveHttp(hostname: string, port: number, status: () => NodeStatus, tls?: TlsMaterial): HttpEndpoints {
  const options = {
    hostname,
    port,
    ...(tls ? { tls: { cert: tls.cert, key: tls.key } } : {}),
    fetch(req: Request) {
      const path = new URL(req.url).pathname;
      if (req.method !== "GET") return new Response("only GET\n", { status: 405 });
      const s = status();
      switch (path) {
        case "/health": {
          const ok = s.leader >= 0;
          return Response.json({ ok, role: s.role, leader: s.leader, term: s.term }, { status: ok ? 200 : 503 });
        }
        case "/status":
          return Response.json(s);
        case "/metrics":
          return new Response(metricsText(s), { headers: { "content-type": "text/plain; version=0.0.4" } });
        default:
          return new Response("not found: try /health, /status or /metrics\n", { status: 404 });
      }
    },
  };
  let server = Bun.serve(options);
  const boundPort = server.port ?? port;
  return {
    port: boundPort,
    reloadTls(next) {
      server.stop(false);
      server = Bun.serve({ ...options, port: boundPort, tls: { cert: next.cert, key: next.key } });
    },
    stop: () => server.stop(true),
  };
}
