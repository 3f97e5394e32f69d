import { afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { DataDirLockedError, lockDataDir, type DataDirLock } from "../../src/storage";
import { makeTempDir, removeTempDirs } from "./helpers";

afterEach(removeTempDirs);

const LOCK_MODULE = path.resolve(import.meta.dir, "../../src/storage/lock.ts");

function lockError(dir: string): DataDirLockedError {
  let caught: unknown = null;
  try {
    lockDataDir(dir).release();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(DataDirLockedError);
  return caught as DataDirLockedError;
}

/**
 * Starts `bun -e` holding the lock of `dir`, as the child of a `sleep` that never reaps it (so once
 * killed it stays a zombie). Resolves once it holds the lock, with its pid and the parent to stop later.
 */
async function holdInChild(dir: string): Promise<{ pid: number; parent: Bun.Subprocess<"ignore", "pipe", "inherit"> }> {
  const script = `const { lockDataDir } = await import(${JSON.stringify(LOCK_MODULE)});
lockDataDir(${JSON.stringify(dir)}); console.log("locked " + process.pid); setInterval(() => {}, 1000);`;
  const parent = Bun.spawn(["sh", "-c", '"$HOLDER_BUN" -e "$HOLDER_SCRIPT" & exec sleep 60'], {
    env: { ...process.env, HOLDER_BUN: process.execPath, HOLDER_SCRIPT: script },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = parent.stdout.getReader();
  let seen = "";
  while (!/locked \d+\n/.test(seen)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`lock holder exited before locking: ${seen}`);
    seen += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return { pid: Number(/locked (\d+)/.exec(seen)![1]), parent };
}

function isZombie(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false; // reaped
  }
}

/** Takes the lock, retrying while it is held; the deadline only bounds a broken run. */
function lockWhenFree(dir: string): DataDirLock {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return lockDataDir(dir);
    } catch (err) {
      if (!(err instanceof DataDirLockedError) || Date.now() > deadline) throw err;
    }
  }
}

describe("data dir lock", () => {
  test("creates the dir and writes our pid; a second lock throws until released", () => {
    const dir = path.join(makeTempDir(), "a", "b");
    const lock = lockDataDir(dir);
    expect(fs.readFileSync(path.join(dir, "LOCK"), "utf8").trim()).toBe(String(process.pid));

    const err = lockError(dir);
    expect(err.message).toContain(`data dir ${dir} is in use by process ${process.pid}`);
    expect(err.message).toContain(path.join(dir, "LOCK"));
    expect(err.ownerPid).toBe(process.pid);

    lock.release();
    lock.release(); // idempotent
    const again = lockDataDir(dir);
    again.release();
  });

  test("a lock held by another process is refused with its pid, and is free as soon as it is killed (before it is reaped)", async () => {
    const dir = makeTempDir();
    const { pid, parent } = await holdInChild(dir);
    try {
      const err = lockError(dir);
      expect(err.message).toContain(`is in use by process ${pid}`);
      expect(err.ownerPid).toBe(pid);
      // Killed but never reaped (a zombie still "exists" for kill(pid, 0)): the lock is free as soon as
      // the kernel has finished the exit (its last thread gone), with nothing to clean up.
      process.kill(pid, "SIGKILL");
      const lock = lockWhenFree(dir);
      expect(isZombie(pid)).toBe(true);
      expect(fs.readFileSync(lock.path, "utf8").trim()).toBe(String(process.pid));
      lock.release();
    } finally {
      parent.kill("SIGKILL");
      await parent.exited;
    }
  });

  test("a LOCK file naming a live, unrelated process (a reused pid) does not block", () => {
    const dir = makeTempDir();
    fs.writeFileSync(path.join(dir, "LOCK"), `${process.ppid}\n`);
    const lock = lockDataDir(dir);
    expect(fs.readFileSync(lock.path, "utf8").trim()).toBe(String(process.pid));
    lock.release();
  });

  test("a LOCK file with a dead pid or garbage does not block, however recent", () => {
    for (const content of ["2147483646\n", "", "not a pid"]) {
      const dir = makeTempDir();
      fs.writeFileSync(path.join(dir, "LOCK"), content);
      const lock = lockDataDir(dir);
      lock.release();
    }
  });
});
