// The client-session table that makes retried writes exactly-once: the last sequence number and its
// result per client. Part of the replicated state (and of snapshots).

import type { ApplyResult } from "./types";

export const DEFAULT_SESSION_TTL_MS = 10 * 60 * 1000;

export interface Session {
  seq: number;
  lastSeen: number;
  result: ApplyResult;
}

export class SessionTable {
  /** Ordered by lastSeen (least recent first): a touched session is moved to the end. */
  sessions = new Map<string, Session>();
  /** Largest `now` seen in applied commands: the deterministic clock for session expiry. */
  clock = 0;

  constructor(readonly ttlMs: number) {}

  get size(): number {
    return this.sessions.size;
  }

  /** Advance the clock to `now` (never backwards) and forget sessions idle longer than the TTL. */
  advanceClock(now: number): void {
    if (now > this.clock) this.clock = now;
    for (const [clientId, session] of this.sessions) {
      if (session.lastSeen + this.ttlMs >= this.clock) break;
      this.sessions.delete(clientId);
    }
  }

  get(clientId: string): Session | undefined {
    return this.sessions.get(clientId);
  }

  touch(clientId: string, session: Session): void {
    session.lastSeen = this.clock;
    this.sessions.delete(clientId);
    this.sessions.set(clientId, session);
  }

  record(clientId: string, seq: number, result: ApplyResult): void {
    this.sessions.delete(clientId);
    this.sessions.set(clientId, { seq, lastSeen: this.clock, result });
  }

  load(sessions: Map<string, Session>, clock: number): void {
    this.sessions = sessions;
    this.clock = clock;
  }
}
