// `raftkv snapshot save` on the server: capture the state machine at a point the leader confirmed, hold
// its encoding, and hand it out in chunks the client pulls one request at a time (so the client's reading
// speed paces the transfer: nothing piles up in the connection's send queue).
//
// Consistency: the save starts like a linearizable read (ReadIndex: the leader confirms it still leads
// and waits until it has applied everything committed when the request arrived), then captures the state
// at once, or as soon as the node's own snapshot has finished encoding (KvStore.snapshotAsync freezes the
// state when called). The bytes are therefore the state at one revision, and it includes every write
// acknowledged before the save was asked for.

import { createHash } from "node:crypto";
import { SNAPSHOT_SLICE_BYTES, type KvStore } from "../kv/store";
import type { SnapshotSaveHeader } from "../protocol";
import { MAX_SNAPSHOT_SAVES, SNAPSHOT_SAVE_CHUNK_BYTES, SNAPSHOT_SAVE_IDLE_TIMEOUT_MS } from "./limits";

/** How often a save that finds another snapshot being encoded tries again. */
const ENCODER_BUSY_RETRY_MS = 10;

interface Save {
  conn: object;
  data: Uint8Array;
  lastUsed: number;
}

export interface SaveSource {
  readonly kv: KvStore;
  /** The term of the log entry at `index` (for the snapshot's metadata). */
  termAt(index: number): number;
  readonly id: number;
}

export class SnapshotSaves {
  private readonly saves = new Map<number, Save>();
  /** Saves being encoded (they count toward MAX_SNAPSHOT_SAVES). */
  private encoding = 0;
  private nextSave = 1;

  constructor(
    private readonly source: SaveSource,
    /** Monotonic milliseconds. */
    private readonly now: () => number,
  ) {}

  /** Saves held or being encoded. */
  get count(): number {
    return this.saves.size + this.encoding;
  }

  /** Why a new save must be refused now, or null. */
  refusal(): string | null {
    this.expire();
    if (this.count < MAX_SNAPSHOT_SAVES) return null;
    return `node ${this.source.id} is already serving ${MAX_SNAPSHOT_SAVES} snapshot save(s) (the limit); retry when it has finished`;
  }

  /**
   * Capture the state now (call only once the read is confirmed and applied), encode and hash it.
   * Resolves with the header to send; the encoding is held for `conn` until it has pulled the last chunk,
   * closes, or goes idle.
   */
  async begin(conn: object): Promise<SnapshotSaveHeader> {
    this.encoding++;
    try {
      const kv = this.source.kv;
      let data: Uint8Array | null = null;
      let at = { revision: 0, index: 0, keys: 0 };
      while (data === null) {
        // One snapshot encodes at a time (the node's own periodic one may be running): the state is
        // captured in the same turn as these reads, so they describe exactly the bytes.
        at = { revision: kv.revision, index: kv.appliedIndex, keys: kv.stats().keys };
        if (kv.encodingSnapshot) {
          await Bun.sleep(ENCODER_BUSY_RETRY_MS);
          continue;
        }
        data = await kv.snapshotAsync();
      }
      const hash = createHash("sha256");
      // Hashed in the slices it was encoded in, a turn each (12 MB of 2 KB values encoded in one turn
      // blocked a loaded node for 0.8 s, and its followers elected a new leader).
      for (let off = 0; off < data.length; off += SNAPSHOT_SLICE_BYTES) {
        hash.update(data.subarray(off, off + SNAPSHOT_SLICE_BYTES));
        await new Promise<void>((r) => setImmediate(r));
      }
      const save = this.nextSave++;
      this.saves.set(save, { conn, data, lastUsed: this.now() });
      return {
        save,
        node: this.source.id,
        revision: at.revision,
        index: at.index,
        term: this.source.termAt(at.index),
        keys: at.keys,
        size: data.length,
        sha256: hash.digest("hex"),
        chunkBytes: SNAPSHOT_SAVE_CHUNK_BYTES,
      };
    } finally {
      this.encoding--;
    }
  }

  /** The chunk of save `id` at `offset`; throws (a BAD_REQUEST for this request) for anything else. */
  chunk(conn: object, id: unknown, offset: unknown): Uint8Array {
    this.expire();
    const s = typeof id === "number" ? this.saves.get(id) : undefined;
    if (!s || s.conn !== conn) {
      throw new Error(`no snapshot save ${JSON.stringify(id)} on this connection (finished, idle over ${SNAPSHOT_SAVE_IDLE_TIMEOUT_MS} ms, or started on another connection); start again`);
    }
    if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0 || offset >= s.data.length || offset % SNAPSHOT_SAVE_CHUNK_BYTES !== 0) {
      throw new Error(`snapshot chunk offset must be a multiple of ${SNAPSHOT_SAVE_CHUNK_BYTES} below ${s.data.length}, got ${JSON.stringify(offset)}`);
    }
    s.lastUsed = this.now();
    const end = Math.min(s.data.length, offset + SNAPSHOT_SAVE_CHUNK_BYTES);
    // Replies on a connection go out in request order, so once the last chunk is asked for every
    // earlier one has been answered: the save is done.
    if (end === s.data.length) this.saves.delete(id as number);
    return s.data.subarray(offset, end);
  }

  /** The connection closed: drop its saves. */
  dropConn(conn: object): void {
    for (const [id, s] of this.saves) if (s.conn === conn) this.saves.delete(id);
  }

  /** Drop saves idle longer than SNAPSHOT_SAVE_IDLE_TIMEOUT_MS. */
  expire(): void {
    const now = this.now();
    for (const [id, s] of this.saves) if (now - s.lastUsed >= SNAPSHOT_SAVE_IDLE_TIMEOUT_MS) this.saves.delete(id);
  }
}
