import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Entry } from "../../src/raft/types";
import { SimDisk, type Disk } from "../../src/storage";
import { mulberry32 } from "../rng";

/** Temp dirs made by a test file; call removeTempDirs() in afterEach. */
const created: string[] = [];

export function makeTempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "raftkv-"));
  created.push(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const dir of created.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

/** Copies every regular file of `from` into a fresh temp dir. */
export function copyDir(from: string): string {
  const to = makeTempDir();
  for (const name of fs.readdirSync(from)) fs.copyFileSync(path.join(from, name), path.join(to, name));
  return to;
}

export function entry(index: number, term: number, text = `cmd-${index}-${term}`): Entry {
  return { index, term, data: new TextEncoder().encode(text) };
}

export function entries(from: number, to: number, term: number): Entry[] {
  const list: Entry[] = [];
  for (let i = from; i <= to; i++) list.push(entry(i, term));
  return list;
}

/** Entries as plain comparable values. */
export function plain(list: readonly Entry[]): { index: number; term: number; data: string }[] {
  return list.map((e) => ({ index: e.index, term: e.term, data: Buffer.from(e.data).toString("hex") }));
}

export interface LogLine {
  level: "warn" | "info";
  msg: string;
}

export function collectingLog(): { lines: LogLine[]; log: (level: "warn" | "info", msg: string) => void } {
  const lines: LogLine[] = [];
  return { lines, log: (level, msg) => lines.push({ level, msg }) };
}

export function flipBit(file: string, offset: number, bit: number): void {
  const bytes = fs.readFileSync(file);
  bytes[offset] = bytes[offset]! ^ (1 << bit);
  fs.writeFileSync(file, bytes);
}

// ---- the simulated disk ----------------------------------------------------------------------

export const SIM_DIR = "/data";

export function newSimDisk(seed = 1, manualSyncs = false): SimDisk {
  return new SimDisk({ rng: mulberry32(seed), manualSyncs });
}

/** A fresh SimDisk holding exactly `files` (durably), in SIM_DIR. */
export function simDiskWith(files: Map<string, Uint8Array>): SimDisk {
  const disk = newSimDisk();
  disk.mkdir(SIM_DIR);
  for (const [name, bytes] of files) disk.putFile(path.join(SIM_DIR, name), bytes);
  return disk;
}

/** Every file of SIM_DIR as the page cache has it. */
export function simFiles(disk: SimDisk): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  for (const name of disk.readdir(SIM_DIR)) files.set(name, disk.fileBytes(path.join(SIM_DIR, name))!);
  return files;
}

/**
 * A Disk that behaves like `disk` until killAtNextSync() is called; then, at the next fdatasync or fsync
 * of a directory, the process "is killed" (kill -9: the page cache survives) before the sync does
 * anything, and the call throws.
 */
export function killableDisk(disk: SimDisk): { disk: Disk; killAtNextSync: () => void } {
  let armed = false;
  const kill = (): never => {
    armed = false;
    disk.crash({ keepPageCache: true });
    throw new Error("killed -9 during fdatasync");
  };
  const wrapped = new Proxy(disk, {
    get(target, prop, receiver) {
      if (armed && (prop === "fdatasync" || prop === "fsyncDir")) return kill;
      if (armed && (prop === "fdatasyncAsync" || prop === "fsyncDirAsync")) return async () => kill();
      const value = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { disk: wrapped, killAtNextSync: () => (armed = true) };
}

const MUTATING_OPS = new Set([
  "write",
  "writeAsync",
  "truncate",
  "fdatasync",
  "fdatasyncAsync",
  "fsyncDir",
  "fsyncDirAsync",
  "rename",
  "unlink",
  "open",
]);

/**
 * A Disk over `disk` whose `crashAt`-th mutating operation (counted from 0; opens count too) does not
 * happen: the power fails just before it (random fates for everything unsynced) and the call throws.
 * `ops()` tells how many mutating operations ran, to find the range of crash points.
 */
export function powerLossAt(disk: SimDisk, crashAt: number): { disk: Disk; ops: () => number; crashed: () => boolean } {
  let count = 0;
  let crashed = false;
  const wrapped = new Proxy(disk, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== "function") return value;
      if (typeof prop !== "string" || !MUTATING_OPS.has(prop)) return value.bind(target);
      return (...args: unknown[]) => {
        if (crashed) throw new Error("the power is off");
        if (count++ === crashAt) {
          crashed = true;
          target.crash({ keepPageCache: false });
          throw new Error("power loss");
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { disk: wrapped, ops: () => count, crashed: () => crashed };
}
