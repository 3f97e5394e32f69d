// Unavailability after a crash: one writer puts in a loop; once it has written for a while, the given
// process (the leader) is killed with SIGKILL while a put is in flight; the figure is the time from the
// kill to the completion of the first successful put that was issued after the kill.

import { benchKey, benchValue } from "./options";
import { errorCode, type KvDriver } from "./runner";

export interface FailoverOptions {
  /** PID of the process to kill -9 (one the caller started). */
  killPid: number;
  /** Successful writing before the kill, ms. Default 1000. */
  warmupMs?: number;
  /** Give up waiting for a successful put this long after the kill. Default 30,000. */
  maxWaitMs?: number;
  keySize?: number;
  valueSize?: number;
  /** Test hook: how to kill. Default process.kill(pid, "SIGKILL"). */
  kill?: (pid: number) => void;
}

export interface FailoverResult {
  /** Kill to the first successful put issued after it, ms; null if none within maxWaitMs. */
  unavailableMs: number | null;
  /** Longest gap between two successive successful puts around the kill, ms. */
  maxGapMs: number;
  putsBeforeKill: number;
  errorsAfterKill: Record<string, number>;
}

export async function measureFailover(driver: KvDriver, opts: FailoverOptions): Promise<FailoverResult> {
  const warmupMs = opts.warmupMs ?? 1000;
  const maxWaitMs = opts.maxWaitMs ?? 30_000;
  const keySize = opts.keySize ?? 8;
  const value = benchValue(opts.valueSize ?? 100, "failover");
  const kill = opts.kill ?? ((pid: number) => process.kill(pid, "SIGKILL"));

  let putsBeforeKill = 0;
  let lastOk: number | null = null;
  let maxGapMs = 0;
  const errorsAfterKill: Record<string, number> = {};
  let firstOk: number | null = null;

  // Warm up: the kill is armed only after a first success, so a cluster that is not yet serving
  // does not count as the failover.
  const start = performance.now();
  let seq = 0;
  while (firstOk === null || performance.now() - firstOk < warmupMs) {
    if (performance.now() - start > maxWaitMs) throw new Error(`no successful put within ${maxWaitMs} ms before the kill`);
    try {
      await driver.put(0, benchKey(seq++ % 1000, keySize), value);
      const now = performance.now();
      firstOk ??= now;
      if (lastOk !== null) maxGapMs = Math.max(maxGapMs, now - lastOk);
      lastOk = now;
      putsBeforeKill++;
    } catch {
      await Bun.sleep(20);
    }
  }
  maxGapMs = 0;

  // Kill while a put is in flight, as a crash would land; that put does not count either way.
  const inFlight = driver.put(0, benchKey(seq++ % 1000, keySize), value).then(
    () => true,
    () => false,
  );
  const killedAt = performance.now();
  kill(opts.killPid);
  if (await inFlight) {
    const now = performance.now();
    if (lastOk !== null) maxGapMs = Math.max(maxGapMs, now - lastOk);
    lastOk = now;
  }
  while (performance.now() - killedAt <= maxWaitMs) {
    const issuedAt = performance.now();
    try {
      await driver.put(0, benchKey(seq++ % 1000, keySize), value);
      const now = performance.now();
      if (lastOk !== null) maxGapMs = Math.max(maxGapMs, now - lastOk);
      lastOk = now;
      if (issuedAt >= killedAt) return { unavailableMs: now - killedAt, maxGapMs, putsBeforeKill, errorsAfterKill };
    } catch (err) {
      const code = errorCode(err);
      errorsAfterKill[code] = (errorsAfterKill[code] ?? 0) + 1;
      await Bun.sleep(5);
    }
  }
  return { unavailableMs: null, maxGapMs, putsBeforeKill, errorsAfterKill };
}
