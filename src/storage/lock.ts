// The data-dir lock: one raftkv process per data directory.
//
// The lock is a file named LOCK created with O_CREAT|O_EXCL ('wx') that holds the owner's PID. A lock
// whose PID no longer runs is stale (the owner crashed) and is taken over.

import * as fs from "node:fs";
import * as path from "node:path";
import { errorCode } from "./util";

export const LOCK_FILE_NAME = "LOCK";

/** A lock file that is empty or unreadable this recently may belong to a process still writing it. */
const UNREADABLE_LOCK_GRACE_MS = 5_000;
const MAX_TAKEOVER_ATTEMPTS = 5;

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
  /** Removes the LOCK file. Safe to call more than once. */
  release(): void;
}

/** True when a process with this PID exists (even if owned by another user). */
function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but we may not signal it.
    return errorCode(err) === "EPERM";
  }
}

function readLockPid(lockPath: string): number | null {
  const text = fs.readFileSync(lockPath, "utf8").trim();
  if (!/^\d+$/.test(text)) return null;
  const pid = Number(text);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}

/** Creates LOCK exclusively and writes our PID into it. Returns false if LOCK already exists. */
function tryCreateLock(lockPath: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(lockPath, "wx", 0o644);
  } catch (err) {
    if (errorCode(err) === "EEXIST") return false;
    throw err;
  }
  try {
    fs.writeSync(fd, `${process.pid}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return true;
}

/**
 * Creates `dir` (recursively) and takes its exclusive lock. Throws DataDirLockedError if a live process
 * holds it; takes over a lock left behind by a process that is gone.
 */
export function lockDataDir(dir: string): DataDirLock {
  fs.mkdirSync(dir, { recursive: true });
  const lockPath = path.join(dir, LOCK_FILE_NAME);

  for (let attempt = 0; attempt < MAX_TAKEOVER_ATTEMPTS; attempt++) {
    if (tryCreateLock(lockPath)) {
      let released = false;
      return {
        dir,
        path: lockPath,
        release(): void {
          if (released) return;
          released = true;
          try {
            fs.unlinkSync(lockPath);
          } catch (err) {
            if (errorCode(err) !== "ENOENT") throw err;
          }
        },
      };
    }

    let ownerPid: number | null;
    try {
      ownerPid = readLockPid(lockPath);
    } catch (err) {
      if (errorCode(err) === "ENOENT") continue; // released meanwhile: try again
      throw err;
    }

    if (ownerPid === null) {
      // Empty or garbage content: either a crash between create and write, or another process that
      // is writing its PID right now. Only a lock that has stayed unreadable for a while is stale.
      let ageMs: number;
      try {
        ageMs = Date.now() - fs.statSync(lockPath).mtimeMs;
      } catch (err) {
        if (errorCode(err) === "ENOENT") continue;
        throw err;
      }
      if (ageMs < UNREADABLE_LOCK_GRACE_MS) {
        throw new DataDirLockedError(
          `data dir ${dir} is being locked by another process (remove ${lockPath} if no raftkv is running)`,
          dir,
          null,
        );
      }
    } else if (processIsAlive(ownerPid)) {
      throw new DataDirLockedError(
        `data dir ${dir} is in use by process ${ownerPid} (remove ${lockPath} if that process is not raftkv)`,
        dir,
        ownerPid,
      );
    }

    // Stale lock: remove it and try to create ours.
    try {
      fs.unlinkSync(lockPath);
    } catch (err) {
      if (errorCode(err) !== "ENOENT") throw err;
    }
  }
  throw new DataDirLockedError(
    `data dir ${dir}: could not take the lock ${lockPath} after ${MAX_TAKEOVER_ATTEMPTS} attempts`,
    dir,
    null,
  );
}
