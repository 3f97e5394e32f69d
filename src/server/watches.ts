// Watches: served by any node from its own applied state. A watch replays the node's bounded history
// from the revision asked for, one frame per revision, then streams live events as they are applied.

import { MAX_RESULT_BYTES, RESULT_KEY_OVERHEAD_BYTES } from "../kv/codec";
import type { KvStore } from "../kv/store";
import { keyMatcher } from "../kv/store";
import type { KeySelector, WatchEvent } from "../kv/types";
import { FrameTooLargeError } from "../net";
import type { ClientConn } from "./clients";
import { MAX_WATCHES_PER_CONNECTION, MAX_WATCHES_TOTAL } from "./limits";

interface Watcher {
  conn: ClientConn;
  id: number;
  matches: (key: Uint8Array) => boolean;
  /** First revision wanted: a lagging node may still apply older ones after the watch starts. */
  from: number;
  /** Send each event's previous value (prevValue); without it, it is left out. */
  prevKv: boolean;
}

/**
 * The frames of one revision's events: at most MAX_RESULT_BYTES of keys and values each, so a large
 * transaction or prefix delete never makes a frame over the frame limit. All but the last say `more`;
 * the client delivers the revision once its last frame is in.
 */
function frames(id: number, revision: number, events: readonly WatchEvent[]): unknown[] {
  const out: unknown[] = [];
  let part: WatchEvent[] = [];
  let bytes = 0;
  for (const e of events) {
    const size = e.key.length + (e.value?.length ?? 0) + (e.prevValue?.length ?? 0) + RESULT_KEY_OVERHEAD_BYTES;
    if (part.length > 0 && bytes + size > MAX_RESULT_BYTES) {
      out.push({ k: "ev", id, revision, events: part, more: true });
      part = [];
      bytes = 0;
    }
    part.push(e);
    bytes += size;
  }
  out.push({ k: "ev", id, revision, events: part });
  return out;
}

/** The events as a watcher asked for them: without prevValue unless it asked for the previous values. */
function shaped(events: readonly WatchEvent[], prevKv: boolean): readonly WatchEvent[] {
  if (prevKv) return events;
  return events.map((e) => {
    if (e.prevValue === undefined) return e;
    const { prevValue: _omitted, ...rest } = e;
    return rest;
  });
}

export class Watches {
  private readonly watchers = new Set<Watcher>();
  /** Open watches per connection (absent: none). */
  private readonly perConn = new Map<ClientConn, number>();

  /** Watches being served. */
  get count(): number {
    return this.watchers.size;
  }

  constructor(
    private readonly kv: KvStore,
    private readonly nodeId: number,
  ) {
    kv.onEvents((events, revision) => this.publish(events, revision));
  }

  /** Starts a watch; returns "ok", or the error code the watch was refused or ended with at once. */
  start(conn: ClientConn, id: number, selector: KeySelector, fromRevision: number, prevKv = false): "ok" | "TOO_MANY_WATCHES" | "COMPACTED" | "EVENTS_TOO_LARGE" {
    const mine = this.perConn.get(conn) ?? 0;
    const refusal =
      mine >= MAX_WATCHES_PER_CONNECTION
        ? `${MAX_WATCHES_PER_CONNECTION} watches on this connection`
        : this.watchers.size >= MAX_WATCHES_TOTAL
          ? `${MAX_WATCHES_TOTAL} watches in total`
          : null;
    if (refusal) {
      const message = `node ${this.nodeId} already holds ${refusal}, its limit; close watches you no longer need, or watch a prefix instead of many keys`;
      send(conn, { k: "res", id, ok: false, code: "TOO_MANY_WATCHES", message });
      return "TOO_MANY_WATCHES";
    }
    const matches = keyMatcher(selector);
    const backlog = fromRevision > 0 ? this.kv.eventsSince(fromRevision, selector) : [];
    if (backlog === "compacted") {
      send(conn, { k: "ev", id, error: { code: "COMPACTED", message: `revision ${fromRevision} is compacted on node ${this.nodeId} (oldest kept: ${this.kv.compactRevision})` } });
      return "COMPACTED";
    }
    if (!conn.closed) conn.send({ k: "res", id, ok: true, result: { watching: true, revision: this.kv.revision } });
    // Replay history one revision per frame, then go live: nothing can be applied in between.
    let i = 0;
    while (i < backlog.length) {
      const rev = backlog[i]!.modRevision;
      const group: WatchEvent[] = [];
      while (i < backlog.length && backlog[i]!.modRevision === rev) group.push(backlog[i++]!);
      for (const frame of frames(id, rev, shaped(group, prevKv))) {
        const sent = trySend(conn, frame);
        if (sent === false) return "ok";
        if (sent !== true) {
          send(conn, { k: "ev", id, error: sent });
          return sent.code;
        }
      }
    }
    this.watchers.add({ conn, id, matches, from: fromRevision, prevKv });
    this.perConn.set(conn, mine + 1);
    return "ok";
  }

  /** The connection closed: forget its watches. */
  dropConn(conn: ClientConn): void {
    if (!this.perConn.delete(conn)) return;
    for (const w of this.watchers) if (w.conn === conn) this.watchers.delete(w);
  }

  /** The changes a snapshot skipped over are not in this node's history: watchers resume elsewhere. */
  endAfterSnapshot(): void {
    for (const w of this.watchers) this.end(w, { code: "COMPACTED", message: "this node installed a snapshot; resume the watch on another node" });
  }

  private publish(events: readonly WatchEvent[], revision: number): void {
    if (!this.watchers.size) return;
    for (const w of this.watchers) {
      if (revision < w.from) continue;
      const mine = events.filter((e) => w.matches(e.key));
      if (!mine.length) continue;
      for (const frame of frames(w.id, revision, shaped(mine, w.prevKv))) {
        const sent = trySend(w.conn, frame);
        if (sent !== true) {
          this.end(w, sent || { code: "WATCHER_TOO_SLOW", message: "the watcher fell too far behind; resume from its last revision" });
          break;
        }
      }
    }
  }

  private end(w: Watcher, error: { code: string; message: string }): void {
    this.dropConn(w.conn); // the connection is closed below: its other watches go with it
    send(w.conn, { k: "ev", id: w.id, error });
    w.conn.close();
  }
}

function send(conn: ClientConn, frame: unknown): boolean {
  return !conn.closed && conn.send(frame);
}

/**
 * Sends one event frame: true when sent; false when the connection is closed or its queue full; the
 * error to end the watch with when the events of one revision do not fit in a frame (this runs inside
 * the state machine's apply: it must not throw).
 */
function trySend(conn: ClientConn, frame: unknown): boolean | { code: "EVENTS_TOO_LARGE"; message: string } {
  try {
    return send(conn, frame);
  } catch (err) {
    const message = err instanceof FrameTooLargeError ? `the events of one revision are ${err.payloadBytes} bytes, over the ${err.maxFrameBytes}-byte frame limit` : `cannot send the events: ${(err as Error).message}`;
    return { code: "EVENTS_TOO_LARGE", message };
  }
}
