// Durability figures on a local 3-node cluster of dist/raftkv (ephemeral ports, temp dirs):
//
//   bun bench/durability.ts group-commit [requests=20000] [clients=64]
//       put throughput with and without group commit (--no-group-commit: one fsync per entry)
//   bun bench/durability.ts restart [keys=100000]
//       time for a follower with `keys` keys on disk to restart (kill -9) and catch up
//   bun bench/durability.ts overwrite [writes=1000000] [keys=1000]
//       on-disk size of every node after many overwrites of few keys (must stay bounded)

import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { TestCluster, waitFor } from "../tests/e2e/harness";

const [mode = "group-commit", a, b] = process.argv.slice(2);

function dirBytes(dir: string): number {
  let total = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p);
    total += st.isDirectory() ? dirBytes(p) : st.size;
  }
  return total;
}

const mib = (n: number) => `${(n / (1 << 20)).toFixed(1)} MiB`;

/** `total` puts from `clients` concurrent writers, each with its own client; returns puts/s. */
async function load(c: TestCluster, total: number, clients: number, key: (i: number) => string, value = "v".repeat(100), progress = false): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  let lastReport = t0;
  const worker = async () => {
    const cl = c.client(30000);
    for (let i = next++; i < total; i = next++) {
      await cl.put(key(i), value);
      if (progress && performance.now() - lastReport > 10000) {
        lastReport = performance.now();
        console.error(`  ${i} / ${total} (${((i / (lastReport - t0)) * 1000).toFixed(0)} puts/s)`);
      }
    }
    cl.close();
  };
  await Promise.all(Array.from({ length: clients }, worker));
  return (total / (performance.now() - t0)) * 1000;
}

async function withCluster<T>(extraArgs: string[], fn: (c: TestCluster) => Promise<T>): Promise<T> {
  const c = new TestCluster({ extraArgs });
  try {
    c.startAll();
    await c.waitForLeader();
    return await fn(c);
  } finally {
    await c.cleanup();
  }
}

if (mode === "group-commit") {
  const total = Number(a ?? 20000);
  const clients = Number(b ?? 64);
  for (const [label, args] of [
    ["one fsync per entry (--no-group-commit)", ["--no-group-commit"]],
    ["group commit (default)", []],
  ] as const) {
    const rate = await withCluster([...args], async (c) => {
      await load(c, 500, clients, (i) => `warm${i}`);
      return load(c, total, clients, (i) => `k${i % 10000}`);
    });
    console.log(`${label.padEnd(42)} ${rate.toFixed(0)} puts/s (${total} puts, ${clients} clients)`);
  }
} else if (mode === "restart") {
  const keys = Number(a ?? 100000);
  await withCluster([], async (c) => {
    const rate = await load(c, keys, 64, (i) => `key${i}`, "v".repeat(100), true);
    console.log(`loaded ${keys} keys at ${rate.toFixed(0)} puts/s`);
    const leader = await c.waitForLeader();
    const victim = [0, 1, 2].find((i) => i !== leader)!;
    await c.kill(victim);
    // Some writes it misses while down, so catching up includes replication, not only disk replay.
    await load(c, 2000, 16, (i) => `late${i}`);
    const t0 = performance.now();
    c.start(victim);
    const target = (await c.statuses()).find((s) => s.id === leader)!.commitIndex!;
    await waitFor("the restarted node to catch up", async () => ((await c.statuses()).find((s) => s.id === victim)?.appliedIndex ?? 0) >= target, 120000, 20);
    const ms = performance.now() - t0;
    const recovered = /recovered from disk .*ms=(\d+)/.exec(c.logs(victim).split("\n").filter((l) => l.includes("recovered from disk")).pop() ?? "");
    console.log(`node ${victim} with ${keys} keys: restarted and caught up in ${ms.toFixed(0)} ms (log replay and snapshot load: ${recovered?.[1] ?? "?"} ms)`);
  });
} else if (mode === "overwrite") {
  const writes = Number(a ?? 1_000_000);
  const keys = Number(b ?? 1000);
  await withCluster([], async (c) => {
    const sizes: string[] = [];
    const step = writes / 4;
    for (let done = 0; done < writes; done += step) {
      const rate = await load(c, step, 64, (i) => `ow${(done + i) % keys}`, "v".repeat(100), true);
      sizes.push(`${done + step} writes (${rate.toFixed(0)} puts/s): ${[0, 1, 2].map((i) => mib(dirBytes(c.dataDir(i)))).join(", ")}`);
      console.log(sizes.at(-1));
    }
  });
} else {
  console.error(`unknown mode ${mode}: group-commit, restart or overwrite`);
  process.exit(2);
}
