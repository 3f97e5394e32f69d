import { afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { DataDirLockedError, lockDataDir } from "../../src/storage";
import { makeTempDir, removeTempDirs } from "./helpers";

afterEach(removeTempDirs);

describe("data dir lock", () => {
  test("creates the dir and writes our pid; a second lock throws until released", () => {
    const dir = path.join(makeTempDir(), "a", "b");
    const lock = lockDataDir(dir);
    expect(fs.readFileSync(path.join(dir, "LOCK"), "utf8").trim()).toBe(String(process.pid));

    let caught: unknown = null;
    try {
      lockDataDir(dir);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(DataDirLockedError);
    const message = (caught as Error).message;
    expect(message).toContain(`data dir ${dir} is in use by process ${process.pid}`);
    expect(message).toContain(path.join(dir, "LOCK"));

    lock.release();
    lock.release(); // idempotent
    expect(fs.existsSync(path.join(dir, "LOCK"))).toBe(false);
    const again = lockDataDir(dir);
    again.release();
  });

  test("a lock held by another live process is respected", () => {
    const dir = makeTempDir();
    fs.writeFileSync(path.join(dir, "LOCK"), `${process.ppid}\n`);
    expect(() => lockDataDir(dir)).toThrow(`in use by process ${process.ppid}`);
  });

  test("a stale lock of a dead process is taken over", () => {
    const dir = makeTempDir();
    fs.writeFileSync(path.join(dir, "LOCK"), "2147483646\n");
    const lock = lockDataDir(dir);
    expect(fs.readFileSync(path.join(dir, "LOCK"), "utf8").trim()).toBe(String(process.pid));
    lock.release();
  });

  test("an old unreadable lock file is stale; a fresh one is not", () => {
    const dir = makeTempDir();
    const lockPath = path.join(dir, "LOCK");
    fs.writeFileSync(lockPath, "");
    expect(() => lockDataDir(dir)).toThrow(DataDirLockedError);
    const longAgo = new Date(Date.now() - 60_000);
    fs.utimesSync(lockPath, longAgo, longAgo);
    const lock = lockDataDir(dir);
    lock.release();
  });
});
