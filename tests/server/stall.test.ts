import { expect, test } from "bun:test";
import { Logger } from "../../src/server/log";
import { StallWatch } from "../../src/server/stall";

test("a timer turn later than the threshold is reported with how late it ran", () => {
  const seen: number[] = [];
  const w = new StallWatch({ intervalMs: 20, thresholdMs: 100, onStall: (ms) => seen.push(ms) });
  expect(w.check(1000)).toBe(0); // first turn: nothing to compare with
  expect(w.check(1021)).toBe(1);
  expect(w.check(1141)).toBe(100); // blocked for 100 ms beyond the interval
  expect(w.check(1161)).toBe(0);
  expect(w.check(1181 + 450)).toBe(450);
  expect(seen).toEqual([100, 450]);
  expect(w.maxLateMs).toBe(450);
});

test("turns on time, or late by less than the threshold, are not reported", () => {
  const seen: number[] = [];
  const w = new StallWatch({ intervalMs: 20, thresholdMs: 100, onStall: (ms) => seen.push(ms) });
  let last = 0;
  for (let t = 0; t <= 2000; t += 20 + (t % 7)) w.check((last = t));
  w.check(last + 20 + 99);
  expect(seen).toEqual([]);
  expect(w.maxLateMs).toBe(0);
});

test("a real blocked event loop is seen", async () => {
  const seen: number[] = [];
  const stop = new StallWatch({ intervalMs: 10, thresholdMs: 150, onStall: (ms) => seen.push(ms) }).start();
  try {
    await Bun.sleep(15);
    const until = performance.now() + 250;
    while (performance.now() < until) {} // a synchronous task holding the thread
    const deadline = performance.now() + 2000;
    while (seen.length === 0 && performance.now() < deadline) await Bun.sleep(5);
    expect(seen.length).toBe(1);
    expect(seen[0]!).toBeGreaterThanOrEqual(150);
  } finally {
    stop();
  }
});

test("a recurring warning is logged at most once a second, counting the ones left out", () => {
  let now = 0;
  const lines: string[] = [];
  const log = new Logger(1, () => 2, "info", "json", (l) => lines.push(l), () => now);
  for (let i = 0; i < 25; i++) {
    log.logAtMostEvery(1000, "warn", "event loop stalled", { ms: 100 + i });
    now += 100; // 25 stalls over 2.5 s
  }
  const logged = lines.map((l) => JSON.parse(l));
  expect(logged.map((l) => [l.ms, l.suppressed])).toEqual([
    [100, undefined],
    [110, 9],
    [120, 9],
  ]);
  // Below the level nothing is logged or counted.
  const quiet = new Logger(1, () => 2, "error", "json", (l) => lines.push(l), () => now);
  quiet.logAtMostEvery(1000, "warn", "x");
  expect(lines).toHaveLength(3);
});
