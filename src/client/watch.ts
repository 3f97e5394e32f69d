// A watch as an async iterator. It holds its own connection to one node; when that node dies it
// reconnects to another and resumes from the revision after the last one it delivered, so no event is
// missed or repeated. Events of one revision (a transaction) always arrive together.

import { parseEndpoint } from "../config";
import type { KeySelector, WatchEvent } from "../kv/types";
import { dialFrames, TlsError, type FramedConn, type TlsMaterial } from "../net";
import type { EventFrame } from "../protocol";
import { RaftKvError } from "./errors";

export interface WatchOptions {
  /** Replay changes from this revision on (they must still be in the node's bounded history). */
  fromRevision?: number;
  /** Events carry the value the key had before the change (prevValue). */
  prevKv?: boolean;
}


export class Watch implements AsyncIterable<WatchEvent> {
  /** The revision of the last event delivered (0 before the first). */
  lastRevision = 0;
  private nextFrom: number;
  private queue: WatchEvent[] = [];
  private waiter: (() => void) | null = null;
  private failure: Error | null = null;
  private closed = false;
  private conn: FramedConn | null = null;
  private rr: number;
  private readonly prevKv: boolean;

  constructor(
    private readonly endpoints: string[],
    private readonly selector: KeySelector,
    opts: WatchOptions = {},
    private readonly tls?: TlsMaterial,
  ) {
    this.nextFrom = opts.fromRevision ?? 0;
    this.prevKv = opts.prevKv === true;
    this.rr = 0; // the first endpoint first, like every other request
    void this.run();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private async run(): Promise<void> {
    let backoff = 50;
    let compacted = 0; // nodes in a row that no longer have our next revision
    while (!this.closed) {
      const addr = this.endpoints[this.rr++ % this.endpoints.length]!;
      const before = this.lastRevision;
      try {
        await this.session(addr);
        backoff = 50;
      } catch (err) {
        if (!(err instanceof RaftKvError)) throw err;
        if (this.lastRevision > before) compacted = 0;
        // A node that skipped history (installed a snapshot) or found us too slow: resume on another.
        // Only when every node has compacted past our revision is the watch lost.
        const retry = err.code === "WATCHER_TOO_SLOW" || (err.code === "COMPACTED" && ++compacted < this.endpoints.length);
        if (!retry) {
          this.failure = err;
          this.wake();
          return;
        }
      }
      if (this.closed) return;
      await Bun.sleep(backoff);
      backoff = Math.min(backoff * 2, 1000);
    }
  }

  /** One connection's worth of watching; resolves when the connection ends. */
  private session(addr: string): Promise<void> {
    const { host, port } = parseEndpoint(addr);
    // The frames of a revision too large for one; delivered together once its last frame is in.
    let partial: WatchEvent[] = [];
    return new Promise<void>((resolve, reject) => {
      dialFrames(host, port, {
        onFrame: (_c, value) => {
          const f = value as EventFrame | { k: "res"; ok: boolean; code?: string; message?: string; result?: { revision: number } };
          if (f.k === "res" && f.ok && this.nextFrom === 0 && f.result) {
            // Watching from "now": pin it, so a reconnect resumes exactly here.
            this.nextFrom = f.result.revision + 1;
          }
          if (f.k === "res" && !f.ok) {
            reject(new RaftKvError(f.code ?? "WATCH_FAILED", f.message ?? "watch refused"));
            this.conn?.close();
            return;
          }
          if (f.k !== "ev") return;
          if (f.error) {
            reject(new RaftKvError(f.error.code, f.error.message));
            this.conn?.close();
            return;
          }
          if (!f.events?.length || f.revision === undefined) return;
          // Already delivered before a reconnect, or older than asked for (a lagging node applying it now).
          if (f.revision <= this.lastRevision || f.revision < this.nextFrom) return;
          if (f.more) {
            partial.push(...f.events);
            return;
          }
          this.queue.push(...partial, ...f.events);
          partial = [];
          this.lastRevision = f.revision;
          this.nextFrom = f.revision + 1;
          this.wake();
        },
        onError: (_c, err) => {
          if (err instanceof TlsError) reject(new RaftKvError("TLS", err.message));
        },
        onClose: () => resolve(),
        tls: this.tls,
      }).then(
        (conn) => {
          this.conn = conn;
          if (this.closed) return conn.close();
          conn.send({ k: "req", id: 1, op: "watch", selector: this.selector, fromRevision: this.nextFrom, ...(this.prevKv ? { prevKv: true } : {}) });
        },
        (err: Error) => (err instanceof TlsError ? reject(new RaftKvError("TLS", err.message)) : resolve()),
      );
    });
  }

  async *[Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    while (true) {
      while (this.queue.length) yield this.queue.shift()!;
      if (this.failure) throw this.failure;
      if (this.closed) return;
      await new Promise<void>((r) => (this.waiter = r));
    }
  }

  close(): void {
    this.closed = true;
    this.conn?.close();
    this.wake();
  }
}
