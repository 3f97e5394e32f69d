// The client-session table that makes retried writes exactly-once (Raft thesis, 6.3): the last
// sequence number and its result per session. Part of the replicated state (and of snapshots).
//
// - A session is registered through the log; its id is the index of the log entry that registered it,
//   so ids are unique cluster-wide forever and a client process that restarts never reuses an old one.
// - Time is the log's own: the largest `now` stamped into an applied command by a leader. The TTL is a
//   replicated setting changed through the log. So every node expires the same sessions at the same
//   point of the log, whatever its own clock or flags say.
// - A request for a session that is not registered (or has expired) is refused with SESSION_EXPIRED,
//   never executed: it may be a retry of a write that was applied before the session expired.

import type { ApplyResult } from "./types";

/** The session TTL until one is set through the log (`sessionTtl` command). */
export const DEFAULT_SESSION_TTL_MS = 10 * 60 * 1000;
/** Shortest and longest session TTL that may be set. */
export const MIN_SESSION_TTL_MS = 1000;
export const MAX_SESSION_TTL_MS = 7 * 24 * 3600 * 1000;

export interface Session {
  /** Last sequence number applied (0: registered, nothing applied yet). */
  seq: number;
  lastSeen: number;
  /** Result of `seq`; null until the first request is applied. */
  result: ApplyResult | null;
}

export class SessionTable {
  /** Ordered by lastSeen (least recent first): a touched session is moved to the end. */
  sessions = new Map<string, Session>();
  /** Largest `now` seen in applied commands: the deterministic clock for session expiry. */
  clock = 0;
  ttlMs = DEFAULT_SESSION_TTL_MS;

  get size(): number {
    return this.sessions.size;
  }

  /** Advance the clock to `now` (never backwards) and forget sessions idle longer than the TTL. */
  advanceClock(now: number): void {
    if (now > this.clock) this.clock = now;
    this.expire();
  }

  private expire(): void {
    for (const [clientId, session] of this.sessions) {
      if (session.lastSeen + this.ttlMs >= this.clock) break;
      this.sessions.delete(clientId);
    }
  }

  setTtl(ttlMs: number): void {
    this.ttlMs = ttlMs;
    this.expire();
  }

  get(clientId: string): Session | undefined {
    return this.sessions.get(clientId);
  }

  /** A new session named `id` (the index of the registering log entry). */
  register(id: string): void {
    this.sessions.set(id, { seq: 0, lastSeen: this.clock, result: null });
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

  load(sessions: Map<string, Session>, clock: number, ttlMs: number): void {
    this.sessions = sessions;
    this.clock = clock;
    this.ttlMs = ttlMs;
  }
}
