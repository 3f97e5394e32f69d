// The key-value state machine: a pure, deterministic function of the commands applied to it.
// No clocks, no randomness, no I/O: time arrives inside commands (stamped by the proposing leader).

import { ByteReader, ByteWriter } from "./binary";
import { bytesToKey, compareBytes, copyBytes, keyToBytes, prefixEnd } from "./bytes";
import {
  MAX_KEY_BYTES,
  MAX_LEASES_PER_EXPIRE,
  MAX_VALUE_BYTES,
  cborDecode,
  cborEncode,
  decodeLogCommand,
  parseCommand,
  parseMeta,
  parseRangeRequest,
} from "./codec";
import { KvError, type KvErrorCode } from "./errors";
import { OrderedIndex } from "./ordered";
import type {
  ApplyMeta,
  ApplyResult,
  Command,
  CommandResult,
  Compare,
  CompareResult,
  EventListener,
  KeySelector,
  KeyValue,
  KvStats,
  KvStoreOptions,
  LeaseInfo,
  LogCommand,
  RangeRequest,
  RangeResult,
  TxnCommand,
  TxnOpResult,
  WatchEvent,
  WatchFilter,
} from "./types";

export const DEFAULT_SESSION_TTL_MS = 10 * 60 * 1000;
export const DEFAULT_HISTORY_MAX_EVENTS = 10_000;
export const DEFAULT_HISTORY_MAX_BYTES = 64 * 1024 * 1024;

/** Rough per-key memory beyond key and value bytes, for stats().approxBytes. */
const ENTRY_OVERHEAD_BYTES = 96;
/** Rough per-event memory beyond key and value bytes, for the history byte budget. */
const EVENT_OVERHEAD_BYTES = 64;

const SNAPSHOT_MAGIC = "raftkv-kv-snapshot";
const SNAPSHOT_FORMAT = 2;
const LEASE_FIELDS = 3; // id, ttlMs, expiresAt
const SESSION_FIELDS = 4; // clientId, seq, lastSeen, result

const EMPTY_BYTES = new Uint8Array(0);

interface Entry {
  readonly key: string; // binary string: one char per byte
  value: Uint8Array;
  createRevision: number;
  modRevision: number;
  version: number;
  lease: number;
}

interface Lease {
  readonly id: number;
  readonly ttlMs: number;
  expiresAt: number;
  readonly keys: Set<string>;
}

interface Session {
  seq: number;
  lastSeen: number;
  result: ApplyResult;
}

/** A key range in binary-string form: [start, end) with end null = unbounded, or exactly `start`. */
interface Span {
  start: string;
  end: string | null;
  single: boolean;
}

function spanOf(selector: KeySelector): Span {
  const start = bytesToKey(selector.key);
  if (selector.prefix) return { start, end: prefixEnd(start), single: false };
  if (selector.rangeEnd !== undefined) {
    const rangeEnd = selector.rangeEnd;
    // etcd convention: a rangeEnd of a single zero byte means "every key >= key".
    if (rangeEnd.length === 1 && rangeEnd[0] === 0) return { start, end: null, single: false };
    return { start, end: bytesToKey(rangeEnd), single: false };
  }
  return { start, end: null, single: true };
}

function inSpan(key: string, span: Span): boolean {
  if (span.single) return key === span.start;
  return key >= span.start && (span.end === null || key < span.end);
}

/** A predicate for "does this key fall under the selector" (throws KvError on a bad selector). */
export function keyMatcher(selector: KeySelector): (key: Uint8Array) => boolean {
  const span = spanOf(parseRangeRequest(selector));
  return (key) => inSpan(bytesToKey(key), span);
}

function ok(result: CommandResult): ApplyResult {
  return { ok: true, result };
}

function fail(code: KvErrorCode, message: string): ApplyResult {
  return { ok: false, error: { code, message } };
}

function failWith(error: unknown): ApplyResult {
  if (error instanceof KvError) return fail(error.code, error.message);
  return fail("INTERNAL", `internal error: ${error instanceof Error ? error.message : String(error)}`);
}

function compareHolds(order: number, result: CompareResult): boolean {
  switch (result) {
    case "equal":
      return order === 0;
    case "not_equal":
      return order !== 0;
    case "greater":
      return order > 0;
    case "less":
      return order < 0;
  }
}

function eventBytes(event: WatchEvent): number {
  return (
    event.key.length + (event.value?.length ?? 0) + (event.prevValue?.length ?? 0) + EVENT_OVERHEAD_BYTES
  );
}

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

export class KvStore {
  readonly sessionTtlMs: number;
  readonly historyMaxEvents: number;
  readonly historyMaxBytes: number;

  /**
   * Keys in byte order, for range scans and point lookups alike (no separate hash map: at a million
   * keys it would cost ~100 bytes a key for a few microseconds saved per lookup).
   */
  private index = new OrderedIndex<Entry>();
  private currentRevision = 0;
  private lastApplied = 0;
  /** Largest `now` seen in applied commands: the deterministic clock for session expiry. */
  private clock = 0;
  private nextLeaseId = 1;
  private leases = new Map<number, Lease>();
  /** Ordered by lastSeen (least recent first): a touched session is moved to the end. */
  private sessions = new Map<string, Session>();
  private dataBytes = 0;

  private history: WatchEvent[] = [];
  private historyHead = 0;
  private historyBytes = 0;
  private compactRev = 1;
  private readonly listeners = new Set<EventListener>();
  /** Events of the command being applied. */
  private pending: WatchEvent[] = [];

  constructor(options: KvStoreOptions = {}) {
    this.sessionTtlMs = options.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
    this.historyMaxEvents = options.historyMaxEvents ?? DEFAULT_HISTORY_MAX_EVENTS;
    this.historyMaxBytes = options.historyMaxBytes ?? DEFAULT_HISTORY_MAX_BYTES;
    if (!(this.sessionTtlMs > 0)) throw new RangeError(`sessionTtlMs must be > 0, got ${this.sessionTtlMs}`);
    if (!(this.historyMaxEvents >= 0)) throw new RangeError("historyMaxEvents must be >= 0");
    if (!(this.historyMaxBytes >= 0)) throw new RangeError("historyMaxBytes must be >= 0");
  }

  /** A new store holding the state of `snapshot()` bytes. Throws KvError 'BAD_SNAPSHOT'. */
  static restore(bytes: Uint8Array, options?: KvStoreOptions): KvStore {
    const store = new KvStore(options);
    store.load(bytes);
    return store;
  }

  /** Latest revision: bumped once by every applied command that changed at least one key. */
  get revision(): number {
    return this.currentRevision;
  }

  /** Index of the last log entry applied (or skipped as a no-op). */
  get appliedIndex(): number {
    return this.lastApplied;
  }

  /** Oldest revision whose events are all still in the watch history. */
  get compactRevision(): number {
    return this.compactRev;
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
    return this.applyParsed(parsedCmd, parsedMeta);
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
    return this.applyParsed(entry.cmd, meta);
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

  private applyParsed(cmd: Command, meta: ApplyMeta | undefined): ApplyResult {
    this.pending = [];
    let result: ApplyResult;
    try {
      if (meta !== undefined) {
        if (meta.now > this.clock) this.clock = meta.now;
        this.expireSessions();
      }
      const clientId = meta?.clientId;
      const seq = meta?.seq;
      if (clientId !== undefined && seq !== undefined) {
        const session = this.sessions.get(clientId);
        if (session !== undefined && seq <= session.seq) {
          this.touchSession(clientId, session);
          if (seq === session.seq) return session.result;
          return fail(
            "STALE_SEQUENCE",
            `client ${clientId} sent sequence ${seq}, but sequence ${session.seq} was already applied`,
          );
        }
        result = this.execute(cmd);
        this.sessions.delete(clientId);
        this.sessions.set(clientId, { seq, lastSeen: this.clock, result });
      } else {
        result = this.execute(cmd);
      }
    } catch (error) {
      this.pending = [];
      return failWith(error);
    }
    this.flushEvents();
    return result;
  }

  private touchSession(clientId: string, session: Session): void {
    session.lastSeen = this.clock;
    this.sessions.delete(clientId);
    this.sessions.set(clientId, session);
  }

  private expireSessions(): void {
    for (const [clientId, session] of this.sessions) {
      if (session.lastSeen + this.sessionTtlMs >= this.clock) break;
      this.sessions.delete(clientId);
    }
  }

  private execute(cmd: Command): ApplyResult {
    switch (cmd.op) {
      case "put": {
        const lease = cmd.lease ?? 0;
        if (lease !== 0 && !this.leases.has(lease)) {
          return fail("LEASE_NOT_FOUND", `lease ${lease} does not exist`);
        }
        const revision = this.currentRevision + 1;
        const prev = this.putKey(cmd.key, cmd.value, lease, revision);
        this.currentRevision = revision;
        return ok(prev === undefined ? { op: "put", revision } : { op: "put", revision, prev });
      }
      case "del": {
        const deleted = this.deleteSpan(spanOf(cmd), this.currentRevision + 1);
        if (deleted > 0) this.currentRevision++;
        return ok({ op: "del", revision: this.currentRevision, deleted });
      }
      case "txn":
        return this.executeTxn(cmd);
      case "leaseGrant": {
        const id = cmd.id === 0 ? this.nextLeaseId : cmd.id;
        if (this.leases.has(id)) return fail("LEASE_EXISTS", `lease ${id} already exists`);
        const expiresAt = cmd.now + cmd.ttlMs;
        this.leases.set(id, { id, ttlMs: cmd.ttlMs, expiresAt, keys: new Set() });
        if (id >= this.nextLeaseId) this.nextLeaseId = id + 1;
        return ok({ op: "leaseGrant", id, ttlMs: cmd.ttlMs, expiresAt });
      }
      case "leaseKeepAlive": {
        const lease = this.leases.get(cmd.id);
        if (lease === undefined) return fail("LEASE_NOT_FOUND", `lease ${cmd.id} does not exist`);
        lease.expiresAt = cmd.now + lease.ttlMs;
        return ok({ op: "leaseKeepAlive", id: lease.id, ttlMs: lease.ttlMs, expiresAt: lease.expiresAt });
      }
      case "leaseRevoke": {
        const lease = this.leases.get(cmd.id);
        if (lease === undefined) return fail("LEASE_NOT_FOUND", `lease ${cmd.id} does not exist`);
        const deleted = this.dropLease(lease, this.currentRevision + 1);
        if (deleted > 0) this.currentRevision++;
        return ok({ op: "leaseRevoke", revision: this.currentRevision, deleted });
      }
      case "leaseExpire": {
        const revision = this.currentRevision + 1;
        const expired: number[] = [];
        let deleted = 0;
        for (const id of cmd.ids) {
          const lease = this.leases.get(id);
          if (lease === undefined || lease.expiresAt > cmd.now) continue;
          deleted += this.dropLease(lease, revision);
          expired.push(id);
        }
        if (deleted > 0) this.currentRevision = revision;
        return ok({ op: "leaseExpire", revision: this.currentRevision, expired, deleted });
      }
      case "leaseRefreshAll": {
        for (const lease of this.leases.values()) lease.expiresAt = cmd.now + lease.ttlMs;
        return ok({ op: "leaseRefreshAll", leases: this.leases.size });
      }
    }
  }

  private executeTxn(cmd: TxnCommand): ApplyResult {
    const succeeded = cmd.compare.every((c) => this.evaluate(c));
    const ops = succeeded ? cmd.success : cmd.failure;
    const branch = succeeded ? "success" : "failure";
    // Check everything that can fail before changing anything: a transaction is all or nothing.
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      if (op.op === "put" && op.lease !== undefined && op.lease !== 0 && !this.leases.has(op.lease)) {
        return fail("LEASE_NOT_FOUND", `${branch}[${i}].lease ${op.lease} does not exist`);
      }
    }
    const revision = this.currentRevision + 1;
    let changed = false;
    const results: TxnOpResult[] = [];
    for (const op of ops) {
      switch (op.op) {
        case "put": {
          const prev = this.putKey(op.key, op.value, op.lease ?? 0, revision);
          changed = true;
          results.push(prev === undefined ? { op: "put", revision } : { op: "put", revision, prev });
          break;
        }
        case "del": {
          const deleted = this.deleteSpan(spanOf(op), revision);
          if (deleted > 0) changed = true;
          results.push({ op: "del", revision, deleted });
          break;
        }
        case "range":
          results.push(this.rangeOf(op));
          break;
      }
    }
    if (changed) this.currentRevision = revision;
    for (const result of results) result.revision = this.currentRevision;
    return ok({ op: "txn", succeeded, revision: this.currentRevision, results });
  }

  private evaluate(compare: Compare): boolean {
    const entry = this.index.get(bytesToKey(compare.key));
    let order: number;
    switch (compare.target) {
      case "exists":
        return entry !== undefined;
      case "absent":
        return entry === undefined;
      case "value":
        if (entry === undefined) return false;
        order = compareBytes(entry.value, compare.value);
        break;
      case "version":
        order = (entry?.version ?? 0) - compare.number;
        break;
      case "create":
        order = (entry?.createRevision ?? 0) - compare.number;
        break;
      case "mod":
        order = (entry?.modRevision ?? 0) - compare.number;
        break;
      case "lease":
        order = (entry?.lease ?? 0) - compare.number;
        break;
    }
    return compareHolds(order, compare.result);
  }

  // ---- mutation primitives (cannot fail once the command is validated) -------------------------

  private putKey(keyBytes: Uint8Array, value: Uint8Array, lease: number, revision: number): KeyValue | undefined {
    const key = bytesToKey(keyBytes);
    let entry = this.index.get(key);
    let prev: KeyValue | undefined;
    if (entry !== undefined) {
      prev = this.toKeyValue(entry, false);
      if (entry.lease !== lease) {
        this.detach(entry.lease, key);
        this.attach(lease, key);
      }
      this.dataBytes += value.length - entry.value.length;
      // A snapshot being encoded in the background must see this entry as it was when it started.
      if (this.frozen !== null && !this.frozen.has(entry)) this.frozen.set(entry, { ...entry });
      entry.value = value;
      entry.modRevision = revision;
      entry.version++;
      entry.lease = lease;
    } else {
      entry = { key, value, createRevision: revision, modRevision: revision, version: 1, lease };
      this.index.insert(entry);
      this.attach(lease, key);
      this.dataBytes += key.length + value.length + ENTRY_OVERHEAD_BYTES;
    }
    const event: WatchEvent = {
      type: "put",
      key: keyBytes,
      value,
      modRevision: revision,
      createRevision: entry.createRevision,
      version: entry.version,
      lease,
    };
    if (prev !== undefined) event.prevValue = prev.value;
    this.pending.push(event);
    return prev;
  }

  private deleteSpan(span: Span, revision: number): number {
    if (span.single) {
      const entry = this.index.get(span.start);
      if (entry === undefined) return 0;
      this.deleteEntry(entry, revision);
      return 1;
    }
    const doomed: Entry[] = [];
    this.index.scan(span.start, span.end, (entry) => {
      doomed.push(entry);
    });
    for (const entry of doomed) this.deleteEntry(entry, revision);
    return doomed.length;
  }

  private deleteEntry(entry: Entry, revision: number): void {
    this.index.remove(entry.key);
    this.detach(entry.lease, entry.key);
    this.dataBytes -= entry.key.length + entry.value.length + ENTRY_OVERHEAD_BYTES;
    this.pending.push({
      type: "delete",
      key: keyToBytes(entry.key),
      modRevision: revision,
      createRevision: 0,
      version: 0,
      lease: 0,
      prevValue: entry.value,
    });
  }

  /** Delete a lease and its keys (in key order); returns how many keys were deleted. */
  private dropLease(lease: Lease, revision: number): number {
    const keys = [...lease.keys].sort();
    for (const key of keys) {
      const entry = this.index.get(key);
      if (entry !== undefined) this.deleteEntry(entry, revision);
    }
    this.leases.delete(lease.id);
    return keys.length;
  }

  private attach(lease: number, key: string): void {
    if (lease !== 0) this.leases.get(lease)?.keys.add(key);
  }

  private detach(lease: number, key: string): void {
    if (lease !== 0) this.leases.get(lease)?.keys.delete(key);
  }

  // ---- watch events ---------------------------------------------------------------------------

  private flushEvents(): void {
    const events = this.pending;
    if (events.length === 0) return;
    this.pending = [];
    this.remember(events);
    const revision = this.currentRevision;
    for (const listener of [...this.listeners]) {
      try {
        listener(events, revision);
      } catch {
        // A listener is local (a watch stream); its failure must never disturb the state machine.
      }
    }
  }

  private remember(events: WatchEvent[]): void {
    const revision = events[0]!.modRevision;
    if (events.length > this.historyMaxEvents) {
      this.history = [];
      this.historyHead = 0;
      this.historyBytes = 0;
      this.compactRev = revision + 1;
      return;
    }
    for (const event of events) {
      this.history.push(event);
      this.historyBytes += eventBytes(event);
    }
    // Drop whole revisions from the front until within both budgets.
    while (
      this.history.length - this.historyHead > this.historyMaxEvents ||
      this.historyBytes > this.historyMaxBytes
    ) {
      const dropped = this.history[this.historyHead]!.modRevision;
      while (this.historyHead < this.history.length && this.history[this.historyHead]!.modRevision === dropped) {
        this.historyBytes -= eventBytes(this.history[this.historyHead]!);
        this.historyHead++;
      }
      this.compactRev = dropped + 1;
    }
    if (this.historyHead > 1024 && this.historyHead * 2 > this.history.length) {
      this.history = this.history.slice(this.historyHead);
      this.historyHead = 0;
    }
  }

  /**
   * Events with modRevision >= fromRevision whose key matches `filter`, oldest first; 'compacted' when
   * some of them are no longer in history (fromRevision < compactRevision). Treat events as read-only.
   */
  eventsSince(fromRevision: number, filter: WatchFilter): WatchEvent[] | "compacted" {
    if (!Number.isSafeInteger(fromRevision)) {
      throw new KvError("BAD_COMMAND", `fromRevision must be an integer, got ${fromRevision}`);
    }
    const span = spanOf(parseRangeRequest(filter));
    const from = Math.max(fromRevision, 1);
    if (from < this.compactRev) return "compacted";
    const history = this.history;
    let lo = this.historyHead;
    let hi = history.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (history[mid]!.modRevision < from) lo = mid + 1;
      else hi = mid;
    }
    const out: WatchEvent[] = [];
    for (let i = lo; i < history.length; i++) {
      const event = history[i]!;
      if (inSpan(bytesToKey(event.key), span)) out.push(event);
    }
    return out;
  }

  /**
   * Call `listener(events, revision)` after every apply that produced events (all of one revision).
   * Returns a function that unsubscribes. Listeners must not modify the events.
   */
  onEvents(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  // ---- reads ----------------------------------------------------------------------------------

  private toKeyValue(entry: Entry, keysOnly: boolean): KeyValue {
    return {
      key: keyToBytes(entry.key),
      value: keysOnly ? EMPTY_BYTES : entry.value,
      createRevision: entry.createRevision,
      modRevision: entry.modRevision,
      version: entry.version,
      lease: entry.lease,
    };
  }

  /** The key with its metadata, or null. The returned value shares memory with the store: read-only. */
  get(key: Uint8Array): KeyValue | null {
    if (key.length === 0 || key.length > MAX_KEY_BYTES) return null;
    const entry = this.index.get(bytesToKey(key));
    return entry === undefined ? null : this.toKeyValue(entry, false);
  }

  /** Keys of a range in byte order. Throws KvError on a malformed request. Values are read-only. */
  range(request: RangeRequest): RangeResult {
    return this.rangeOf(parseRangeRequest(request));
  }

  private rangeOf(request: RangeRequest): RangeResult {
    const span = spanOf(request);
    const keysOnly = request.keysOnly === true;
    const kvs: KeyValue[] = [];
    if (span.single) {
      const entry = this.index.get(span.start);
      const count = entry === undefined ? 0 : 1;
      if (entry !== undefined && !request.countOnly) kvs.push(this.toKeyValue(entry, keysOnly));
      return { op: "range", revision: this.currentRevision, kvs, count, more: false };
    }
    const count = this.index.countRange(span.start, span.end);
    if (request.countOnly) return { op: "range", revision: this.currentRevision, kvs, count, more: false };
    const limit = request.limit !== undefined && request.limit > 0 ? request.limit : Infinity;
    this.index.scan(span.start, span.end, (entry) => {
      if (kvs.length >= limit) return false;
      kvs.push(this.toKeyValue(entry, keysOnly));
      return true;
    });
    return { op: "range", revision: this.currentRevision, kvs, count, more: count > kvs.length };
  }

  leaseInfo(id: number): LeaseInfo | null {
    const lease = this.leases.get(id);
    if (lease === undefined) return null;
    const keys = [...lease.keys].sort().map(keyToBytes);
    return { id: lease.id, ttlMs: lease.ttlMs, expiresAt: lease.expiresAt, keys };
  }

  /** Ids (ascending) of leases with expiresAt <= now: for the leader to propose a leaseExpire. */
  expiredLeases(now: number, limit: number = MAX_LEASES_PER_EXPIRE): number[] {
    const ids: number[] = [];
    for (const lease of this.leases.values()) if (lease.expiresAt <= now) ids.push(lease.id);
    ids.sort((a, b) => a - b);
    return ids.length > limit ? ids.slice(0, limit) : ids;
  }

  /** The session of a client, or null if it has none (or it expired). */
  sessionInfo(clientId: string): { seq: number; lastSeen: number } | null {
    const session = this.sessions.get(clientId);
    return session === undefined ? null : { seq: session.seq, lastSeen: session.lastSeen };
  }

  stats(): KvStats {
    return {
      keys: this.index.size,
      revision: this.currentRevision,
      leases: this.leases.size,
      sessions: this.sessions.size,
      approxBytes: this.dataBytes,
      appliedIndex: this.lastApplied,
      compactRevision: this.compactRev,
      historyEvents: this.history.length - this.historyHead,
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
   */
  async snapshotAsync(entriesPerSlice = 20_000): Promise<Uint8Array> {
    const job = this.beginSnapshot();
    try {
      while (!job.step(entriesPerSlice)) await new Promise<void>((r) => setImmediate(r));
      return job.finish();
    } catch (err) {
      job.abandon();
      throw err;
    }
  }

  private frozen: Map<Entry, Entry> | null = null;

  private beginSnapshot(): { step: (n: number) => boolean; finish: () => Uint8Array; abandon: () => void } {
    if (this.frozen !== null) throw new Error("a snapshot is already being encoded");
    // Everything but the key table is small: copy it now. The key table is a list of references;
    // the entries they point to are frozen by copy-on-write in putKey until finish().
    const entries: Entry[] = [];
    this.index.forEach((entry) => {
      entries.push(entry);
    });
    const frozen = new Map<Entry, Entry>();
    this.frozen = frozen;
    const leases: number[] = [];
    for (const lease of [...this.leases.values()].sort((a, b) => a.id - b.id)) {
      leases.push(lease.id, lease.ttlMs, lease.expiresAt);
    }
    const sessions: unknown[] = [];
    for (const [clientId, session] of this.sessions) {
      sessions.push(clientId, session.seq, session.lastSeen, session.result);
    }
    const header = [SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, this.lastApplied, this.currentRevision, this.clock, this.nextLeaseId, entries.length];
    // The key table is one binary blob (see binary.ts): per key, in byte order,
    // key, value, createRevision, modRevision, version, lease.
    const table = new ByteWriter(Math.min(this.dataBytes, 64 * 1024 * 1024) + 1024);
    let next = 0;
    const done = () => {
      if (this.frozen === frozen) this.frozen = null;
    };
    return {
      step: (n) => {
        const end = Math.min(entries.length, next + n);
        for (; next < end; next++) {
          const live = entries[next]!;
          const entry = frozen.get(live) ?? live;
          table.binaryString(entry.key);
          table.bytes(entry.value);
          table.uvarint(entry.createRevision);
          table.uvarint(entry.modRevision);
          table.uvarint(entry.version);
          table.uvarint(entry.lease);
        }
        return next >= entries.length;
      },
      finish: () => {
        done();
        // Layout: [u32 length of the CBOR head][CBOR head][key table]. The table (most of the bytes)
        // never passes through cbor-x, whose shared output buffer would otherwise grow to its size and
        // stay that large, pinned by every small value encoded into it later.
        const head = cborEncode([...header, leases, sessions]);
        const tableBytes = table.finish();
        const out = new Uint8Array(4 + head.length + tableBytes.length);
        new DataView(out.buffer).setUint32(0, head.length);
        out.set(head, 4);
        out.set(tableBytes, 4 + head.length);
        return out;
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
    if (!Array.isArray(raw) || raw.length !== 9) badSnapshot("not a snapshot head");
    const [magic, format, appliedIndex, revision, clock, nextLeaseId, keyCount, leases, sessions] = raw;
    const table = bytes.subarray(4 + headLength);
    if (magic !== SNAPSHOT_MAGIC) badSnapshot("wrong magic");
    if (format !== SNAPSHOT_FORMAT) badSnapshot(`unknown format ${String(format)}`);
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
      if (typeof result !== "object" || result === null || typeof (result as { ok?: unknown }).ok !== "boolean") {
        badSnapshot(`bad cached result of session ${clientId}`);
      }
      sessionMap.set(clientId, { seq, lastSeen, result: plainCopy(result) as ApplyResult });
      lastSeenBefore = lastSeen;
    }

    // Everything checked: swap the new state in.
    this.index = new OrderedIndex<Entry>();
    this.index.load(entries);
    this.lastApplied = appliedIndex;
    this.currentRevision = revision;
    this.clock = clock;
    this.nextLeaseId = nextLeaseId;
    this.leases = leaseMap;
    this.sessions = sessionMap;
    this.dataBytes = dataBytes;
    this.history = [];
    this.historyHead = 0;
    this.historyBytes = 0;
    this.compactRev = revision + 1;
    this.pending = [];
  }

  /** Check internal invariants (for tests); throws an Error describing the first violation. */
  checkInvariants(): void {
    this.index.checkInvariants();
    let dataBytes = 0;
    this.index.forEach((entry) => {
      dataBytes += entry.key.length + entry.value.length + ENTRY_OVERHEAD_BYTES;
      if (entry.modRevision > this.currentRevision) throw new Error(`key modRevision beyond revision`);
      if (entry.createRevision > entry.modRevision || entry.version < 1) throw new Error("bad key metadata");
      if (this.index.get(entry.key) !== entry) throw new Error("ordered index lookup disagrees with its scan");
      if (entry.lease !== 0 && !this.leases.get(entry.lease)?.keys.has(entry.key)) {
        throw new Error(`key not listed in its lease ${entry.lease}`);
      }
    });
    if (dataBytes !== this.dataBytes) throw new Error("approxBytes out of step");
    for (const lease of this.leases.values()) {
      for (const key of lease.keys) {
        if (this.index.get(key)?.lease !== lease.id) throw new Error(`lease ${lease.id} lists a key it does not own`);
      }
    }
    let lastSeen = 0;
    for (const session of this.sessions.values()) {
      if (session.lastSeen < lastSeen) throw new Error("sessions out of lastSeen order");
      lastSeen = session.lastSeen;
    }
  }
}
