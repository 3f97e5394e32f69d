// Round-trip latency of put and get at one client against a local 3-node cluster of dist/raftkv.
// Usage: bun bench/latency.ts [requests=2000]

import { RaftKvClient } from "../src/client/client";
import { TestCluster } from "../tests/e2e/harness";

const n = Number(process.argv[2] ?? 2000);
const c = new TestCluster();
const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function measure(label: string, fn: (i: number) => Promise<unknown>): Promise<void> {
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await fn(i);
    lat.push(performance.now() - s);
  }
  const total = performance.now() - t0;
  lat.sort((a, b) => a - b);
  console.log(
    `${label.padEnd(18)} p50 ${pct(lat, 50).toFixed(3)} ms  p99 ${pct(lat, 99).toFixed(3)} ms  max ${lat.at(-1)!.toFixed(3)} ms  (${((n / total) * 1000).toFixed(0)} req/s at 1 client)`,
  );
}

try {
  c.startAll();
  await c.waitForLeader();
  const client = new RaftKvClient({ endpoints: c.endpoints.split(","), timeoutMs: 10000 });
  for (let i = 0; i < 200; i++) await client.put(`warm${i % 100}`, "x".repeat(100)); // warm up, find leader
  const value = "v".repeat(100);
  await measure("put", (i) => client.put(`key${i % 1000}`, value));
  await measure("get (linearizable)", (i) => client.get(`key${i % 1000}`));
  await measure("get (serializable)", (i) => client.get(`key${i % 1000}`, { serializable: true }));
  client.close();
} finally {
  await c.cleanup();
}
