// Optional HTTP endpoints for operators and monitoring (`serve --http-port N`):
//   GET /              the dashboard: the whole cluster, live (HTML, CSS and a script embedded in the binary)
//   GET /api/cluster   what the dashboard draws: every node's status, gathered by this node (JSON)
//   GET /health        200 {"ok":true,...} when this node knows a leader, 503 otherwise
//   GET /status        the same JSON as `raftkv status --json` gives for this node
//   GET /metrics       Prometheus text format
// With TLS (serve --certs) this is HTTPS with the node's certificate and asks for no client certificate:
// monitoring reads these pages without one (they show the cluster's state, never keys or values).

import type { NodeAddr } from "../config";
import type { TlsMaterial } from "../net/tls";
import type { NodeStatus } from "../protocol";
import { ClusterView } from "./dashboard/cluster";
// Imported as text, the dashboard's files are compiled into the binary: no files to ship, no CDN.
import dashboardCss from "./dashboard/dashboard.css" with { type: "text" };
import dashboardHtml from "./dashboard/index.html" with { type: "text" };
import dashboardJs from "./dashboard/dashboard.js" with { type: "text" };
import type { NodeMetrics } from "./metrics";

export interface HttpEndpoints {
  port: number;
  /** HTTPS with a new certificate (rotation): the listening socket is replaced on the same port. */
  reloadTls(tls: TlsMaterial): void;
  stop(): void;
}

export interface HttpSource {
  self: number;
  nodes: readonly NodeAddr[];
  status(): NodeStatus;
  metrics: NodeMetrics;
  /** The node's TLS material, if TLS is on: HTTPS, and the dashboard's connections to the other nodes. */
  tls(): TlsMaterial | undefined;
}

const ASSETS: Record<string, { body: string; type: string }> = {
  // bun-types types every .html import as an HTML bundle; imported as text it is the file's text.
  "/": { body: dashboardHtml as unknown as string, type: "text/html; charset=utf-8" },
  "/dashboard.css": { body: dashboardCss, type: "text/css; charset=utf-8" },
  "/dashboard.js": { body: dashboardJs, type: "text/javascript; charset=utf-8" },
};

export function serveHttp(hostname: string, port: number, node: HttpSource): HttpEndpoints {
  const cluster = new ClusterView(node.self, node.nodes, () => node.metrics.stats(), () => node.tls());
  const serve = (at: number, tls: TlsMaterial | undefined) => Bun.serve({
    hostname,
    port: at,
    ...(tls ? { tls: { cert: tls.cert, key: tls.key } } : {}),
    async fetch(req) {
      const path = new URL(req.url).pathname;
      if (req.method !== "GET") return new Response("only GET\n", { status: 405 });
      const asset = ASSETS[path];
      if (asset) return new Response(asset.body, { headers: { "content-type": asset.type } });
      switch (path) {
        case "/api/cluster":
          return Response.json(await cluster.snapshot(), { headers: { "cache-control": "no-store" } });
        case "/health": {
          const s = node.status();
          const ok = s.leader >= 0;
          return Response.json({ ok, role: s.role, leader: s.leader, term: s.term }, { status: ok ? 200 : 503 });
        }
        case "/status":
          return Response.json(node.status());
        case "/metrics":
          return new Response(node.metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } });
        default:
          return new Response("not found: try /, /health, /status or /metrics\n", { status: 404 });
      }
    },
  });
  let server = serve(port, node.tls());
  const boundPort = server.port ?? port;
  return {
    port: boundPort,
    reloadTls(tls) {
      server.stop(false);
      server = serve(boundPort, tls);
    },
    stop: () => {
      cluster.close();
      server.stop(true);
    },
  };
}
