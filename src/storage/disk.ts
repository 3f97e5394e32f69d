// The file operations the WAL and the snapshot files use, behind one interface, so that a simulation can
// run the same storage code on a disk that lies (src/storage/simdisk.ts). `realDisk` is node:fs.
//
// Errors are thrown as node:fs throws them: an Error with a string `code` (ENOENT, EEXIST, EIO, ENOSPC...).

import * as fs from "node:fs";
import * as fsp from "node:fs/promises";

/** "r": read only; "r+": read and write an existing file; "wx": create a new file (EEXIST if it exists). */
export type OpenMode = "r" | "r+" | "wx";

export interface Disk {
  /** Opens a file and returns its descriptor. */
  open(path: string, mode: OpenMode): number;
  close(fd: number): void;
  /** Current size of the open file in bytes. */
  size(fd: number): number;
  /** Reads up to `into.length` bytes at `position`; returns how many it read (fewer at the end of the file). */
  read(fd: number, into: Uint8Array, position: number): number;
  /** Same as read, without blocking the event loop. */
  readAsync(fd: number, into: Uint8Array, position: number): Promise<number>;
  /** Writes all of `bytes` at `position` (into the page cache: not durable until fdatasync). */
  write(fd: number, bytes: Uint8Array, position: number): void;
  /** Same as write, without blocking the event loop. */
  writeAsync(fd: number, bytes: Uint8Array, position: number): Promise<void>;
  truncate(fd: number, size: number): void;
  /** Makes the file's data (and its size) durable. Blocks the event loop. */
  fdatasync(fd: number): void;
  /** Same as fdatasync, run off the JS thread: the event loop keeps running meanwhile. */
  fdatasyncAsync(fd: number): Promise<void>;
  /** Makes the creates, renames and deletes inside `dir` durable. */
  fsyncDir(dir: string): void;
  fsyncDirAsync(dir: string): Promise<void>;
  rename(from: string, to: string): void;
  unlink(path: string): void;
  /** Names in `dir`; throws ENOENT if it does not exist. */
  readdir(dir: string): string[];
  /** Creates `dir` and its parents if missing. */
  mkdir(dir: string): void;
}

const OPEN_FLAGS: Record<OpenMode, string> = { r: "r", "r+": "r+", wx: "wx+" };

export const realDisk: Disk = {
  open: (path, mode) => fs.openSync(path, OPEN_FLAGS[mode], 0o644),
  close: (fd) => fs.closeSync(fd),
  size: (fd) => fs.fstatSync(fd).size,
  read(fd, into, position) {
    let total = 0;
    while (total < into.length) {
      const n = fs.readSync(fd, into, total, into.length - total, position + total);
      if (n === 0) break;
      total += n;
    }
    return total;
  },
  write(fd, bytes, position) {
    let written = 0;
    while (written < bytes.length) {
      const n = fs.writeSync(fd, bytes, written, bytes.length - written, position + written);
      if (n <= 0) throw new Error(`short write: wrote ${written} of ${bytes.length} bytes`);
      written += n;
    }
  },
  async readAsync(fd, into, position) {
    let total = 0;
    while (total < into.length) {
      const n = await new Promise<number>((resolve, reject) =>
        fs.read(fd, into, total, into.length - total, position + total, (err, count) => (err ? reject(err) : resolve(count))),
      );
      if (n === 0) break;
      total += n;
    }
    return total;
  },
  async writeAsync(fd, bytes, position) {
    let written = 0;
    while (written < bytes.length) {
      const n = await new Promise<number>((resolve, reject) =>
        fs.write(fd, bytes, written, bytes.length - written, position + written, (err, count) =>
          err ? reject(err) : resolve(count),
        ),
      );
      if (n <= 0) throw new Error(`short write: wrote ${written} of ${bytes.length} bytes`);
      written += n;
    }
  },
  truncate: (fd, size) => fs.ftruncateSync(fd, size),
  fdatasync: (fd) => fs.fdatasyncSync(fd),
  // Bun runs the callback form of fs.fdatasync on its thread pool (measured: bench/wal-sync-stall.ts).
  fdatasyncAsync: (fd) => new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve()))),
  fsyncDir(dir) {
    const fd = fs.openSync(dir, "r");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  },
  async fsyncDirAsync(dir) {
    const handle = await fsp.open(dir, "r");
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
  rename: (from, to) => fs.renameSync(from, to),
  unlink: (path) => fs.unlinkSync(path),
  readdir: (dir) => fs.readdirSync(dir),
  mkdir: (dir) => void fs.mkdirSync(dir, { recursive: true }),
};

/** Reads a whole file. */
export function readWholeFile(disk: Disk, path: string): Uint8Array {
  const fd = disk.open(path, "r");
  try {
    const bytes = new Uint8Array(disk.size(fd));
    const n = disk.read(fd, bytes, 0);
    return n === bytes.length ? bytes : bytes.subarray(0, n);
  } finally {
    disk.close(fd);
  }
}
