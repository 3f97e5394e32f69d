import { describe, expect, test } from "bun:test";
import { Sim, type SimOptions } from "./cluster";

// RAFTKV_SIM_SEEDS / RAFTKV_SIM_STEPS scale the run up for soaks (RAFTKV_SIM_SEED: the first seed); the
// defaults keep the suite fast.
const SEEDS = Number(process.env.RAFTKV_SIM_SEEDS ?? 16);
const STEPS = Number(process.env.RAFTKV_SIM_STEPS ?? 3000);
const BASE_SEED = Number(process.env.RAFTKV_SIM_SEED ?? 1);

function runSeeds(label: string, opts: Omit<SimOptions, "seed" | "steps">): void {
  test(`${label}: ${SEEDS} seeds x ${STEPS} steps`, async () => {
    const total = { committed: 0, acked: 0, reads: 0, crashes: 0, powerLosses: 0, pauses: 0, snapshots: 0, failStops: 0, adds: 0, promotions: 0, removals: 0 };
    for (let s = 0; s < SEEDS; s++) {
      const seed = BASE_SEED + s;
      try {
        const sim = new Sim({ seed, steps: STEPS, ...opts });
        const st = await sim.run();
        await sim.healAndConverge();
        total.committed += st.committed;
        total.acked += st.acked;
        total.reads += st.readsConfirmed;
        total.crashes += st.crashes;
        total.powerLosses += st.powerLosses;
        total.pauses += st.pauses;
        total.snapshots += st.snapshotsInstalled;
        total.failStops += st.failStops;
        total.adds += st.adds;
        total.promotions += st.promotions;
        total.removals += st.removals;
      } catch (err) {
        // The seed reproduces the failure exactly: RAFTKV_SIM_SEED=<seed> RAFTKV_SIM_SEEDS=1 bun test tests/sim
        console.error(`simulation "${label}" failed with seed ${seed} (steps ${STEPS}): ${(err as Error).message}`);
        throw err;
      }
    }
    if (process.env.RAFTKV_SIM_VERBOSE) console.log(label, JSON.stringify(total));
    // The faults must not have starved the run: work got done and the fault injectors fired.
    expect(total.committed).toBeGreaterThan(SEEDS * 10);
    expect(total.acked).toBeGreaterThan(SEEDS * 5);
    expect(total.reads).toBeGreaterThan(SEEDS);
    if ((opts.crashRate ?? 1) > 0) expect(total.crashes).toBeGreaterThan(0);
    if (opts.snapshotEntries) expect(total.snapshots).toBeGreaterThan(0);
    if (opts.fsyncFailRate || opts.diskFullRate) expect(total.failStops).toBeGreaterThan(0);
    if (opts.memberChangeRate) {
      expect(total.adds).toBeGreaterThan(0);
      expect(total.promotions).toBeGreaterThan(0);
      expect(total.removals).toBeGreaterThan(0);
    }
  }, 120_000);
}

describe("simulation of the real runtime", () => {
  runSeeds("3 nodes, loss/dup/reorder/partitions/pauses/drift/crashes", { nodes: 3 });
  runSeeds("5 nodes, loss/dup/reorder/partitions/pauses/drift/crashes", { nodes: 5 });
  runSeeds("3 nodes with snapshots and compaction", { nodes: 3, snapshotEntries: 20 });
  runSeeds("5 nodes, heavy faults, failed fsyncs and full disks", {
    nodes: 5,
    lossRate: 0.2,
    dupRate: 0.1,
    partitionRate: 0.01,
    crashRate: 0.002,
    pauseRate: 0.002,
    fsyncFailRate: 0.002,
    diskFullRate: 0.0005,
    snapshotEntries: 30,
  });
  // Spares join as learners, get promoted, voters (the leader too) are removed and stopped, all while
  // the faults above go on; removed ids never come back.
  runSeeds("3-5 nodes with random membership changes", { nodes: 3, memberChangeRate: 0.01, snapshotEntries: 40 });
});
