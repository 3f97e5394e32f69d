// `npm run demo`: starts the three nodes of ./nodes.conf from dist/raftkv, writes and reads keys,
// kills the leader with SIGKILL, shows a new leader take over with nothing lost, then stops everything.

import { mkdtempSync, rmSync, openSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { formatAddr, loadNodesConf } from "../src/config";

const root = resolve(import.meta.dir, "..");
const BIN = join(root, "dist/raftkv");
const CONF = join(root, "nodes.conf");
const dataRoot = mkdtempSync(join(tmpdir(), "raftkv-demo-"));
const procs = new Map<number, Subprocess>();

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

function startNode(id: number): void {
  const fd = openSync(join(dataRoot, `node-${id}.log`), "a");
  procs.set(id, Bun.spawn([BIN, "serve", String(id), CONF, "--data-dir", join(dataRoot, `node-${id}`)], { stdout: fd, stderr: fd, stdin: "ignore" }));
  closeSync(fd);
}

/** An argument as a shell would need it typed: quoted when it holds spaces or shell characters. */
function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

async function cli(args: string[], show = true): Promise<{ code: number; out: string }> {
  if (show) console.log(`$ raftkv ${args.map(shellQuote).join(" ")}`);
  const p = Bun.spawn([BIN, ...args, "-c", CONF], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  const code = await p.exited;
  if (show) {
    if (out.trim()) console.log(out.trimEnd());
    if (err.trim()) console.log(err.trimEnd());
  }
  return { code, out };
}

async function leader(exclude?: number): Promise<number> {
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    const { out } = await cli(["status", "--json", "--timeout", "1000"], false);
    try {
      const rows = JSON.parse(out) as { reachable: boolean; role?: string; id?: number }[];
      const l = rows.find((r) => r.reachable && r.role === "leader");
      if (l && l.id !== exclude) return l.id!;
    } catch {
      // not up yet
    }
    await Bun.sleep(100);
  }
  throw new Error("no leader elected within 20 s; see the logs in " + dataRoot);
}

/** Wait until node `id` has applied everything the leader committed. */
async function caughtUp(id: number): Promise<void> {
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    const { out } = await cli(["status", "--json", "--timeout", "1000"], false);
    try {
      const rows = JSON.parse(out) as { reachable: boolean; role?: string; id?: number; commitIndex?: number; appliedIndex?: number }[];
      const l = rows.find((r) => r.reachable && r.role === "leader");
      const me = rows.find((r) => r.reachable && r.id === id);
      if (l && me && me.appliedIndex! >= l.commitIndex!) return;
    } catch {
      // not up yet
    }
    await Bun.sleep(100);
  }
  throw new Error(`node ${id} did not catch up within 20 s`);
}

async function stopAll(): Promise<void> {
  for (const p of procs.values()) p.kill("SIGTERM");
  await Promise.all([...procs.values()].map((p) => p.exited));
  procs.clear();
}

process.on("SIGINT", () => {
  void stopAll().then(() => process.exit(130));
});

try {
  console.log(bold(`Starting the 3 nodes of nodes.conf (data and logs in ${dataRoot})`));
  for (const id of [0, 1, 2]) startNode(id);
  const first = await leader();
  console.log(bold(`\nNode ${first} was elected leader.\n`));
  await cli(["status"]);
  console.log(bold("\nWrites are acknowledged once a majority has them on disk; reads are linearizable:\n"));
  await cli(["put", "10", "42"]);
  await cli(["put", "greeting", "hello raft"]);
  await cli(["get", "10"]);
  await cli(["get", "greeting"]);
  console.log(bold(`\nkill -9 the leader (node ${first}, pid ${procs.get(first)!.pid})...\n`));
  const t0 = performance.now();
  procs.get(first)!.kill("SIGKILL");
  await procs.get(first)!.exited;
  procs.delete(first);
  const second = await leader(first);
  console.log(bold(`Node ${second} took over as leader ${Math.round(performance.now() - t0)} ms after the kill.\n`));
  await cli(["put", "after-failover", "still writing"]);
  await cli(["get", "10"]);
  await cli(["get", "after-failover"]);
  await cli(["status"]);
  console.log(bold(`\nRestarting node ${first}: it rejoins as a follower and catches up from its disk and the leader.\n`));
  startNode(first);
  await caughtUp(first);
  const addr = loadNodesConf(CONF).find((n) => n.id === first)!;
  await cli(["get", "after-failover", "--serializable", "--endpoints", formatAddr(addr)]);
  await cli(["status"]);
  console.log(bold("\nDone. Stopping the cluster."));
} catch (err) {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  await stopAll();
  rmSync(dataRoot, { recursive: true, force: true });
}
