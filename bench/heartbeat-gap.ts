// The longest gap between two messages from the leader, as each follower processes them, and the put
// throughput, under a write load: with the WAL's fdatasync on the event loop ("sync", Wal.sync) against
// off it ("async", Wal.syncAsync, the default). A 3-node cluster of this source in three processes; the
// load runs in this one.
// Run: bun bench/heartbeat-gap.ts [seconds per mode, default 10] [clients, default 64]
// Prints figures; asserts nothing. Figures depend on the disk and on the machine's load.

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runBench } from "../src/bench/bench";
import { streamLines } from "../src/cli/common";
import { RaftKvClient } from "../src/client/client";
import type { NodeAddr } from "../src/config";
import type { Message } from "../src/raft/types";
import { RaftKvNode } from "../src/server/node";
import { NodeRuntime } from "../src/server/runtime";
import { Wal } from "../src/storage";

const ELECTION_MS = 300;

if (process.argv[2] === "--node") {
  // One node, instrumented: it records the longest time between two leader messages it processed.
  const [mode, idText, nodesJson, dataDir] = process.argv.slice(3) as [string, string, string, string];
  if (mode === "sync") (Wal.prototype as { syncAsync?: unknown }).syncAsync = undefined; // the runtime then syncs on the event loop
  let last = 0;
  let from = -1;
  let maxGap = 0;
  let terms = new Set<number>();
  const step = NodeRuntime.prototype.step;
  NodeRuntime.prototype.step = function (this: NodeRuntime, m: Message) {
    if ((m.type === "app" || m.type === "hb") && this.role === "follower") {
      const now = performance.now();
      if (m.from === from && last > 0) maxGap = Math.max(maxGap, now - last);
      from = m.from;
      last = now;
    }
    terms.add(m.term);
    step.call(this, m);
  };
  const node = new RaftKvNode({ id: Number(idText), nodes: JSON.parse(nodesJson) as NodeAddr[], dataDir, logLevel: "error", electionMs: ELECTION_MS });
  await node.start();
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk: string) => {
    for (const line of chunk.split("\n")) {
      if (line === "reset") {
        maxGap = 0;
        last = 0;
        terms = new Set();
      } else if (line === "report") {
        console.log(JSON.stringify({ id: node.id, role: node.status().role, maxGapMs: maxGap, terms: [...terms] }));
      } else if (line === "stop") {
        void node.stop().then(() => process.exit(0));
      }
    }
  });
  console.log("ready");
} else {
  const seconds = Number(process.argv[2] ?? 10);
  const clients = Number(process.argv[3] ?? 64);
  console.log(`heartbeat gap and put throughput, ${clients} clients, ${seconds} s per mode, election timeout ${ELECTION_MS} ms`);
  for (const mode of ["sync", "async"]) await runMode(mode, seconds, clients);
}

async function runMode(mode: string, seconds: number, clients: number): Promise<void> {
  const base = 20000 + Math.floor(Math.random() * 20000);
  const nodes: NodeAddr[] = [0, 1, 2].map((id) => ({ id, host: "127.0.0.1", port: base + id }));
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "raftkv-hbgap-"));
  const procs = nodes.map((n) =>
    Bun.spawn(["bun", import.meta.path, "--node", mode, String(n.id), JSON.stringify(nodes), path.join(root, `node-${n.id}`)], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "inherit",
    }),
  );
  const readers = procs.map((p) => streamLines(p.stdout));
  try {
    for (const r of readers) await r.next();
    const endpoints = nodes.map((n) => `${n.host}:${n.port}`);
    const probe = new RaftKvClient({ endpoints, timeoutMs: 10_000 });
    await probe.put("warmup", "1");
    probe.close();
    for (const p of procs) p.stdin.write("reset\n");
    const report = await runBench(
      { workload: "put", clients, durationMs: seconds * 1000, endpoints, timeoutMs: 5000, json: false },
      { out: () => {} },
    );
    const gaps: { id: number; role: string; maxGapMs: number; terms: number[] }[] = [];
    for (const [i, p] of procs.entries()) {
      p.stdin.write("report\n");
      gaps.push(JSON.parse((await readers[i]!.next()).value as string));
    }
    const followers = gaps.filter((g) => g.role !== "leader");
    const worst = Math.max(...followers.map((g) => g.maxGapMs));
    const terms = new Set(gaps.flatMap((g) => g.terms));
    console.log(
      `${mode.padEnd(5)}: ${Math.round(report.throughput)} puts/s, longest heartbeat gap at a follower ${worst.toFixed(1)} ms ` +
        `(${followers.map((g) => `node ${g.id}: ${g.maxGapMs.toFixed(1)}`).join(", ")}; limit ${ELECTION_MS / 3} ms), ` +
        `terms seen during the load: ${[...terms].sort().join(",")}`,
    );
  } finally {
    for (const p of procs) p.stdin.write("stop\n");
    await Promise.all(procs.map((p) => p.exited));
    fs.rmSync(root, { recursive: true, force: true });
  }
}

