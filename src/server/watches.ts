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
}

export class Watches {
  private readonly watchers = new Set<Watcher>();

  constructor(
    private readonly kv: KvStore,
    private readonly nodeId: number,
  ) {
    kv.onEvents((events, revision) => this.publish(events, revision));
  }

  start(conn: ClientConn, id: number, selector: KeySelector, fromRevision: number): void {
    const matches = keyMatcher(selector);
    const backlog = fromRevision > 0 ? this.kv.eventsSince(fromRevision, selector) : [];
    if (backlog === "compacted") {
      send(conn, { k: "ev", id, error: { code: "COMPACTED", message: `revision ${fromRevision} is compacted on node ${this.nodeId} (oldest kept: ${this.kv.compactRevision})` } });
      return;
    }
    if (!conn.closed) conn.send({ k: "res", id, ok: true, result: { watching: true, revision: this.kv.revision } });
    // Replay history one revision per frame, then go live: nothing can be applied in between.
    let i = 0;
    while (i < backlog.length) {
      const rev = backlog[i]!.modRevision;
      const group: WatchEvent[] = [];
      while (i < backlog.length && backlog[i]!.modRevision === rev) group.push(backlog[i++]!);
      if (!send(conn, { k: "ev", id, revision: rev, events: group })) return;
    }
    this.watchers.add({ conn, id, matches, from: fromRevision });
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
      if (mine.length && !send(w.conn, { k: "ev", id: w.id, revision, events: mine })) {
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
