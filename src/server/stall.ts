// The event loop's health: a timer that should fire every `intervalMs` notes how late it ran. A late
// timer means the JS thread was busy (a long synchronous task, a garbage collection, a swapped-out
// process): heartbeats and votes were late by as much, and past an election timeout followers elect
// someone else. Each stall over the threshold is logged with its length and counted, so an operator
// (and bench/snapshot-transfer.ts) can tell a busy node from a lost network.

export interface StallWatchOptions {
  /** How often the watch expects to run, in ms. */
  intervalMs: number;
  /** Report a turn that came this many ms later than expected. */
  thresholdMs: number;
  /** Told of every stall over the threshold: how long the loop was blocked beyond the interval. */
  onStall: (lateMs: number) => void;
}

export class StallWatch {
  private last: number | null = null;
  /** The longest stall seen, in ms. */
  maxLateMs = 0;

  constructor(private readonly opts: StallWatchOptions) {}

  /** Called by the timer with the monotonic time now. Returns how late this turn ran, in ms. */
  check(now: number): number {
    const late = this.last === null ? 0 : Math.max(0, now - this.last - this.opts.intervalMs);
    this.last = now;
    if (late >= this.opts.thresholdMs) {
      this.maxLateMs = Math.max(this.maxLateMs, late);
      this.opts.onStall(late);
    }
    return late;
  }

  /** Start checking on a real timer; returns the stop function. */
  start(now: () => number = () => performance.now()): () => void {
    this.last = now();
    const t = setInterval(() => this.check(now()), this.opts.intervalMs);
    return () => clearInterval(t);
  }
}
