// Watches: served by any node from its own applied state. A watch replays the node's bounded history
// from the revision asked for, one frame per revision, then streams live events as they are applied.

import type { KvStore } from "../kv/store";
import { keyMatcher } from "../kv/store";
import type { KeySelector, WatchEvent } from "../kv/types";
import type { ClientConn } from "./clients";

interface Watcher {
  conn: ClientConn;
  id: number;
  matches: (key: Uint8Array) => boolean;
  /** First revision wanted: a lagging node may still apply older ones after the watch starts. */
  from: number;
  /** Send each event's previous value (prevValue); without it, it is left out. */
  prevKv: boolean;
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

  /** Starts a watch; returns "ok", or the error code the watch ended with at once. */
  start(conn: ClientConn, id: number, selector: KeySelector, fromRevision: number, prevKv = false): "ok" | "COMPACTED" {
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
      if (!send(conn, { k: "ev", id, revision: rev, events: shaped(group, prevKv) })) return "ok";
    }
    this.watchers.add({ conn, id, matches, from: fromRevision, prevKv });
    return "ok";
  }

  /** The connection closed: forget its watches. */
  dropConn(conn: ClientConn): void {
    for (const w of this.watchers) if (w.conn === conn) this.watchers.delete(w);
  }

  /** The changes a snapshot skipped over are not in this node's history: watchers resume elsewhere. */
  endAfterSnapshot(): void {
    for (const w of this.watchers) this.end(w, "COMPACTED", "this node installed a snapshot; resume the watch on another node");
  }

  private publish(events: readonly WatchEvent[], revision: number): void {
    if (!this.watchers.size) return;
    for (const w of this.watchers) {
      if (revision < w.from) continue;
      const mine = events.filter((e) => w.matches(e.key));
      if (mine.length && !send(w.conn, { k: "ev", id: w.id, revision, events: shaped(mine, w.prevKv) })) {
        this.end(w, "WATCHER_TOO_SLOW", "the watcher fell too far behind; resume from its last revision");
      }
    }
  }

  private end(w: Watcher, code: string, message: string): void {
    this.watchers.delete(w);
    send(w.conn, { k: "ev", id: w.id, error: { code, message } });
    w.conn.close();
  }
}

function send(conn: ClientConn, frame: unknown): boolean {
  return !conn.closed && conn.send(frame);
}
