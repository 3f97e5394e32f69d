// Incoming snapshot transfers: a leader streams its snapshot to a follower in chunks on a connection of
// its own; the follower reassembles it here and hands the whole snapshot to its core.
//
// Memory is bounded: chunks are accepted only from configured peers, at most one transfer per peer is
// kept (a new one from the same peer replaces it), a transfer announcing more than
// MAX_SNAPSHOT_TRANSFER_BYTES is refused, and a transfer is dropped when its connection closes or when no
// chunk of it has arrived for SNAPSHOT_TRANSFER_IDLE_TIMEOUT_MS.
//
// Each chunk is copied once, into a buffer of the announced size allocated with the first chunk, so the
// last chunk completes the snapshot without a 300 MB copy of the parts; the bytes are checked against
// the sender's crc32 as they arrive.

import type { SnapChunkFrame } from "../protocol";
import { crc32 } from "../storage/util";
import { MAX_SNAPSHOT_TRANSFER_BYTES, SNAPSHOT_TRANSFER_IDLE_TIMEOUT_MS } from "./limits";

/** A snapshot whose last chunk has arrived. */
export interface ReceivedSnapshot {
  from: number;
  /** The sender's term when it sent the snapshot. */
  term: number;
  snapshot: { index: number; term: number; data: Uint8Array };
  /** Milliseconds from the first chunk to the last. */
  ms: number;
}

interface Transfer {
  conn: object;
  index: number;
  snapTerm: number;
  term: number;
  data: Uint8Array;
  received: number;
  total: number;
  /** The sender's crc32 of the whole, and ours of what arrived so far. */
  crc: number;
  running: number;
  startedAt: number;
  lastChunkAt: number;
}

export interface SnapshotReceiverOptions {
  /** This node's id. */
  self: number;
  /** Ids of the configured peers (chunks from anyone else are refused). */
  peers: readonly number[];
  /** Monotonic milliseconds. */
  now: () => number;
  /** Why a transfer was dropped. */
  onDrop: (from: number, reason: string) => void;
  idleTimeoutMs?: number;
}

export class SnapshotReceiver {
  private readonly transfers = new Map<number, Transfer>();
  private readonly idleTimeoutMs: number;

  constructor(private readonly opts: SnapshotReceiverOptions) {
    this.idleTimeoutMs = opts.idleTimeoutMs ?? SNAPSHOT_TRANSFER_IDLE_TIMEOUT_MS;
  }

  /** Transfers in progress (at most one per peer). */
  get inProgress(): number {
    return this.transfers.size;
  }

  /** Bytes held by transfers in progress. */
  get bufferedBytes(): number {
    let n = 0;
    for (const t of this.transfers.values()) n += t.received;
    return n;
  }

  /**
   * One chunk that arrived on `conn`. Returns the whole snapshot once its last chunk is in, else null.
   * Throws (the caller closes the connection and logs why) for a malformed chunk or one whose sender
   * is not a configured peer.
   */
  receive(conn: object, f: SnapChunkFrame): ReceivedSnapshot | null {
    if (
      !Number.isSafeInteger(f.from) ||
      !Number.isSafeInteger(f.term) ||
      !Number.isSafeInteger(f.index) ||
      !Number.isSafeInteger(f.snapTerm) ||
      !Number.isSafeInteger(f.offset) ||
      !Number.isSafeInteger(f.total) ||
      !Number.isSafeInteger(f.crc) ||
      f.crc < 0 ||
      f.crc > 0xffff_ffff ||
      f.offset < 0 ||
      f.total < 0 ||
      !(f.data instanceof Uint8Array)
    ) {
      throw new Error("malformed snapshot chunk");
    }
    if (f.from === this.opts.self || !this.opts.peers.includes(f.from)) {
      throw new Error(`snapshot chunk from ${f.from}, which is not a peer of node ${this.opts.self}`);
    }
    let t = this.transfers.get(f.from);
    if (f.offset === 0) {
      if (t) this.drop(f.from, "a new transfer from the same peer started");
      if (f.total > MAX_SNAPSHOT_TRANSFER_BYTES) {
        throw new Error(`snapshot of ${f.total} bytes from node ${f.from} is over the ${MAX_SNAPSHOT_TRANSFER_BYTES}-byte limit on a snapshot transfer`);
      }
      const now = this.opts.now();
      t = { conn, index: f.index, snapTerm: f.snapTerm, term: f.term, data: new Uint8Array(f.total), received: 0, total: f.total, crc: f.crc, running: 0, startedAt: now, lastChunkAt: now };
      this.transfers.set(f.from, t);
    }
    // The rest of a transfer already dropped, or a stray chunk on another connection (a transfer
    // restarted by the leader begins at offset 0 on a new connection).
    if (!t || t.conn !== conn) return null;
    if (t.index !== f.index || t.crc !== f.crc || t.received !== f.offset || f.offset + f.data.length > t.total) {
      this.drop(f.from, `chunk out of order (offset ${f.offset} of snapshot ${f.index}, expected ${t.received} of ${t.index})`);
      return null;
    }
    t.data.set(f.data, f.offset);
    t.running = crc32(f.data, t.running);
    t.received += f.data.length;
    t.term = f.term;
    t.lastChunkAt = this.opts.now();
    if (t.received < t.total) return null;
    if (t.running !== t.crc) {
      this.drop(f.from, `crc mismatch: the sender said ${t.crc}, the bytes received have ${t.running}`);
      return null;
    }
    this.transfers.delete(f.from);
    return { from: f.from, term: t.term, snapshot: { index: t.index, term: t.snapTerm, data: t.data }, ms: t.lastChunkAt - t.startedAt };
  }

  /** The connection closed: drop the transfers that came on it. */
  connectionClosed(conn: object): void {
    for (const [from, t] of this.transfers) if (t.conn === conn) this.drop(from, "its connection closed");
  }

  /** Drops transfers that have had no chunk for the idle timeout; call it periodically. */
  expire(): void {
    const now = this.opts.now();
    for (const [from, t] of this.transfers) {
      if (now - t.lastChunkAt >= this.idleTimeoutMs) this.drop(from, `no chunk for ${this.idleTimeoutMs} ms`);
    }
  }

  private drop(from: number, reason: string): void {
    const t = this.transfers.get(from);
    if (!t) return;
    this.transfers.delete(from);
    this.opts.onDrop(from, `${reason}; ${t.received} of ${t.total} bytes received`);
  }
}
