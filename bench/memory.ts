// Resident memory of each node of a local 3-node cluster holding N keys of 100-byte values.
// Usage: bun bench/memory.ts [keys=1000000] [clients=64]

import { readFileSync } from "node:fs";
import { TestCluster, waitFor } from "../tests/e2e/harness";

const keys = Number(process.argv[2] ?? 1_000_000);
const clients = Number(process.argv[3] ?? 64);
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;

const c = new TestCluster();
try {
  c.startAll();
  await c.waitForLeader();
  const before = [0, 1, 2].map((i) => rssMiB(c.pid(i)!));
  const value = "v".repeat(100);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      const cl = c.client(30000);
      for (let i = next++; i < keys; i = next++) {
        await cl.put(`key${String(i).padStart(8, "0")}`, value);
        if (i % 100000 === 0 && i) console.error(`  ${i} keys (${((i / (performance.now() - t0)) * 1000).toFixed(0)} puts/s)`);
      }
      cl.close();
    }),
  );
  const loadS = (performance.now() - t0) / 1000;
  await waitFor("every node to apply everything", async () => {
    const st = await c.statuses();
    return st.length === 3 && st.every((s) => s.keys === keys);
  }, 120000);
  Bun.gc?.(true);
  await Bun.sleep(6000); // nodes ask for a (concurrent) collection once idle for 2 s
  const after = [0, 1, 2].map((i) => rssMiB(c.pid(i)!));
  const heaps = ((await c.statuses()) as unknown as { heapBytes: number }[]).map((s) => (s.heapBytes / (1 << 20)).toFixed(0));
  console.log(`loaded ${keys} keys of 100-byte values in ${loadS.toFixed(0)} s (${(keys / loadS).toFixed(0)} puts/s, ${clients} clients)`);
  console.log(`RSS per node before: ${before.map((m) => m.toFixed(0)).join(", ")} MiB; after: ${after.map((m) => m.toFixed(0)).join(", ")} MiB`);
  console.log(`JS heap in use per node: ${heaps.join(", ")} MiB`);
  console.log(`per key: ${(((after.reduce((a, b) => a + b) / 3 - before.reduce((a, b) => a + b) / 3) * 1024 * 1024) / keys).toFixed(0)} bytes (key 11 B + value 100 B)`);
} finally {
  await c.cleanup();
}
