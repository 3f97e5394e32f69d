// The WAL and snapshots under the faults a real disk has: power loss (unsynced writes lost or torn at any
// byte), kill -9 (the page cache survives), bit rot, failed fsyncs. Most run on SimDisk.

import { describe, expect, test } from "bun:test";
import * as path from "node:path";
import type { Entry } from "../../src/raft/types";
import {
  SimDisk,
  Wal,
  WalCorruptError,
  walSegmentName,
  writeSnapshot,
  writeSnapshotAsync,
  type Disk,
  type RecoveredState,
} from "../../src/storage";
import { mulberry32 } from "../rng";
import {
  collectingLog,
  entries,
  entry,
  killableDisk,
  newSimDisk,
  plain,
  powerLossAt,
  SIM_DIR,
  simDiskWith,
  simFiles,
} from "./helpers";

const quiet = () => {};
const SEGMENT_1 = walSegmentName(1);
const SEGMENT_1_PATH = path.join(SIM_DIR, SEGMENT_1);

function openSim(disk: SimDisk, log: (level: "warn" | "info", msg: string) => void = quiet, segmentBytes?: number) {
  return Wal.open(SIM_DIR, { disk, log, segmentBytes });
}

function recover(disk: SimDisk): RecoveredState {
  const { wal, state } = openSim(disk);
  wal.close();
  return state;
}

function lastIndexOf(state: RecoveredState): number {
  const last = state.entries[state.entries.length - 1];
  return last?.index ?? state.snapshot?.index ?? 0;
}

function openError(disk: SimDisk): Error {
  let caught: unknown = null;
  try {
    openSim(disk).wal.close();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(Error);
  return caught as Error;
}

function key(e: Entry): string {
  return `${e.index}/${e.term}/${Buffer.from(e.data).toString("hex")}`;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Segment 1 before and after one batch written by `write` (a synced prefix of three entries first). */
function batchBytes(write: (wal: Wal) => void): { before: Uint8Array; after: Uint8Array } {
  const disk = newSimDisk();
  const { wal } = openSim(disk);
  wal.append(entries(1, 3, 1));
  wal.setHardState({ term: 1, vote: 0, commit: 2 });
  wal.sync();
  const before = disk.fileBytes(SEGMENT_1_PATH)!;
  write(wal);
  const after = disk.fileBytes(SEGMENT_1_PATH)!;
  return { before, after };
}

describe("bug 1: entries reach the file before the hard state that commits them", () => {
  test("a batch torn at every byte offset never recovers a commit index past its log, nor a foreign entry", () => {
    // A follower's batch as the runtime writes it: hard state first (the leader's commit covers the new
    // entries), then entries 3..6 of term 2, which replace the old entry 3.
    const batch = [entry(3, 2), ...entries(4, 6, 2)];
    const { before, after } = batchBytes((wal) => {
      wal.setHardState({ term: 2, vote: 1, commit: 6 });
      wal.append(batch);
      wal.sync();
    });
    const allowed = new Set([...entries(1, 3, 1), ...batch].map(key));
    const tornAt: number[] = [];
    for (let k = 0; k <= after.length - before.length; k++) {
      const disk = simDiskWith(new Map([[SEGMENT_1, after.slice(0, before.length + k)]]));
      const state = recover(disk);
      if (state.hardState.commit > lastIndexOf(state)) tornAt.push(k);
      expect(state.hardState.commit).toBeGreaterThanOrEqual(2);
      for (const e of state.entries) expect(allowed.has(key(e))).toBe(true);
    }
    expect(tornAt).toEqual([]); // every prefix at which the commit index covered missing entries
  });
});

describe("bug 3: what recovery returns is durable before open returns", () => {
  test("kill -9 between write and fdatasync, recovery, then a power loss: the recovered state survives", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const sim = newSimDisk(seed);
      const { disk, killAtNextSync } = killableDisk(sim);
      // Odd seeds: a tiny segment size, so the killed batch is in a new segment whose name is not yet synced.
      const { wal } = Wal.open(SIM_DIR, { disk, log: quiet, segmentBytes: seed % 2 === 1 ? 1 : undefined });
      wal.append(entries(1, 2, 1));
      wal.setHardState({ term: 1, vote: 0, commit: 1 });
      wal.sync();
      killAtNextSync();
      wal.setHardState({ term: 2, vote: 2, commit: 1 });
      wal.append([entry(3, 2)]);
      expect(() => wal.sync()).toThrow("killed -9");

      const { state: recovered } = openSim(sim); // the node would now act on this state (grant a vote...)
      expect(recovered.hardState).toEqual({ term: 2, vote: 2, commit: 1 });
      sim.crash({ keepPageCache: false }); // ...and then the power fails (random fates for anything unsynced)
      const after = recover(sim);
      expect(after.hardState).toEqual(recovered.hardState);
      expect(plain(after.entries)).toEqual(plain(recovered.entries));
    }
  });
});

describe("bug 4: torn tails are told from corruption by what the disk could have lost", () => {
  test("one flipped bit in the last complete, synced entry record is corruption", () => {
    const disk = newSimDisk();
    const { wal } = openSim(disk);
    for (let i = 1; i <= 4; i++) {
      wal.append([entry(i, 1)]);
      wal.sync();
    }
    wal.close();
    const bytes = disk.fileBytes(SEGMENT_1_PATH)!;
    const needle = Buffer.from("cmd-4-1");
    const at = Buffer.from(bytes).indexOf(needle);
    expect(at).toBeGreaterThan(0);
    disk.flipBit(SEGMENT_1_PATH, at + 2, 0);
    const err = openError(disk);
    expect(err).toBeInstanceOf(WalCorruptError);
    expect(err.message).toContain(SEGMENT_1_PATH);
    const offset = (err as WalCorruptError).offset!;
    expect(offset).toBeLessThan(at);
    expect(err.message).toContain(`offset ${offset}`);
  });

  test("a torn append whose end reached the disk but whose start reads as zeros is truncated, and the node starts", () => {
    const { before, after } = batchBytes((wal) => {
      wal.append(entries(4, 8, 1));
      wal.setHardState({ term: 1, vote: 0, commit: 3 });
      wal.sync();
    });
    const batchLength = after.length - before.length;
    const refused: number[] = [];
    for (let zeros = 1; zeros < batchLength; zeros++) {
      const torn = concat(before, new Uint8Array(zeros), after.subarray(before.length + zeros));
      const disk = simDiskWith(new Map([[SEGMENT_1, torn]]));
      const { lines, log } = collectingLog();
      let opened: { wal: Wal; state: RecoveredState };
      try {
        opened = openSim(disk, log);
      } catch (err) {
        refused.push(zeros);
        continue;
      }
      expect(opened.state.entries.map((e) => e.index)).toEqual([1, 2, 3]);
      const warning = lines.find((line) => line.level === "warn")?.msg ?? "";
      expect(warning).toContain(SEGMENT_1_PATH);
      expect(warning).toContain(`offset ${before.length}`);
      expect(warning).toContain(`${batchLength} bytes`);
      expect(Buffer.from(disk.fileBytes(SEGMENT_1_PATH)!.subarray(0, before.length)).equals(Buffer.from(before))).toBe(true);
      opened.wal.append([entry(4, 2)]);
      opened.wal.close();
      expect(recover(disk).entries.map((e) => `${e.index}/${e.term}`)).toEqual(["1/1", "2/1", "3/1", "4/2"]);
    }
    expect(refused).toEqual([]);
  });

  test("a flipped bit in an older segment is corruption", () => {
    const disk = newSimDisk();
    const { wal } = openSim(disk, quiet, 300);
    for (let i = 1; i <= 30; i++) {
      wal.append([entry(i, 1)]);
      wal.sync();
    }
    wal.close();
    const first = SEGMENT_1_PATH;
    disk.flipBit(first, Math.floor(disk.fileBytes(first)!.length / 2), 3);
    const err = openError(disk);
    expect(err).toBeInstanceOf(WalCorruptError);
    expect(err.message).toContain(first);
  });

  test("power loss at any point, with any unsynced write torn or lost, never stops the node and never loses a synced entry", () => {
    for (let seed = 1; seed <= 150; seed++) {
      const rng = mulberry32(seed);
      const sim = newSimDisk(seed);
      const { disk, killAtNextSync } = killableDisk(sim);
      const { wal } = Wal.open(SIM_DIR, { disk, log: quiet, segmentBytes: 400 + Math.floor(rng() * 2000) });
      let next = 1;
      let synced = 0;
      const batches = 1 + Math.floor(rng() * 12);
      for (let b = 0; b < batches; b++) {
        const count = 1 + Math.floor(rng() * 4);
        wal.append(entries(next, next + count - 1, 1));
        next += count;
        wal.setHardState({ term: 1, vote: 0, commit: Math.max(0, next - 3) });
        wal.sync();
        synced = next - 1;
      }
      // One more batch, written but not synced when the power fails: any part of it may be on disk.
      killAtNextSync();
      wal.setHardState({ term: 1, vote: 0, commit: next + 1 });
      wal.append(entries(next, next + 2, 1));
      expect(() => wal.sync()).toThrow("killed -9");
      sim.crash({ keepPageCache: false });
      let state: RecoveredState;
      try {
        state = recover(sim);
      } catch (err) {
        throw new Error(`seed ${seed}: refused to start after a power loss: ${(err as Error).message}`);
      }
      expect(lastIndexOf(state)).toBeGreaterThanOrEqual(synced);
      expect(state.hardState.commit).toBeLessThanOrEqual(lastIndexOf(state));
    }
  });
});

describe("bug 4: missing WAL and corrupt snapshots", () => {
  test("a missing WAL beside a snapshot is refused", () => {
    const disk = newSimDisk();
    const { wal } = openSim(disk);
    wal.append(entries(1, 5, 1));
    wal.close();
    const snapshotPath = writeSnapshot(SIM_DIR, { index: 5, term: 1, data: new Uint8Array([5]) }, disk);
    disk.unlink(SEGMENT_1_PATH);
    const err = openError(disk);
    expect(err).toBeInstanceOf(WalCorruptError);
    expect(err.message).toContain("no WAL");
    expect(err.message).toContain(snapshotPath);
  });

  test("a corrupt newest snapshot is refused, naming the file and what is wrong", () => {
    for (const [damage, reason] of [
      ["data", "data crc mismatch"],
      ["header", "header crc mismatch"],
    ] as const) {
      const disk = newSimDisk();
      openSim(disk).wal.close();
      writeSnapshot(SIM_DIR, { index: 20, term: 1, data: new TextEncoder().encode("older") }, disk);
      const newest = writeSnapshot(SIM_DIR, { index: 30, term: 2, data: new TextEncoder().encode("newer state") }, disk);
      disk.flipBit(newest, damage === "data" ? disk.fileBytes(newest)!.length - 2 : 9, 1);
      const err = openError(disk);
      expect(err.message).toContain(newest);
      expect(err.message).toContain(reason);
    }
  });
});

describe("configuration-change entries", () => {
  test("an entry's type round-trips through the WAL; a normal entry has none", () => {
    const disk = newSimDisk();
    const { wal } = openSim(disk);
    const config: Entry = { index: 2, term: 1, data: new TextEncoder().encode("add node 4"), type: 1 };
    wal.append([entry(1, 1), config, entry(3, 1)]);
    wal.close();
    const state = recover(disk);
    expect(state.entries.map((e) => e.type)).toEqual([undefined, 1, undefined]);
    expect(plain(state.entries)).toEqual(plain([entry(1, 1), config, entry(3, 1)]));
  });
});

describe("async sync and failed syncs", () => {
  test("flush() writes without syncing; a batch survives a power loss only once syncAsync() has resolved", async () => {
    const disk = newSimDisk(3, true);
    const opened = openSim(disk);
    disk.completeSyncs();
    const wal = opened.wal;
    wal.append(entries(1, 2, 1));
    wal.setHardState({ term: 1, vote: 0, commit: 0 });
    wal.flush();
    expect(wal.pendingBytes()).toBe(0);
    let synced = false;
    const sync = wal.syncAsync().then(() => (synced = true));
    wal.append([entry(3, 1)]); // buffered while the sync runs
    wal.flush();
    await Promise.resolve();
    expect(synced).toBe(false);
    expect(disk.queuedSyncCount()).toBe(1);

    const lost = newSimDisk();
    lost.mkdir(SIM_DIR);
    for (const [name] of simFiles(disk)) lost.putFile(path.join(SIM_DIR, name), disk.durableBytes(path.join(SIM_DIR, name))!);
    expect(recover(lost).entries).toEqual([]); // what a power loss now would leave

    disk.completeSyncs();
    await sync;
    expect(synced).toBe(true);
    disk.crash({ keepPageCache: false, fate: () => ({ kind: "lost" }) });
    const state = recover(disk);
    expect(state.entries.map((e) => e.index)).toEqual([1, 2]); // entry 3 was written after the sync began
    expect(state.hardState).toEqual({ term: 1, vote: 0, commit: 0 });
  });

  test("a failed fsync fails that sync and every later one, sync or async, even if the disk recovers", async () => {
    for (const path of ["sync", "async"] as const) {
      const disk = newSimDisk();
      const { wal } = openSim(disk);
      wal.append([entry(1, 1)]);
      disk.failNextFsync();
      if (path === "sync") expect(() => wal.sync()).toThrow("EIO");
      else await expect(wal.syncAsync()).rejects.toThrow("EIO");
      expect(() => wal.sync()).toThrow("WAL failed earlier");
      await expect(wal.syncAsync()).rejects.toThrow("WAL failed earlier");
      expect(() => wal.append([entry(2, 1)])).toThrow("WAL failed earlier");
      wal.close(); // closes the file, writes nothing
      disk.crash({ keepPageCache: false, fate: () => ({ kind: "kept" }) });
      expect(recover(disk).entries).toEqual([]); // the failed fsync's write never reached the disk
    }
  });

  test("a restart on the page cache after a failed fsync makes what it recovers durable (no refusal after a later power loss)", () => {
    const disk = newSimDisk();
    const { wal } = openSim(disk);
    wal.append(entries(1, 2, 1));
    wal.setHardState({ term: 1, vote: 0, commit: 0 });
    wal.sync();
    wal.append([entry(3, 1)]);
    disk.failNextFsync(); // the kernel marks the pages clean: entry 3 is in the page cache only, for good
    expect(() => wal.sync()).toThrow("EIO");
    wal.close();
    disk.crash({ keepPageCache: true }); // the node stops and restarts without a reboot
    const restarted = recover(disk);
    expect(restarted.entries.map((e) => e.index)).toEqual([1, 2, 3]);
    disk.crash({ keepPageCache: false, fate: () => ({ kind: "lost" }) }); // later, the power fails
    const state = recover(disk); // refused as "corrupt ... synced earlier" before the fix
    expect(state.entries.map((e) => e.index)).toEqual([1, 2, 3]); // what recovery returned was made durable
  });

  test("a sync that completes after another failed does not report success", async () => {
    const disk = newSimDisk(5, true);
    const opened = openSim(disk);
    disk.completeSyncs();
    const wal = opened.wal;
    wal.append([entry(1, 1)]);
    const first = wal.syncAsync();
    wal.append([entry(2, 1)]);
    const second = wal.syncAsync();
    disk.failNextFsync();
    disk.completeSyncs(1);
    await expect(first).rejects.toThrow("EIO");
    disk.completeSyncs(1);
    await expect(second).rejects.toThrow("WAL failed earlier");
  });

  test("a full disk (ENOSPC) fails the write and poisons the WAL; what was synced before survives", () => {
    const disk = newSimDisk();
    const { wal } = openSim(disk);
    wal.append(entries(1, 3, 1));
    wal.sync();
    disk.setSpaceLimit(disk.fileBytes(SEGMENT_1_PATH)!.length + 10);
    wal.append([entry(4, 1, "x".repeat(100))]);
    expect(() => wal.sync()).toThrow("ENOSPC");
    expect(() => wal.append([entry(5, 1)])).toThrow("WAL failed earlier");
    wal.close();
    disk.setSpaceLimit(null);
    disk.crash({ keepPageCache: false });
    expect(recover(disk).entries.map((e) => e.index)).toEqual([1, 2, 3]);
  });

  test("power loss with async syncs in flight: the node always starts and keeps every entry whose sync resolved", async () => {
    let durableTotal = 0;
    for (let seed = 1; seed <= 100; seed++) {
      const rng = mulberry32(seed);
      const disk = newSimDisk(seed, true);
      const opened = openSim(disk, quiet, 300 + Math.floor(rng() * 1500));
      disk.completeSyncs();
      const wal = opened.wal;
      let next = 1;
      let durable = 0;
      const inFlight: Promise<void>[] = [];
      for (let step = 0; step < 20; step++) {
        const roll = rng();
        if (roll < 0.6) {
          const count = 1 + Math.floor(rng() * 3);
          wal.append(entries(next, next + count - 1, 1));
          next += count;
          wal.setHardState({ term: 1, vote: 0, commit: Math.max(0, durable - 1) });
          const upTo = next - 1;
          inFlight.push(wal.syncAsync().then(() => void (durable = Math.max(durable, upTo))));
        } else {
          disk.completeSyncs(1 + Math.floor(rng() * 2));
          await new Promise((resolve) => setImmediate(resolve)); // let the completed syncs' callers run
        }
      }
      await new Promise((resolve) => setImmediate(resolve));
      durableTotal += durable;
      disk.crash({ keepPageCache: false });
      let state: RecoveredState;
      try {
        state = recover(disk);
      } catch (err) {
        throw new Error(`seed ${seed}: refused to start after a power loss: ${(err as Error).message}`);
      }
      expect(lastIndexOf(state)).toBeGreaterThanOrEqual(durable);
      expect(state.hardState.commit).toBeLessThanOrEqual(lastIndexOf(state));
    }
    expect(durableTotal).toBeGreaterThan(100); // the runs did get entries durable before the crash
  });
});

describe("a power loss before any single disk operation", () => {
  /** Runs `work` on a disk that loses power before its n-th operation, for every n; then checks recovery. */
  async function everyCrashPoint(
    work: (disk: Disk, acked: (index: number) => void) => Promise<void>,
    check: (disk: SimDisk, acked: number) => void,
  ): Promise<number> {
    let points = 0;
    for (let crashAt = 0; ; crashAt++) {
      const sim = newSimDisk(crashAt + 1);
      const faulty = powerLossAt(sim, crashAt);
      let acked = 0;
      try {
        await work(faulty.disk, (index) => (acked = Math.max(acked, index)));
      } catch (err) {
        if (!faulty.crashed()) throw err;
      }
      if (!faulty.crashed()) return points; // the work ran to the end: every operation has been a crash point
      points++;
      check(sim, acked);
    }
  }

  test("WAL: the node always starts, with every entry whose sync returned", async () => {
    const points = await everyCrashPoint(
      async (disk, acked) => {
        const { wal } = Wal.open(SIM_DIR, { disk, log: quiet, segmentBytes: 200 });
        for (let i = 1; i <= 12; i++) {
          wal.append([entry(i, 1 + Math.floor(i / 5))]);
          wal.setHardState({ term: 1 + Math.floor(i / 5), vote: 0, commit: i - 1 });
          if (i % 2 === 0) await wal.syncAsync();
          else wal.sync();
          acked(i);
          if (i === 8) {
            writeSnapshot(SIM_DIR, { index: 4, term: 1, data: new Uint8Array([4]) }, disk);
            wal.compact(4);
          }
        }
        wal.close();
      },
      (disk, acked) => {
        const state = recover(disk);
        expect(lastIndexOf(state)).toBeGreaterThanOrEqual(acked);
        expect(state.hardState.commit).toBeLessThanOrEqual(lastIndexOf(state));
      },
    );
    expect(points).toBeGreaterThan(40);
  });

  test("snapshots: the newest snapshot is always whole (the old one or the new one), sync and async", async () => {
    for (const write of [writeSnapshot, writeSnapshotAsync]) {
      const points = await everyCrashPoint(
        async (disk, acked) => {
          Wal.open(SIM_DIR, { disk, log: quiet }).wal.close();
          await write(SIM_DIR, { index: 10, term: 1, data: new Uint8Array(5000).fill(1) }, disk);
          acked(10);
          await write(SIM_DIR, { index: 20, term: 1, data: new Uint8Array(7000).fill(2) }, disk);
          acked(20);
          await write(SIM_DIR, { index: 30, term: 2, data: new Uint8Array(3000).fill(3) }, disk);
          acked(30);
        },
        (disk, acked) => {
          const { wal, state } = Wal.open(SIM_DIR, { disk, log: quiet }); // never refuses
          wal.close();
          expect(state.snapshot?.index ?? 0).toBeGreaterThanOrEqual(acked);
          if (state.snapshot !== null) expect(state.snapshot.data.every((b) => b === state.snapshot!.index / 10)).toBe(true);
        },
      );
      expect(points).toBeGreaterThan(10);
    }
  });
});
