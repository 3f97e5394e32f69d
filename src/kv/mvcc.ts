// Keys, revisions, ranges and the bounded history of changes that watches replay (etcd's mvcc/).
// Pure and deterministic: no clocks, no I/O. The apply layer (apply.ts) decides what to change; this
// module does the changing and records the events.

import { bytesToKey, compareBytes, keyToBytes, prefixEnd } from "./bytes";
import { MAX_KEY_BYTES, parseRangeRequest } from "./codec";
import { KvError } from "./errors";
import { OrderedIndex } from "./ordered";
import type {
  Compare,
  CompareResult,
  EventListener,
  KeySelector,
  KeyValue,
  RangeRequest,
  RangeResult,
  WatchEvent,
  WatchFilter,
} from "./types";

export const DEFAULT_HISTORY_MAX_EVENTS = 10_000;
export const DEFAULT_HISTORY_MAX_BYTES = 64 * 1024 * 1024;

/** Rough per-key memory beyond key and value bytes, for stats().approxBytes. */
export const ENTRY_OVERHEAD_BYTES = 96;
/** Rough per-event memory beyond key and value bytes, for the history byte budget. */
const EVENT_OVERHEAD_BYTES = 64;

const EMPTY_BYTES = new Uint8Array(0);

export interface Entry {
  readonly key: string; // binary string: one char per byte
  value: Uint8Array;
  createRevision: number;
  modRevision: number;
  version: number;
  lease: number;
}

/** Who is told when a key joins or leaves a lease (the lease table). */
export interface LeaseOwnership {
  attach(lease: number, key: string): void;
  detach(lease: number, key: string): void;
}

/** A key range in binary-string form: [start, end) with end null = unbounded, or exactly `start`. */
export interface Span {
  start: string;
  end: string | null;
  single: boolean;
}

export function spanOf(selector: KeySelector): Span {
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

export class Mvcc {
  /**
   * Keys in byte order, for range scans and point lookups alike (no separate hash map: at a million
   * keys it would cost ~100 bytes a key for a few microseconds saved per lookup).
   */
  index = new OrderedIndex<Entry>();
  revision = 0;
  dataBytes = 0;

  private history: WatchEvent[] = [];
  private historyHead = 0;
  private historyBytes = 0;
  compactRevision = 1;
  private readonly listeners = new Set<EventListener>();
  /** Events of the command being applied. */
  private pending: WatchEvent[] = [];
  /** While a snapshot is being encoded: the entries as they were when it started (copy on write). */
  frozen: Map<Entry, Entry> | null = null;

  constructor(
    private readonly leases: LeaseOwnership,
    readonly historyMaxEvents: number,
    readonly historyMaxBytes: number,
  ) {}

  // ---- reads ----------------------------------------------------------------------------------

  toKeyValue(entry: Entry, keysOnly: boolean): KeyValue {
    return {
      key: keyToBytes(entry.key),
      value: keysOnly ? EMPTY_BYTES : entry.value,
      createRevision: entry.createRevision,
      modRevision: entry.modRevision,
      version: entry.version,
      lease: entry.lease,
    };
  }

  get(key: Uint8Array): KeyValue | null {
    if (key.length === 0 || key.length > MAX_KEY_BYTES) return null;
    const entry = this.index.get(bytesToKey(key));
    return entry === undefined ? null : this.toKeyValue(entry, false);
  }

  /** A range of a validated request, at the current revision. */
  rangeOf(request: RangeRequest): RangeResult {
    const span = spanOf(request);
    const keysOnly = request.keysOnly === true;
    const kvs: KeyValue[] = [];
    if (span.single) {
      const entry = this.index.get(span.start);
      const count = entry === undefined ? 0 : 1;
      if (entry !== undefined && !request.countOnly) kvs.push(this.toKeyValue(entry, keysOnly));
      return { op: "range", revision: this.revision, kvs, count, more: false };
    }
    const count = this.index.countRange(span.start, span.end);
    if (request.countOnly) return { op: "range", revision: this.revision, kvs, count, more: false };
    const limit = request.limit !== undefined && request.limit > 0 ? request.limit : Infinity;
    this.index.scan(span.start, span.end, (entry) => {
      if (kvs.length >= limit) return false;
      kvs.push(this.toKeyValue(entry, keysOnly));
      return true;
    });
    return { op: "range", revision: this.revision, kvs, count, more: count > kvs.length };
  }

  evaluate(compare: Compare): boolean {
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

  putKey(keyBytes: Uint8Array, value: Uint8Array, lease: number, revision: number): KeyValue | undefined {
    const key = bytesToKey(keyBytes);
    let entry = this.index.get(key);
    let prev: KeyValue | undefined;
    if (entry !== undefined) {
      prev = this.toKeyValue(entry, false);
      if (entry.lease !== lease) {
        this.leases.detach(entry.lease, key);
        this.leases.attach(lease, key);
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
      this.leases.attach(lease, key);
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

  deleteSpan(span: Span, revision: number): number {
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

  /** Delete these keys (binary strings), if present, in the order given; returns how many were listed. */
  deleteKeys(keys: string[], revision: number): number {
    for (const key of keys) {
      const entry = this.index.get(key);
      if (entry !== undefined) this.deleteEntry(entry, revision);
    }
    return keys.length;
  }

  private deleteEntry(entry: Entry, revision: number): void {
    this.index.remove(entry.key);
    this.leases.detach(entry.lease, entry.key);
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

  // ---- watch events ---------------------------------------------------------------------------

  /** Forget the events of a command that failed part-way. */
  discardEvents(): void {
    this.pending = [];
  }

  /** Record the events of the command just applied and tell the listeners. */
  flushEvents(): void {
    const events = this.pending;
    if (events.length === 0) return;
    this.pending = [];
    this.remember(events);
    const revision = this.revision;
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
      this.compactRevision = revision + 1;
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
      this.compactRevision = dropped + 1;
    }
    if (this.historyHead > 1024 && this.historyHead * 2 > this.history.length) {
      this.history = this.history.slice(this.historyHead);
      this.historyHead = 0;
    }
  }

  get historyEvents(): number {
    return this.history.length - this.historyHead;
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
    if (from < this.compactRevision) return "compacted";
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

  onEvents(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  // ---- whole state ----------------------------------------------------------------------------

  /** Replace the keys (validated, sorted) and revision; history restarts after `revision`. */
  load(entries: Entry[], revision: number, dataBytes: number): void {
    this.index = new OrderedIndex<Entry>();
    this.index.load(entries);
    this.revision = revision;
    this.dataBytes = dataBytes;
    this.history = [];
    this.historyHead = 0;
    this.historyBytes = 0;
    this.compactRevision = revision + 1;
    this.pending = [];
  }
}
