// The data-dir lock: one raftkv process per data directory.
//
// The lock is a kernel lock, flock(2) LOCK_EX|LOCK_NB on the file LOCK, called through bun:ffi. The
// kernel drops it when the holding process exits in any way (kill -9 included, and before the process is
// reaped), so there is never a stale lock to clean up. The holder writes its PID into LOCK only so that
// a refused process can name it; the PID is never used to decide anything (after a reboot it may belong
// to another process). The file itself is never deleted: unlinking a flock'ed file lets a process that
// opened the old file and one that creates a new one both "hold" the lock.

import { dlopen, FFIType, read, type Pointer } from "bun:ffi";
import * as fs from "node:fs";
import * as path from "node:path";

export const LOCK_FILE_NAME = "LOCK";

const LOCK_EX = 2;
const LOCK_NB = 4;
/** How many times flock is retried when a signal interrupts it (EINTR) before giving up. */
const MAX_FLOCK_EINTR_RETRIES = 10;

interface Libc {
  library: string;
  errnoSymbol: "__errno_location" | "__error";
  EINTR: number;
  EWOULDBLOCK: number;
}

const LIBC: Record<string, Libc> = {
  linux: { library: "libc.so.6", errnoSymbol: "__errno_location", EINTR: 4, EWOULDBLOCK: 11 },
  darwin: { library: "libSystem.B.dylib", errnoSymbol: "__error", EINTR: 4, EWOULDBLOCK: 35 },
};

let flockFn: ((fd: number, op: number) => { result: number; errno: number }) | null = null;

/** flock(2) from libc, loaded on first use; returns its result and, on failure, errno. */
function flock(fd: number, op: number): { result: number; errno: number } {
  if (flockFn === null) {
    const libc = currentLibc();
    const { symbols } = dlopen(libc.library, {
      flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
      [libc.errnoSymbol]: { args: [], returns: FFIType.ptr },
    });
    const errnoLocation = symbols[libc.errnoSymbol] as unknown as () => Pointer;
    flockFn = (lockFd, lockOp) => {
      const result = symbols.flock(lockFd, lockOp) as number;
      return { result, errno: result === 0 ? 0 : read.i32(errnoLocation(), 0) };
    };
  }
  return flockFn(fd, op);
}

function currentLibc(): Libc {
  const libc = LIBC[process.platform];
  if (libc === undefined) throw new Error(`the data-dir lock (flock) is not supported on ${process.platform}`);
  return libc;
}

export class DataDirLockedError extends Error {
  override readonly name = "DataDirLockedError";
  constructor(
    message: string,
    readonly dir: string,
    readonly ownerPid: number | null,
  ) {
    super(message);
  }
}

export interface DataDirLock {
  readonly dir: string;
  /** Full path of the LOCK file. */
  readonly path: string;
  /** Releases the lock (closes the file; the file stays). Safe to call more than once. */
  release(): void;
}

/** The PID the holder wrote into LOCK, for the error message only; null if unreadable. */
function readHolderPid(fd: number): number | null {
  const buf = Buffer.alloc(32);
  let n: number;
  try {
    n = fs.readSync(fd, buf, 0, buf.length, 0);
  } catch {
    return null;
  }
  const text = buf.subarray(0, n).toString("utf8").trim();
  if (!/^\d+$/.test(text)) return null;
  const pid = Number(text);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}

/**
 * Creates `dir` (recursively) and takes its exclusive lock. Throws DataDirLockedError if another process
 * (or another lock in this process) holds it.
 */
export function lockDataDir(dir: string): DataDirLock {
  fs.mkdirSync(dir, { recursive: true });
  const lockPath = path.join(dir, LOCK_FILE_NAME);
  const fd = fs.openSync(lockPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  try {
    for (let attempt = 0; ; attempt++) {
      const { result, errno } = flock(fd, LOCK_EX | LOCK_NB);
      if (result === 0) break;
      if (errno === currentLibc().EINTR && attempt < MAX_FLOCK_EINTR_RETRIES) continue;
      if (errno === currentLibc().EWOULDBLOCK) {
        const pid = readHolderPid(fd);
        const holder = pid === null ? "another process" : `process ${pid}`;
        throw new DataDirLockedError(
          `data dir ${dir} is in use by ${holder} (it holds the lock on ${lockPath}; stop that process first)`,
          dir,
          pid,
        );
      }
      throw new Error(`could not lock ${lockPath}: flock failed with errno ${errno}`);
    }
    const pidText = Buffer.from(`${process.pid}\n`);
    fs.ftruncateSync(fd, 0);
    fs.writeSync(fd, pidText, 0, pidText.length, 0);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  let released = false;
  return {
    dir,
    path: lockPath,
    release(): void {
      if (released) return;
      released = true;
      fs.closeSync(fd); // closing the file drops the flock
    },
  };
}
