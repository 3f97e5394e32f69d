import { afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { DataDirLockedError, lockDataDir } from "../../src/storage";
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

/** Starts `bun -e` holding the lock of `dir`; resolves once it says it holds it. */
async function holdInChild(dir: string): Promise<Bun.Subprocess<"ignore", "pipe", "inherit">> {
  const script = `const { lockDataDir } = await import(${JSON.stringify(LOCK_MODULE)});
lockDataDir(${JSON.stringify(dir)}); console.log("locked"); setInterval(() => {}, 1000);`;
  const child = Bun.spawn([process.execPath, "-e", script], { stdin: "ignore", stdout: "pipe", stderr: "inherit" });
  const reader = child.stdout.getReader();
  let seen = "";
  while (!seen.includes("locked")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`lock holder exited before locking: ${seen}`);
    seen += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return child;
}

/**
 * Polls /proc without yielding to the event loop (so the child is not reaped) until `pid` is a zombie.
 * The deadline only bounds a broken run; the condition, not the time, ends the wait.
 */
function waitForZombieSync(pid: number): boolean {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      return false; // already reaped: the zombie case cannot be checked
    }
    if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) return true;
  }
  return false;
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
    const child = await holdInChild(dir);
    try {
      const err = lockError(dir);
      expect(err.message).toContain(`is in use by process ${child.pid}`);
      expect(err.ownerPid).toBe(child.pid);
      // Killed but not yet reaped (a zombie still "exists" for kill(pid, 0)): the lock is free at once.
      child.kill("SIGKILL");
      expect(waitForZombieSync(child.pid)).toBe(true);
      const lock = lockDataDir(dir);
      expect(fs.readFileSync(lock.path, "utf8").trim()).toBe(String(process.pid));
      lock.release();
    } finally {
      child.kill("SIGKILL");
      await child.exited;
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
