// The key-value state machine: a pure, deterministic function of the commands applied to it.
// No clocks, no randomness, no I/O: time arrives inside commands (stamped by the proposing leader).
//
// KvStore is a thin facade over the parts, laid out as etcd separates them:
//   mvcc.ts      keys, revisions, ranges and the watch history
//   leases.ts    TTL leases and the keys attached to them
//   sessions.ts  the client-session table (exactly-once retries)
//   apply.ts     what each command does to the above
// and owns what spans all of them: the applied index, snapshots, invariants.

import { ByteReader, ByteWriter } from "./binary";
import { MAX_KEY_BYTES, MAX_VALUE_BYTES, cborDecode, cborEncode, decodeLogCommand, parseCommand, parseMeta, parseRangeRequest } from "./codec";
import { copyBytes } from "./bytes";
import { KvError } from "./errors";
import { Applier, failWith } from "./apply";
import { LeaseTable, type Lease } from "./leases";
import { DEFAULT_HISTORY_MAX_BYTES, DEFAULT_HISTORY_MAX_EVENTS, ENTRY_OVERHEAD_BYTES, Mvcc, type Entry } from "./mvcc";
import { DEFAULT_SESSION_TTL_MS, SessionTable, type Session } from "./sessions";
import type {
  ApplyMeta,
  ApplyResult,
  Command,
  EventListener,
  KeyValue,
  KvStats,
  KvStoreOptions,
  LeaseInfo,
  LogCommand,
  RangeRequest,
  RangeResult,
  WatchEvent,
  WatchFilter,
} from "./types";

export { keyMatcher, DEFAULT_HISTORY_MAX_BYTES, DEFAULT_HISTORY_MAX_EVENTS } from "./mvcc";
export { DEFAULT_SESSION_TTL_MS } from "./sessions";

const SNAPSHOT_MAGIC = "raftkv-kv-snapshot";
/** 3: the session TTL in the head, sessions registered with no result yet. 2 is still read. */
const SNAPSHOT_FORMAT = 3;
const LEASE_FIELDS = 3; // id, ttlMs, expiresAt
const SESSION_FIELDS = 4; // clientId, seq, lastSeen, result

function badSnapshot(problem: string): never {
  throw new KvError("BAD_SNAPSHOT", `invalid snapshot: ${problem}`);
}

function isCount(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

function isTime(x: unknown): x is number {
  return typeof x === "number" && Number.isFinite(x) && x >= 0;
}

/** Deep copy of decoded plain data with every byte string turned into a fresh plain Uint8Array. */
function plainCopy(x: unknown): unknown {
  if (x instanceof Uint8Array) return copyBytes(x);
  if (Array.isArray(x)) return x.map(plainCopy);
  if (typeof x === "object" && x !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(x)) out[k] = plainCopy(v);
    return out;
  }
  return x;
}

/**
 * Bytes of keys and values snapshotAsync encodes per turn of the event loop (measured: slices of 20,000
 * keys of 250 bytes, 5 MB, stopped a leader holding a million keys for 150-320 ms each).
 */
export const SNAPSHOT_SLICE_BYTES = 1024 * 1024;

export class KvStore {
  readonly historyMaxEvents: number;
  readonly historyMaxBytes: number;

  private lastApplied = 0;
  private readonly leases = new LeaseTable();
  private readonly sessions: SessionTable;
  private readonly mvcc: Mvcc;
  private readonly applier: Applier;

  constructor(options: KvStoreOptions = {}) {
    this.historyMaxEvents = options.historyMaxEvents ?? DEFAULT_HISTORY_MAX_EVENTS;
    this.historyMaxBytes = options.historyMaxBytes ?? DEFAULT_HISTORY_MAX_BYTES;
    if (!(this.historyMaxEvents >= 0)) throw new RangeError("historyMaxEvents must be >= 0");
    if (!(this.historyMaxBytes >= 0)) throw new RangeError("historyMaxBytes must be >= 0");
    this.sessions = new SessionTable();
    this.mvcc = new Mvcc(this.leases, this.historyMaxEvents, this.historyMaxBytes);
    this.applier = new Applier(this.mvcc, this.leases, this.sessions);
  }

  /** A new store holding the state of `snapshot()` bytes. Throws KvError 'BAD_SNAPSHOT'. */
  static restore(bytes: Uint8Array, options?: KvStoreOptions): KvStore {
    const store = new KvStore(options);
    store.load(bytes);
    return store;
  }

  /** Latest revision: bumped once by every applied command that changed at least one key. */
  get revision(): number {
    return this.mvcc.revision;
  }

  /** Index of the last log entry applied (or skipped as a no-op). */
  get appliedIndex(): number {
    return this.lastApplied;
  }

  /** Oldest revision whose events are all still in the watch history. */
  get compactRevision(): number {
    return this.mvcc.compactRevision;
  }

  // ---- applying -------------------------------------------------------------------------------

  /**
   * Apply the command of log entry `index`. Returns null (and does nothing) when index <= appliedIndex.
   * Never throws for a bad command or meta: the error comes back as an `ok: false` result.
   * With meta.clientId/seq: a repeated seq returns the cached result without applying again, an older
   * seq gets 'STALE_SEQUENCE'.
   */
  apply(index: number, cmd: Command, meta?: ApplyMeta): ApplyResult | null {
    if (!this.advanceIndex(index)) return null;
    let parsedCmd: Command;
    let parsedMeta: ApplyMeta | undefined;
    try {
      parsedCmd = parseCommand(cmd);
      if (meta !== undefined) parsedMeta = parseMeta(meta as unknown as Record<string, unknown>);
    } catch (error) {
      return failWith(error);
    }
    return this.applier.apply(index, parsedCmd, parsedMeta);
  }

  /**
   * Decode an encoded LogCommand (encodeLogCommand) and apply it. Returns null when index <=
   * appliedIndex or the entry is empty (a no-op: only appliedIndex advances). Never throws for bad bytes.
   */
  applyEntry(index: number, bytes: Uint8Array): ApplyResult | null {
    if (!this.advanceIndex(index)) return null;
    if (bytes.length === 0) return null;
    let entry: LogCommand;
    try {
      entry = decodeLogCommand(bytes);
    } catch (error) {
      return failWith(error);
    }
    const meta: ApplyMeta = { now: entry.now };
    if (entry.clientId !== undefined) {
      meta.clientId = entry.clientId;
      meta.seq = entry.seq;
    }
    return this.applier.apply(index, entry.cmd, meta);
  }

  /** Record that entry `index` (e.g. a leader's no-op) was consumed without a command. */
  markApplied(index: number): void {
    this.advanceIndex(index);
  }

  private advanceIndex(index: number): boolean {
    if (!Number.isSafeInteger(index) || index < 1) {
      throw new RangeError(`log index must be a positive integer, got ${index}`);
    }
    if (index <= this.lastApplied) return false;
    this.lastApplied = index;
    return true;
  }

  // ---- watch events ---------------------------------------------------------------------------

  /**
   * Events with modRevision >= fromRevision whose key matches `filter`, oldest first; 'compacted' when
   * some of them are no longer in history (fromRevision < compactRevision). Treat events as read-only.
   */
  eventsSince(fromRevision: number, filter: WatchFilter): WatchEvent[] | "compacted" {
    return this.mvcc.eventsSince(fromRevision, filter);
  }

  /**
   * Call `listener(events, revision)` after every apply that produced events (all of one revision).
   * Returns a function that unsubscribes. Listeners must not modify the events.
   */
  onEvents(listener: EventListener): () => void {
    return this.mvcc.onEvents(listener);
  }

  // ---- reads ----------------------------------------------------------------------------------

  /** The key with its metadata, or null. The returned value shares memory with the store: read-only. */
  get(key: Uint8Array): KeyValue | null {
    return this.mvcc.get(key);
  }

  /**
   * Keys of a range in byte order, at request.revision or the current one, in pages of at most
   * MAX_RESULT_BYTES (`more` and `nextKey` say where to continue). Throws KvError on a malformed
   * request or a revision outside the kept history. Values are read-only.
   */
  range(request: RangeRequest): RangeResult {
    return this.mvcc.rangeOf(parseRangeRequest(request));
  }

  /** Every lease by id, with how many keys it holds. */
  leaseList(): { id: number; ttlMs: number; expiresAt: number; keys: number }[] {
    return this.leases.list();
  }

  /** The cluster-wide session TTL (set through the log; DEFAULT_SESSION_TTL_MS until then). */
  get sessionTtlMs(): number {
    return this.sessions.ttlMs;
  }

  /** The log's clock: the largest `now` of any applied command. */
  get logClock(): number {
    return this.sessions.clock;
  }

  leaseInfo(id: number): LeaseInfo | null {
    return this.leases.info(id);
  }

  /** Ids (ascending) of leases with expiresAt <= now: for the leader to propose a leaseExpire. */
  expiredLeases(now: number, limit?: number): number[] {
    return this.leases.expired(now, limit);
  }

  /** The session of a client, or null if it has none (or it expired). */
  sessionInfo(clientId: string): { seq: number; lastSeen: number } | null {
    const session = this.sessions.get(clientId);
    return session === undefined ? null : { seq: session.seq, lastSeen: session.lastSeen };
  }

  stats(): KvStats {
    return {
      keys: this.mvcc.index.size,
      revision: this.mvcc.revision,
      leases: this.leases.size,
      sessions: this.sessions.size,
      approxBytes: this.mvcc.dataBytes,
      appliedIndex: this.lastApplied,
      compactRevision: this.mvcc.compactRevision,
      historyEvents: this.mvcc.historyEvents,
    };
  }

  // ---- snapshots ------------------------------------------------------------------------------

  /**
   * The whole replicated state as bytes: keys with metadata, revision, leases, sessions, appliedIndex
   * and the session clock. Watch history is local and not included. Deterministic: equal states give
   * equal bytes.
   */
  snapshot(): Uint8Array {
    const job = this.beginSnapshot();
    try {
      job.step(Infinity);
      return job.finish();
    } finally {
      job.abandon();
    }
  }

  /**
   * The same bytes as snapshot(), encoded in slices between which the event loop runs, so a large
   * state does not stall the node. The state is captured when this is called: entries changed while
   * it runs are copied on write (at most one copy each) and the snapshot shows them as they were.
   * `entriesPerSlice` defaults to about SNAPSHOT_SLICE_BYTES of keys and values.
   */
  async snapshotAsync(entriesPerSlice?: number): Promise<Uint8Array> {
    const perKey = this.mvcc.dataBytes / Math.max(1, this.mvcc.index.size);
    const slice = entriesPerSlice ?? Math.max(1, Math.floor(SNAPSHOT_SLICE_BYTES / Math.max(1, perKey)));
    const job = this.beginSnapshot();
    try {
      while (!job.step(slice)) await new Promise<void>((r) => setImmediate(r));
      return job.finish();
    } catch (err) {
      job.abandon();
      throw err;
    }
  }

  private frozen: Map<Entry, Entry> | null = null;

  /** A snapshot is being encoded (only one can be at a time: beginSnapshot throws meanwhile). */
  get encodingSnapshot(): boolean {
    return this.mvcc.frozen !== null;
  }

  private beginSnapshot(): { step: (n: number) => boolean; finish: () => Uint8Array; abandon: () => void } {
    if (this.mvcc.frozen !== null) throw new Error("a snapshot is already being encoded");
    // Everything but the key table is small: copy it now. The key table is the index's chunks, frozen
    // by copy-on-write (OrderedIndex.freeze: a million keys in about 2,000 chunk references, so nothing
    // here walks the keys); the entries they point to are frozen by copy-on-write in putKey until finish().
    const index = this.mvcc.index;
    const chunks = index.freeze();
    const keyCount = index.size;
    const frozen = new Map<Entry, Entry>();
    this.mvcc.frozen = frozen;
    const leases: number[] = [];
    for (const lease of this.leases.sorted()) {
      leases.push(lease.id, lease.ttlMs, lease.expiresAt);
    }
    const sessions: unknown[] = [];
    for (const [clientId, session] of this.sessions.sessions) {
      sessions.push(clientId, session.seq, session.lastSeen, session.result);
    }
    const header = [SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, this.lastApplied, this.mvcc.revision, this.sessions.clock, this.leases.nextLeaseId, keyCount];
    // Layout: [u32 length of the CBOR head][CBOR head][key table]. The table (most of the bytes)
    // never passes through cbor-x, whose shared output buffer would otherwise grow to its size and
    // stay that large, pinned by every small value encoded into it later.
    const head = cborEncode([...header, leases, sessions, this.sessions.ttlMs]);
    // The key table is one binary blob (see binary.ts): per key, in byte order,
    // key, value, createRevision, modRevision, version, lease. The buffer is sized for all of it up
    // front (at most 4 lengths and 4 numbers of 8 bytes a key), so no slice ever copies what came before
    // and finish() copies nothing: a 300 MB state is never moved in one turn of the event loop.
    const estimate = this.mvcc.dataBytes - keyCount * ENTRY_OVERHEAD_BYTES + keyCount * 48;
    const table = new ByteWriter(4 + head.length + Math.max(1024, estimate));
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, head.length);
    table.raw(length);
    table.raw(head);
    // The cursor: chunk c, record i within it.
    let c = 0;
    let i = 0;
    const done = () => {
      if (this.mvcc.frozen === frozen) {
        this.mvcc.frozen = null;
        index.thaw();
      }
    };
    return {
      step: (n) => {
        for (let left = n; left > 0 && c < chunks.length; ) {
          const chunk = chunks[c]!;
          const end = Math.min(chunk.length, i + left);
          left -= end - i;
          for (; i < end; i++) {
            const live = chunk[i]!;
            const entry = frozen.get(live) ?? live;
            table.binaryString(entry.key);
            table.bytes(entry.value);
            table.uvarint(entry.createRevision);
            table.uvarint(entry.modRevision);
            table.uvarint(entry.version);
            table.uvarint(entry.lease);
          }
          if (i === chunk.length) {
            c++;
            i = 0;
          }
        }
        return c >= chunks.length;
      },
      finish: () => {
        done();
        return table.finish();
      },
      abandon: done,
    };
  }

  /**
   * Replace this store's state with a snapshot (e.g. one installed from the leader). Listeners stay;
   * watch history restarts (compactRevision = revision + 1). On error the store is left unchanged.
   */
  load(bytes: Uint8Array): void {
    let raw: unknown;
    const headLength = bytes.length >= 4 ? new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0) : -1;
    if (headLength < 0 || 4 + headLength > bytes.length) badSnapshot(`bad head length in ${bytes.length} bytes`);
    try {
      raw = cborDecode(bytes.subarray(4, 4 + headLength));
    } catch (error) {
      badSnapshot(`cannot decode ${bytes.length} bytes: ${String(error)}`);
    }
    if (!Array.isArray(raw) || (raw.length !== 9 && raw.length !== 10)) badSnapshot("not a snapshot head");
    const [magic, format, appliedIndex, revision, clock, nextLeaseId, keyCount, leases, sessions] = raw;
    const sessionTtlMs: unknown = format === 2 ? DEFAULT_SESSION_TTL_MS : raw[9];
    const table = bytes.subarray(4 + headLength);
    if (magic !== SNAPSHOT_MAGIC) badSnapshot("wrong magic");
    if (format !== SNAPSHOT_FORMAT && format !== 2) badSnapshot(`unknown format ${String(format)}`);
    if (raw.length !== (format === 2 ? 9 : 10)) badSnapshot("not a snapshot head");
    if (!isCount(sessionTtlMs) || sessionTtlMs === 0) badSnapshot("bad session TTL");
    if (!isCount(appliedIndex) || !isCount(revision) || !isTime(clock) || !isCount(nextLeaseId)) {
      badSnapshot("bad header numbers");
    }
    if (!isCount(keyCount) || !(table instanceof Uint8Array)) badSnapshot("bad key table");
    if (!Array.isArray(leases) || leases.length % LEASE_FIELDS !== 0) badSnapshot("bad lease table");
    if (!Array.isArray(sessions) || sessions.length % SESSION_FIELDS !== 0) badSnapshot("bad session table");

    const leaseMap = new Map<number, Lease>();
    for (let i = 0; i < leases.length; i += LEASE_FIELDS) {
      const [id, ttlMs, expiresAt] = [leases[i], leases[i + 1], leases[i + 2]];
      if (!isCount(id) || id === 0 || !isCount(ttlMs) || !isTime(expiresAt) || leaseMap.has(id)) {
        badSnapshot(`bad lease at ${i / LEASE_FIELDS}`);
      }
      leaseMap.set(id, { id, ttlMs, expiresAt, keys: new Set() });
    }

    // A plain view (not a Buffer), so the values sliced from it are plain Uint8Arrays.
    const reader = new ByteReader(new Uint8Array(table.buffer, table.byteOffset, table.byteLength), (problem) =>
      badSnapshot(`key table: ${problem}`),
    );
    const entries: Entry[] = [];
    let dataBytes = 0;
    let previous: string | null = null;
    for (let n = 0; n < keyCount; n++) {
      const key = reader.binaryString(MAX_KEY_BYTES);
      const value = reader.bytes(MAX_VALUE_BYTES);
      const createRevision = reader.uvarint();
      const modRevision = reader.uvarint();
      const version = reader.uvarint();
      const lease = reader.uvarint();
      if (key.length === 0) badSnapshot(`empty key #${n}`);
      if (previous !== null && !(previous < key)) badSnapshot(`key #${n} out of order`);
      if (createRevision < 1 || modRevision < createRevision || modRevision > revision || version < 1) {
        badSnapshot(`inconsistent revisions of key #${n}`);
      }
      if (lease !== 0) {
        const owner = leaseMap.get(lease);
        if (owner === undefined) badSnapshot(`key #${n} refers to missing lease ${lease}`);
        owner.keys.add(key);
      }
      const entry: Entry = { key, value, createRevision, modRevision, version, lease };
      entries.push(entry);
      dataBytes += key.length + value.length + ENTRY_OVERHEAD_BYTES;
      previous = key;
    }
    if (!reader.done) badSnapshot("trailing bytes after the key table");

    const sessionMap = new Map<string, Session>();
    let lastSeenBefore = 0;
    for (let i = 0; i < sessions.length; i += SESSION_FIELDS) {
      const [clientId, seq, lastSeen, result] = [sessions[i], sessions[i + 1], sessions[i + 2], sessions[i + 3]];
      if (typeof clientId !== "string" || !isCount(seq) || !isTime(lastSeen) || sessionMap.has(clientId)) {
        badSnapshot(`bad session at ${i / SESSION_FIELDS}`);
      }
      if (lastSeen < lastSeenBefore) badSnapshot("sessions out of order");
      const noResult = seq === 0 && result === null;
      if (!noResult && (typeof result !== "object" || result === null || typeof (result as { ok?: unknown }).ok !== "boolean")) {
        badSnapshot(`bad cached result of session ${clientId}`);
      }
      sessionMap.set(clientId, { seq, lastSeen, result: noResult ? null : (plainCopy(result) as ApplyResult) });
      lastSeenBefore = lastSeen;
    }

    // Everything checked: swap the new state in.
    this.lastApplied = appliedIndex;
    this.mvcc.load(entries, revision, dataBytes);
    this.leases.load(leaseMap, nextLeaseId);
    this.sessions.load(sessionMap, clock, sessionTtlMs);
  }

  /** Check internal invariants (for tests); throws an Error describing the first violation. */
  checkInvariants(): void {
    const index = this.mvcc.index;
    index.checkInvariants();
    let dataBytes = 0;
    index.forEach((entry) => {
      dataBytes += entry.key.length + entry.value.length + ENTRY_OVERHEAD_BYTES;
      if (entry.modRevision > this.mvcc.revision) throw new Error(`key modRevision beyond revision`);
      if (entry.createRevision > entry.modRevision || entry.version < 1) throw new Error("bad key metadata");
      if (index.get(entry.key) !== entry) throw new Error("ordered index lookup disagrees with its scan");
      if (entry.lease !== 0 && !this.leases.get(entry.lease)?.keys.has(entry.key)) {
        throw new Error(`key not listed in its lease ${entry.lease}`);
      }
    });
    if (dataBytes !== this.mvcc.dataBytes) throw new Error("approxBytes out of step");
    for (const lease of this.leases.leases.values()) {
      for (const key of lease.keys) {
        if (index.get(key)?.lease !== lease.id) throw new Error(`lease ${lease.id} lists a key it does not own`);
      }
    }
    let lastSeen = 0;
    for (const session of this.sessions.sessions.values()) {
      if (session.lastSeen < lastSeen) throw new Error("sessions out of lastSeen order");
      lastSeen = session.lastSeen;
    }
  }
}
