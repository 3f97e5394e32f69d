// What a leader knows of each follower's log, and the flow control of appends to it.

export type ProgressState = "probe" | "replicate" | "snapshot";

export interface Progress {
  match: number;
  next: number;
  state: ProgressState;
  /** Probe: one append sent and unanswered; wait for a reply or the next heartbeat. */
  probeSent: boolean;
  /** Replicate: last index carried by each unacknowledged append, oldest first. */
  inflight: number[];
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
    pendingSnapshot: 0,
    stallTicks: 0,
    recentActive: true,
    readRoundAcked: 0,
  };
}

export function toProbe(pr: Progress, next: number): void {
  pr.state = "probe";
  pr.next = next;
  pr.inflight = [];
  pr.probeSent = false;
  pr.stallTicks = 0;
}

/** Whether no further append may be sent to this follower now. */
export function isPaused(pr: Progress, maxInflight: number): boolean {
  switch (pr.state) {
    case "probe":
      return pr.probeSent;
    case "replicate":
      return pr.inflight.length >= maxInflight;
    case "snapshot":
      return true;
  }
}
