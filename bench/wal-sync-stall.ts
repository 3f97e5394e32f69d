// How long the event loop stalls while the WAL syncs a large batch: Wal.sync() (fdatasync on the JS thread)
// against Wal.flush() + Wal.syncAsync() (fdatasync on Bun's thread pool), and a baseline with no sync. A 1 ms
// interval timer records the largest gap between its runs during the sync.
// Run: bun bench/wal-sync-stall.ts [MiB per batch, default 64]
// Prints figures; asserts nothing. Figures depend on the disk and on the machine's load.

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Wal } from "../src/storage";

const mib = Number(process.argv[2] ?? 64);
const ENTRY_BYTES = 64 * 1024;
const ROUNDS = 3;

function fillBatch(wal: Wal, from: number): number {
  const data = new Uint8Array(ENTRY_BYTES).fill(0x5a);
  const count = Math.ceil((mib * 1024 * 1024) / ENTRY_BYTES);
  wal.append(Array.from({ length: count }, (_, i) => ({ index: from + i, term: 1, data })));
  return from + count;
}

async function measure(label: string, sync: (wal: Wal) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "raftkv-stall-"));
  const { wal } = Wal.open(dir, { log: () => {}, segmentBytes: 4 * mib * 1024 * 1024 });
  let next = 1;
  for (let round = 0; round < ROUNDS; round++) {
    next = fillBatch(wal, next);
    wal.flush(); // the write itself is the same on both paths; only the sync is measured
    let last = performance.now();
    let maxGap = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 1);
    await new Promise((resolve) => setTimeout(resolve, 10));
    last = performance.now();
    maxGap = 0;
    const t0 = performance.now();
    await sync(wal);
    const took = performance.now() - t0;
    await new Promise((resolve) => setTimeout(resolve, 5));
    clearInterval(timer);
    console.log(`${label}: ${mib} MiB batch, sync took ${took.toFixed(1)} ms, longest event-loop stall ${maxGap.toFixed(1)} ms`);
  }
  wal.close();
  fs.rmSync(dir, { recursive: true, force: true });
}

// Baseline: the same timer while nothing syncs (the machine's own scheduling noise).
await measure("no sync, 100 ms", () => new Promise((resolve) => setTimeout(resolve, 100)));
await measure("Wal.sync()     ", async (wal) => wal.sync());
await measure("Wal.syncAsync()", (wal) => wal.syncAsync());
