// raftkv status: one row per node.

import type { CAC } from "cac";
import type { NodeStatus } from "../protocol";
import { client, clientOptions, EXIT, isJson, printJson, run, writeOut, type ClientFlags } from "./common";

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

/** Fields of every --json row, reachable or not (unknown ones are null), besides those a node reports. */
const STATUS_FIELDS: (keyof NodeStatus)[] = ["id", "addr", "role", "term", "leader", "leaderAddr", "commitIndex", "appliedIndex", "lastIndex", "snapshotIndex", "walBytes", "keys", "revision", "uptimeMs", "rssBytes", "heapBytes", "version"];

/** One JSON row per endpoint, all with the same field names: reachable, endpoint, error, then the node's status. */
export function statusRows(rows: { endpoint: string; status?: NodeStatus; error?: string }[]): Record<string, unknown>[] {
  const fields = new Set<string>(STATUS_FIELDS);
  for (const r of rows) if (r.status) for (const k of Object.keys(r.status)) fields.add(k);
  return rows.map((r) => {
    const row: Record<string, unknown> = { reachable: !!r.status, endpoint: r.endpoint, error: r.error ?? null };
    for (const f of fields) row[f] = (r.status as Record<string, unknown> | undefined)?.[f] ?? null;
    return row;
  });
}

export function registerStatus(cli: CAC): void {
  clientOptions(cli.command("status", "Show every node: role, term, leader, commit/applied/last index, snapshot, WAL size; exit 0 only if a reachable node knows a leader (a health check)"))
    .example("raftkv status")
    .example("raftkv status --json")
    .action((flags: ClientFlags) =>
      run(async () => {
        const c = client(flags);
        const rows = await c.statusAll();
        c.close();
        if (isJson(flags)) {
          printJson(statusRows(rows));
        } else {
          writeOut(statusTable(rows) + "\n");
        }
        if (!rows.some((r) => r.status)) {
          console.error("error: no node could be reached");
          return EXIT.unreachable;
        }
        if (!rows.some((r) => r.status && r.status.leader >= 0)) {
          console.error("error: no quorum: no reachable node knows a leader");
          return EXIT.unavailable;
        }
        return EXIT.ok;
      }),
    );
}
