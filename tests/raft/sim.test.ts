import { describe, expect, test } from "bun:test";
import { Sim, type SimOptions } from "./sim";

// RAFTKV_SIM_SEEDS / RAFTKV_SIM_STEPS scale the run up for soaks; the defaults keep the suite fast.
const SEEDS = Number(process.env.RAFTKV_SIM_SEEDS ?? 30);
const STEPS = Number(process.env.RAFTKV_SIM_STEPS ?? 3000);
const BASE_SEED = Number(process.env.RAFTKV_SIM_SEED ?? 1);

function runSeeds(label: string, opts: Omit<SimOptions, "seed" | "steps">): void {
  test(`${label}: ${SEEDS} seeds x ${STEPS} steps`, () => {
    let committed = 0;
    let acked = 0;
    let reads = 0;
    let crashes = 0;
    let snapshots = 0;
    for (let s = 0; s < SEEDS; s++) {
      const seed = BASE_SEED + s;
      try {
        const sim = new Sim({ seed, steps: STEPS, ...opts });
        const st = sim.run();
        sim.healAndConverge();
        committed += st.committed;
        acked += st.acked;
        reads += st.readsConfirmed;
        crashes += st.crashes;
        snapshots += st.snapshotsInstalled;
      } catch (err) {
        // The seed reproduces the failure exactly: RAFTKV_SIM_SEED=<seed> RAFTKV_SIM_SEEDS=1 bun test tests/raft/sim
        console.error(`simulation "${label}" failed with seed ${seed} (steps ${STEPS}): ${(err as Error).message}`);
        throw err;
      }
    }
    // The faults must not have starved the run: work got done and the fault injectors fired.
    expect(committed).toBeGreaterThan(SEEDS * 10);
    expect(acked).toBeGreaterThan(SEEDS * 5);
    expect(reads).toBeGreaterThan(SEEDS);
    if ((opts.crashRate ?? 0.001) > 0) expect(crashes).toBeGreaterThan(0);
    if (opts.snapshotEvery) expect(snapshots).toBeGreaterThan(0);
  });
}

describe("randomized simulation", () => {
  runSeeds("3 nodes, loss/dup/reorder/partitions/crashes", { nodes: 3 });
  runSeeds("5 nodes, loss/dup/reorder/partitions/crashes", { nodes: 5 });
  runSeeds("3 nodes with snapshots and compaction", { nodes: 3, snapshotEvery: 20 });
  runSeeds("5 nodes, heavy faults", { nodes: 5, lossRate: 0.2, dupRate: 0.1, partitionRate: 0.01, crashRate: 0.004, snapshotEvery: 30 });
});
