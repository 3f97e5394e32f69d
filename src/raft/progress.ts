// What a leader knows of each follower's log, and the flow control of appends to it.

export type ProgressState = "probe" | "replicate" | "snapshot";

export interface Progress {
  match: number;
  next: number;
  state: ProgressState;
  /** Probe: one append sent and unanswered; wait for a reply or the next heartbeat. */
  probeSent: boolean;
  /** Replicate: each unacknowledged append, oldest first: the last index it carried and its entry bytes. */
  inflight: { last: number; bytes: number }[];
  /** The sum of their bytes. */
  bytesInFlight: number;
  /** Snapshot: the index of the snapshot being sent. */
  pendingSnapshot: number;
  /** Ticks spent in the current snapshot or without progress while behind. */
  stallTicks: number;
  /** Heard from this peer since the last check-quorum round. */
  recentActive: boolean;
  /** Highest ReadIndex heartbeat round this peer has echoed. */
  readRoundAcked: number;
}

export function newProgress(next: number): Progress {
  return {
    match: 0,
    next,
    state: "probe",
    probeSent: false,
    inflight: [],
    bytesInFlight: 0,
    pendingSnapshot: 0,
    stallTicks: 0,
    recentActive: true,
    readRoundAcked: 0,
  };
}

export function toProbe(pr: Progress, next: number): void {
  pr.state = "probe";
  pr.next = next;
  clearInflight(pr);
  pr.probeSent = false;
  pr.stallTicks = 0;
}

/** An append carrying entries up to `last`, `bytes` of them, is on its way. */
export function addInflight(pr: Progress, last: number, bytes: number): void {
  pr.inflight.push({ last, bytes });
  pr.bytesInFlight += bytes;
}

/** The follower holds everything up to `match`: the appends that carried it are no longer in flight. */
export function freeInflight(pr: Progress, match: number): void {
  let n = 0;
  while (n < pr.inflight.length && pr.inflight[n]!.last <= match) pr.bytesInFlight -= pr.inflight[n++]!.bytes;
  if (n > 0) pr.inflight.splice(0, n);
}

export function clearInflight(pr: Progress): void {
  pr.inflight = [];
  pr.bytesInFlight = 0;
}

/** Flow control of appends to one follower in replicate state. */
export interface InflightLimits {
  /** Appends in flight. */
  maxInflight: number;
  /**
   * Entry bytes in flight. It bounds the work of one turn too: a follower that comes back far behind
   * is sent this much at a time, not 64 appends of 1 MiB in one turn (measured: 14 of them took the
   * leader 150-300 ms to encode on a loaded 2-core machine, long enough to delay its heartbeats).
   */
  maxInflightBytes: number;
}

/** Whether no further append may be sent to this follower now. */
export function isPaused(pr: Progress, limits: InflightLimits): boolean {
  switch (pr.state) {
    case "probe":
      return pr.probeSent;
    case "replicate":
      return pr.inflight.length >= limits.maxInflight || pr.bytesInFlight >= limits.maxInflightBytes;
    case "snapshot":
      return true;
  }
}
