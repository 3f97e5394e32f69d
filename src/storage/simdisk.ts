// SimDisk: an in-memory Disk that lies the way real disks do, for tests and the seeded simulation.
//
// Every file has two images: the page cache (what reads see) and the durable image (what survives a power
// loss). write/truncate change the page cache and are remembered as pending operations; fdatasync makes
// the file's page cache durable. Names (create, rename, unlink) are in the page cache too, and become
// durable with an fsync of their directory. Directories themselves are always durable.
//
//   crash({ keepPageCache: true })    kill -9: open descriptors die, the page cache stays (still not durable)
//   crash({ keepPageCache: false })   power loss: only durable data and names remain; each pending write is
//                                     lost, kept, cut to a prefix, or torn so that only its end reached the
//                                     disk (the start reads as zeros past the old end of the file), decided
//                                     by the injected rng or by a `fate` callback
//   failNextFsync()                   the next fdatasync / directory fsync throws EIO; like Linux, the
//                                     writes it covered are then never made durable, even by a later
//                                     fsync that succeeds
//   setSpaceLimit(bytes)              a write that would grow the files past `bytes` in total throws ENOSPC
//
// fdatasyncAsync resolves at once (on a microtask) unless `manualSyncs` is set; then it resolves (and the
// data becomes durable) only when the simulation calls completeSyncs().

import * as path from "node:path";
import type { Disk, OpenMode } from "./disk";

/** What reaches the disk of one pending write when the power fails. */
export type WriteFate =
  | { kind: "lost" }
  | { kind: "kept" }
  /** Only the first `bytes` bytes reached the disk. */
  | { kind: "prefix"; bytes: number }
  /** Only the bytes from `from` on reached the disk; the ones before read as zeros past the old end. */
  | { kind: "suffix"; from: number };

export interface PendingWrite {
  path: string;
  position: number;
  length: number;
}

export interface CrashOptions {
  /** true: kill -9 (the page cache survives); false: power loss. */
  keepPageCache: boolean;
  /** Decides each pending write's fate on a power loss (default: the rng). */
  fate?: (write: PendingWrite) => WriteFate;
}

export interface SimDiskOptions {
  /** Seeded randomness for the fate of unsynced writes on a power loss. Returns [0, 1). */
  rng: () => number;
  /** When true, async syncs complete only through completeSyncs(). */
  manualSyncs?: boolean;
}

type PendingOp = { kind: "write"; position: number; bytes: Uint8Array } | { kind: "truncate"; size: number };

/** A growable byte buffer. */
class Bytes {
  buf = new Uint8Array(0);
  length = 0;

  clone(): Bytes {
    const copy = new Bytes();
    copy.buf = this.buf.slice(0, this.length);
    copy.length = this.length;
    return copy;
  }

  view(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }

  resize(size: number): void {
    if (size > this.buf.length) {
      const grown = new Uint8Array(Math.max(size, this.buf.length * 2, 256));
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
    } else if (size < this.length) {
      this.buf.fill(0, size, this.length); // so a later growth reads zeros
    }
    this.length = size;
  }

  writeAt(position: number, bytes: Uint8Array): void {
    if (position + bytes.length > this.length) this.resize(position + bytes.length);
    this.buf.set(bytes, position);
  }

  apply(op: PendingOp): void {
    if (op.kind === "write") this.writeAt(op.position, op.bytes);
    else this.resize(op.size);
  }
}

interface Inode {
  cache: Bytes;
  durable: Bytes;
  /** Operations since the last fdatasync, in order. */
  pending: PendingOp[];
}

interface Handle {
  inode: Inode;
  path: string;
  writable: boolean;
}

function ioError(code: string, syscall: string, file: string): Error {
  return Object.assign(new Error(`${code}: ${syscall} '${file}' (simulated disk)`), { code, syscall, path: file });
}

export class SimDisk implements Disk {
  private names = new Map<string, Inode>();
  private durableNames = new Map<string, Inode>();
  private dirs = new Set<string>(["/"]);
  private handles = new Map<number, Handle>();
  private nextFd = 3;
  private failFsyncs = 0;
  private spaceLimit: number | null = null;
  private queuedSyncs: { complete: () => void }[] = [];
  private readonly rng: () => number;
  private readonly manualSyncs: boolean;

  constructor(opts: SimDiskOptions) {
    this.rng = opts.rng;
    this.manualSyncs = opts.manualSyncs ?? false;
  }

  // ---- fault injection and inspection ----------------------------------------------------------

  crash(opts: CrashOptions): void {
    this.handles.clear();
    this.queuedSyncs = []; // their callers are gone
    if (opts.keepPageCache) return;
    this.names = new Map(this.durableNames);
    const fate = opts.fate ?? ((write: PendingWrite) => this.randomFate(write));
    const seen = new Set<Inode>();
    const namesOf = new Map<Inode, string>();
    for (const [name, inode] of this.durableNames) namesOf.set(inode, name);
    for (const inode of this.names.values()) {
      if (seen.has(inode)) continue;
      seen.add(inode);
      const image = inode.durable.clone();
      for (const op of inode.pending) {
        if (op.kind === "truncate") {
          if (this.rng() < 0.5) image.resize(op.size);
          continue;
        }
        const decided = fate({ path: namesOf.get(inode)!, position: op.position, length: op.bytes.length });
        if (decided.kind === "kept") image.writeAt(op.position, op.bytes);
        else if (decided.kind === "prefix") image.writeAt(op.position, op.bytes.subarray(0, decided.bytes));
        else if (decided.kind === "suffix") {
          const end = op.position + op.bytes.length;
          if (end > image.length) image.resize(end);
          image.writeAt(op.position + decided.from, op.bytes.subarray(decided.from));
        }
      }
      inode.durable = image;
      inode.cache = image.clone();
      inode.pending = [];
    }
  }

  /** The next `count` fsyncs (file or directory) fail with EIO. */
  failNextFsync(count = 1): void {
    this.failFsyncs += count;
  }

  /** Writes that would make the files larger than `bytes` in total fail with ENOSPC; null: no limit. */
  setSpaceLimit(bytes: number | null): void {
    this.spaceLimit = bytes;
  }

  /** Completes the oldest `count` queued async syncs (all by default); returns how many it completed. */
  completeSyncs(count = Infinity): number {
    let done = 0;
    while (done < count && this.queuedSyncs.length > 0) {
      this.queuedSyncs.shift()!.complete();
      done++;
    }
    return done;
  }

  queuedSyncCount(): number {
    return this.queuedSyncs.length;
  }

  /** The page-cache content of a file, or null if it does not exist. */
  fileBytes(file: string): Uint8Array | null {
    return this.names.get(file)?.cache.view().slice() ?? null;
  }

  /** The durable content of a file under its durable name, or null. */
  durableBytes(file: string): Uint8Array | null {
    return this.durableNames.get(file)?.durable.view().slice() ?? null;
  }

  /** Writes a whole file durably (name included), as if it had been there all along. */
  putFile(file: string, bytes: Uint8Array): void {
    this.mkdir(path.dirname(file));
    const inode: Inode = { cache: new Bytes(), durable: new Bytes(), pending: [] };
    inode.cache.writeAt(0, bytes);
    inode.durable.writeAt(0, bytes);
    this.names.set(file, inode);
    this.durableNames.set(file, inode);
  }

  /** Bit rot: flips one bit of a file in both images. */
  flipBit(file: string, offset: number, bit: number): void {
    const inode = this.names.get(file);
    if (inode === undefined) throw ioError("ENOENT", "flipBit", file);
    for (const image of [inode.cache, inode.durable]) {
      if (offset < image.length) image.buf[offset]! ^= 1 << bit;
    }
  }

  // ---- Disk --------------------------------------------------------------------------------------

  open(file: string, mode: OpenMode): number {
    let inode = this.names.get(file);
    if (mode === "wx") {
      if (inode !== undefined) throw ioError("EEXIST", "open", file);
      if (!this.dirs.has(path.dirname(file))) throw ioError("ENOENT", "open", file);
      inode = { cache: new Bytes(), durable: new Bytes(), pending: [] };
      this.names.set(file, inode);
    } else if (inode === undefined) {
      throw ioError(this.dirs.has(file) ? "EISDIR" : "ENOENT", "open", file);
    }
    const fd = this.nextFd++;
    this.handles.set(fd, { inode, path: file, writable: mode !== "r" });
    return fd;
  }

  close(fd: number): void {
    this.handle(fd, "close");
    this.handles.delete(fd);
  }

  size(fd: number): number {
    return this.handle(fd, "fstat").inode.cache.length;
  }

  read(fd: number, into: Uint8Array, position: number): number {
    const data = this.handle(fd, "read").inode.cache;
    const n = Math.max(0, Math.min(into.length, data.length - position));
    into.set(data.buf.subarray(position, position + n));
    return n;
  }

  write(fd: number, bytes: Uint8Array, position: number): void {
    const handle = this.handle(fd, "write");
    if (!handle.writable) throw ioError("EBADF", "write", handle.path);
    const growth = Math.max(0, position + bytes.length - handle.inode.cache.length);
    if (this.spaceLimit !== null && growth > 0 && this.usedBytes() + growth > this.spaceLimit) {
      throw ioError("ENOSPC", "write", handle.path);
    }
    const copy = bytes.slice();
    handle.inode.cache.writeAt(position, copy);
    handle.inode.pending.push({ kind: "write", position, bytes: copy });
  }

  async readAsync(fd: number, into: Uint8Array, position: number): Promise<number> {
    return this.read(fd, into, position);
  }

  async writeAsync(fd: number, bytes: Uint8Array, position: number): Promise<void> {
    this.write(fd, bytes, position);
  }

  truncate(fd: number, size: number): void {
    const handle = this.handle(fd, "ftruncate");
    if (!handle.writable) throw ioError("EBADF", "ftruncate", handle.path);
    handle.inode.cache.resize(size);
    handle.inode.pending.push({ kind: "truncate", size });
  }

  fdatasync(fd: number): void {
    const handle = this.handle(fd, "fdatasync");
    this.syncInode(handle.inode, handle.inode.pending.length, handle.path);
  }

  fdatasyncAsync(fd: number): Promise<void> {
    const handle = this.handle(fd, "fdatasync");
    const count = handle.inode.pending.length; // what the sync covers: the writes issued before it
    return this.queued(() => this.syncInode(handle.inode, count, handle.path));
  }

  fsyncDir(dir: string): void {
    if (!this.dirs.has(dir)) throw ioError("ENOENT", "open", dir);
    this.takeFsyncFailure(dir);
    for (const name of new Set([...this.names.keys(), ...this.durableNames.keys()])) {
      if (path.dirname(name) !== dir) continue;
      const inode = this.names.get(name);
      if (inode === undefined) this.durableNames.delete(name);
      else this.durableNames.set(name, inode);
    }
  }

  fsyncDirAsync(dir: string): Promise<void> {
    return this.queued(() => this.fsyncDir(dir));
  }

  rename(from: string, to: string): void {
    const inode = this.names.get(from);
    if (inode === undefined) throw ioError("ENOENT", "rename", from);
    if (!this.dirs.has(path.dirname(to))) throw ioError("ENOENT", "rename", to);
    this.names.delete(from);
    this.names.set(to, inode);
  }

  unlink(file: string): void {
    if (!this.names.delete(file)) throw ioError("ENOENT", "unlink", file);
  }

  readdir(dir: string): string[] {
    if (!this.dirs.has(dir)) throw ioError("ENOENT", "scandir", dir);
    const names: string[] = [];
    for (const name of this.names.keys()) if (path.dirname(name) === dir) names.push(path.basename(name));
    for (const sub of this.dirs) if (sub !== dir && path.dirname(sub) === dir) names.push(path.basename(sub));
    return names.sort();
  }

  mkdir(dir: string): void {
    for (let d = dir; !this.dirs.has(d); d = path.dirname(d)) this.dirs.add(d);
  }

  // ---- internals ---------------------------------------------------------------------------------

  private handle(fd: number, syscall: string): Handle {
    const handle = this.handles.get(fd);
    if (handle === undefined) throw ioError("EBADF", syscall, `fd ${fd}`);
    return handle;
  }

  private usedBytes(): number {
    let total = 0;
    for (const inode of new Set(this.names.values())) total += inode.cache.length;
    return total;
  }

  private takeFsyncFailure(file: string): void {
    if (this.failFsyncs === 0) return;
    this.failFsyncs--;
    throw ioError("EIO", "fsync", file);
  }

  /** Makes the first `count` pending operations durable; on an injected failure they are dropped. */
  private syncInode(inode: Inode, count: number, file: string): void {
    const covered = inode.pending.splice(0, count);
    if (this.failFsyncs > 0) {
      // The kernel marks the pages clean after a failed writeback: these writes never reach the disk, even
      // if a later fsync succeeds. The rest stays pending after the failed ones.
      this.takeFsyncFailure(file);
    }
    for (const op of covered) inode.durable.apply(op);
  }

  private queued(work: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const entry = {
        complete: () => {
          try {
            work();
            resolve();
          } catch (err) {
            reject(err);
          }
        },
      };
      if (this.manualSyncs) this.queuedSyncs.push(entry);
      else queueMicrotask(entry.complete);
    });
  }

  private randomFate(write: PendingWrite): WriteFate {
    const roll = this.rng();
    if (roll < 0.25) return { kind: "lost" };
    if (roll < 0.5) return { kind: "kept" };
    const at = Math.floor(this.rng() * (write.length + 1));
    return roll < 0.75 ? { kind: "prefix", bytes: at } : { kind: "suffix", from: at };
  }
}
