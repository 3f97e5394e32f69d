import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Entry } from "../../src/raft/types";

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
