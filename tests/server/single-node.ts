// A single-node runtime on a hand-driven clock, for tests of what is built on the runtime (client
// service, leases, watches): nothing runs unless the test says so. Storage and transport do nothing.
import { NONE } from "../../src/raft/types";
import { Logger } from "../../src/server/log";
import { NodeRuntime, type Clock } from "../../src/server/runtime";

export function singleNodeRuntime(tickMs = 10) {
  let mono = 0;
  const deferred: (() => void)[] = [];
  const timers: (() => void)[] = [];
  const clock: Clock = {
    now: () => mono,
    defer: (fn) => void deferred.push(fn),
    every: (_ms, fn) => {
      timers.push(fn);
      return () => {};
    },
  };
  /** Run everything deferred so far (the Ready loop, watch turns), and what that defers. */
  const drain = () => {
    while (deferred.length) deferred.shift()!();
  };
  const log = new Logger(1, () => 0, "error", "text");
  const noop = () => {};
  const runtime = new NodeRuntime(
    { id: 1, voters: [1], heartbeatTicks: 1, electionTicks: 5, tickMs, rng: () => 0.5, snapshotEntries: 1_000_000, groupCommit: true },
    {
      clock,
      transport: { send: noop, sendSnapshot: async () => false },
      storage: {
        wal: { append: noop, setHardState: noop, resetLog: noop, sync: noop, compact: () => 0, sizeBytes: () => 0 },
        writeSnapshot: noop,
        writeSnapshotAsync: async () => {},
        openLatestSnapshot: async () => null,
      },
      recovered: { hardState: { term: 0, vote: NONE, commit: 0 }, entries: [], snapshot: null } as never,
      log,
      failStop: (reason) => {
        throw new Error(reason);
      },
    },
  );
  /** One tick: monotonic time moves on by tickMs, the timers fire, and what they deferred runs. */
  const tick = () => {
    mono += tickMs;
    for (const fn of timers) fn();
    drain();
  };
  return { runtime, clock, log, drain, tick, now: () => mono, advance: (ms: number) => (mono += ms) };
}
