// The WAL against a model: random appends (with suffix truncations), hard states, log resets after
// snapshots, compactions, sync and async syncs, and reopens, on tiny segments. After every reopen the
// recovered state must equal the model's.

import { expect, test } from "bun:test";
import type { Entry, HardState } from "../../src/raft/types";
import { Wal, writeSnapshot } from "../../src/storage";
import { mulberry32 } from "../rng";
import { newSimDisk, plain, SIM_DIR } from "./helpers";

const quiet = () => {};

test("random WAL histories recover exactly what was written, across rotations, resets and compactions", async () => {
  for (let seed = 1; seed <= 150; seed++) {
    const rng = mulberry32(seed);
    const pick = (n: number) => Math.floor(rng() * n);
    const disk = newSimDisk(seed);
    const segmentBytes = 100 + pick(600);
    let { wal } = Wal.open(SIM_DIR, { disk, log: quiet, segmentBytes });
    let entries: Entry[] = []; // after the snapshot
    let snapshotIndex = 0;
    let hardState: HardState = { term: 0, vote: -1, commit: 0 };
    const lastIndex = () => entries[entries.length - 1]?.index ?? snapshotIndex;
    const lastTerm = () => entries[entries.length - 1]?.term ?? 1;

    for (let step = 0; step < 60; step++) {
      const roll = rng();
      if (roll < 0.4) {
        const from = Math.max(hardState.commit, snapshotIndex) + 1 + pick(lastIndex() - Math.max(hardState.commit, snapshotIndex) + 1);
        const term = Math.max(hardState.term, lastTerm()) + (rng() < 0.2 ? 1 : 0);
        const batch: Entry[] = [];
        for (let i = 0; i < 1 + pick(3); i++) {
          const data = new Uint8Array(pick(40)).map(() => pick(256));
          batch.push({ index: from + i, term, data, ...(rng() < 0.15 ? { type: 1 } : {}) });
        }
        wal.append(batch);
        entries = [...entries.filter((e) => e.index < from), ...batch];
      } else if (roll < 0.6) {
        const term = Math.max(hardState.term, lastTerm()) + (rng() < 0.3 ? 1 : 0);
        hardState = {
          term,
          vote: term === hardState.term ? hardState.vote : pick(3) - 1,
          commit: Math.max(hardState.commit, Math.min(lastIndex(), hardState.commit + pick(4))),
        };
        wal.setHardState(hardState);
      } else if (roll < 0.65) {
        // A snapshot from the leader that replaces the log.
        snapshotIndex = lastIndex() + 1 + pick(5);
        writeSnapshot(SIM_DIR, { index: snapshotIndex, term: lastTerm(), data: new Uint8Array([1]) }, disk);
        wal.resetLog({ index: snapshotIndex, term: lastTerm() });
        entries = [];
        if (hardState.commit < snapshotIndex) {
          hardState = { ...hardState, commit: snapshotIndex };
          wal.setHardState(hardState);
        }
      } else if (roll < 0.7) {
        wal.sync();
        wal.compact(snapshotIndex);
      } else if (roll < 0.8) {
        wal.sync();
      } else if (roll < 0.9) {
        await wal.syncAsync();
      } else {
        wal.close();
        const reopened = Wal.open(SIM_DIR, { disk, log: quiet, segmentBytes });
        wal = reopened.wal;
        const label = `seed ${seed} step ${step}`;
        expect({ label, hs: reopened.state.hardState }).toEqual({ label, hs: hardState });
        expect({ label, snap: reopened.state.snapshot?.index ?? 0 }).toEqual({ label, snap: snapshotIndex });
        expect({ label, entries: plain(reopened.state.entries), types: reopened.state.entries.map((e) => e.type) }).toEqual({
          label,
          entries: plain(entries),
          types: entries.map((e) => e.type),
        });
        expect(wal.lastIndex()).toBe(lastIndex());
      }
    }
    wal.close();
  }
});
