// raftkv status: one row per node.

import type { CAC } from "cac";
import type { NodeStatus } from "../protocol";
import { client, clientOptions, isJson, printJson, run, type ClientFlags } from "./common";

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

export function registerStatus(cli: CAC): void {
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
}
