// raftkv member list|add|promote|remove and raftkv leader transfer: membership changes and leadership
// transfer, each one request to the leader (answered once the change is committed / the target leads).

import type { CAC } from "cac";
import { RaftKvError } from "../client/client";
import type { MemberList } from "../protocol";
import { client, clientOptions, isJson, printJson, run, UsageError, type ClientFlags } from "./common";

/** How long `member add --promote` waits for the learner to catch up before giving up. */
const PROMOTE_WAIT_MS = 10 * 60_000;
const PROMOTE_POLL_MS = 200;

function nodeId(v: unknown): number {
  if (!/^\d+$/.test(String(v ?? ""))) throw new UsageError(`node id must be a non-negative integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

function memberTable(l: MemberList): string {
  const head = ["ID", "ADDRESS", "ROLE", "MATCH", "LAG", "STATE"];
  const body = l.members.map((m) => [String(m.id), m.addr ?? "?", m.role + (m.leader ? " (leader)" : ""), m.match === null ? "-" : String(m.match), m.lag === null ? "-" : String(m.lag), m.state ?? "-"]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(head), ...body.map(line), "", `term ${l.term}, commit index ${l.commitIndex}, configuration from entry ${l.configIndex}`].join("\n");
}

export function registerMember(cli: CAC): void {
  clientOptions(
    cli.command(
      "member <action> [id] [addr]",
      "Membership, one change at a time: list | add ID HOST:PORT (joins as a learner) | promote ID (once caught up) | remove ID",
    ),
  )
    .option("--promote", "member add: wait until the new learner has caught up, then promote it to voter")
    .example("raftkv member list")
    .example("raftkv member add 3 10.0.0.4:7000 --promote")
    .example("raftkv member remove 1")
    .action((action: string, idText: string | undefined, addr: string | undefined, flags: ClientFlags & { promote?: boolean }) =>
      run(async () => {
        const c = client(flags);
        try {
          let result: MemberList;
          if (action === "list") {
            result = await c.members();
          } else if (action === "add") {
            const id = nodeId(idText);
            if (!addr) throw new UsageError("member add needs the new node's address: raftkv member add ID HOST:PORT");
            result = await c.memberChange("add", id, addr);
            if (flags.promote) result = await promoteWhenCaughtUp(c, id);
          } else if (action === "promote" || action === "remove") {
            result = await c.memberChange(action, nodeId(idText));
          } else {
            throw new UsageError(`unknown member action ${JSON.stringify(action)}: list, add, promote or remove`);
          }
          if (isJson(flags)) printJson(result);
          else console.log(memberTable(result));
        } finally {
          c.close();
        }
      }),
    );

  clientOptions(cli.command("leader <action> <id>", "leader transfer ID: hand leadership to voter ID (it is brought up to date first; writes pause at most an election timeout)"))
    .example("raftkv leader transfer 2")
    .action((action: string, idText: string, flags: ClientFlags) =>
      run(async () => {
        if (action !== "transfer") throw new UsageError(`unknown leader action ${JSON.stringify(action)}: transfer`);
        const c = client(flags);
        try {
          const r = await c.leaderTransfer(nodeId(idText));
          if (isJson(flags)) printJson(r);
          else console.log(`node ${r.leader} leads (term ${r.term})`);
        } finally {
          c.close();
        }
      }),
    );
}

/** Promote `id` as soon as the leader accepts it (it refuses until the learner has caught up). */
async function promoteWhenCaughtUp(c: ReturnType<typeof client>, id: number): Promise<MemberList> {
  const deadline = Date.now() + PROMOTE_WAIT_MS;
  for (;;) {
    try {
      return await c.memberChange("promote", id);
    } catch (err) {
      const notYet = err instanceof RaftKvError && err.code === "MEMBER_CHANGE_REFUSED" && /caught up|pending|not yet committed/.test(err.message);
      if (!notYet || Date.now() > deadline) throw err;
    }
    await Bun.sleep(PROMOTE_POLL_MS);
  }
}
