// Keys, revisions, ranges and the bounded history of changes that watches replay (etcd's mvcc/).
// Pure and deterministic: no clocks, no I/O. The apply layer (apply.ts) decides what to change; this
// module does the changing and records the events.

import { bytesToKey, compareBytes, keyToBytes, prefixEnd } from "./bytes";
import { MAX_KEY_BYTES, MAX_RESULT_BYTES, RESULT_KEY_OVERHEAD_BYTES, parseRangeRequest } from "./codec";
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

/** One change kept in history: the event watchers see, and the key's state before it (null: absent). */
interface Change {
  event: WatchEvent;
  prev: Entry | null;
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

export function inSpan(key: string, span: Span): boolean {
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

  private history: Change[] = [];
  private historyHead = 0;
  private historyBytes = 0;
  compactRevision = 1;
  private readonly listeners = new Set<EventListener>();
  /** Changes of the command being applied. */
  private pending: Change[] = [];
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

  /**
   * A range of a validated request, at request.revision (default: the current one), in pages of at
   * most MAX_RESULT_BYTES unless `unbounded` (transactions check their size first). Throws KvError
   * COMPACTED / FUTURE_REVISION for a revision outside the kept history.
   */
  rangeOf(request: RangeRequest, unbounded = false): RangeResult {
    const span = spanOf(request);
    const revision = request.revision ?? this.revision;
    const past = this.pastStates(span, revision);
    const keysOnly = request.keysOnly === true;
    const kvs: KeyValue[] = [];
    let count: number;
    if (span.single) {
      const entry = past?.has(span.start) ? past.get(span.start) : this.index.get(span.start);
      count = entry ? 1 : 0;
      if (entry && !request.countOnly) kvs.push(this.toKeyValue(entry, keysOnly));
      return { op: "range", revision, kvs, count, more: false };
    }
    count = this.index.countRange(span.start, span.end);
    if (past !== null) {
      for (const [key, prev] of past) count += (prev ? 1 : 0) - (this.index.get(key) ? 1 : 0);
    }
    if (request.countOnly) return { op: "range", revision, kvs, count, more: false };
    const limit = request.limit !== undefined && request.limit > 0 ? request.limit : Infinity;
    const budget = unbounded ? Infinity : MAX_RESULT_BYTES;
    let bytes = 0;
    let nextKey: string | undefined;
    this.visit(span, past, (entry) => {
      const size = entry.key.length + (keysOnly ? 0 : entry.value.length) + RESULT_KEY_OVERHEAD_BYTES;
      if (kvs.length >= limit || (kvs.length > 0 && bytes + size > budget)) {
        nextKey = entry.key;
        return false;
      }
      bytes += size;
      kvs.push(this.toKeyValue(entry, keysOnly));
      return true;
    });
    if (nextKey === undefined) return { op: "range", revision, kvs, count, more: false };
    return { op: "range", revision, kvs, count, more: true, nextKey: keyToBytes(nextKey) };
  }

  /**
   * Bytes of keys and values (with the per-key overhead) a range would return if unpaged; stops
   * counting once past `cap`.
   */
  rangeBytes(request: RangeRequest, cap: number): number {
    const span = spanOf(request);
    if (request.countOnly) return 0;
    const keysOnly = request.keysOnly === true;
    const limit = request.limit !== undefined && request.limit > 0 ? request.limit : Infinity;
    let bytes = 0;
    let n = 0;
    this.visit(span, null, (entry) => {
      if (n++ >= limit || bytes > cap) return false;
      bytes += entry.key.length + (keysOnly ? 0 : entry.value.length) + RESULT_KEY_OVERHEAD_BYTES;
      return true;
    });
    return bytes;
  }

  /**
   * For a read at a past revision: the state at `revision` of every key in `span` changed since
   * (null: absent then), from the history; null when `revision` is the current one.
   */
  private pastStates(span: Span, revision: number): Map<string, Entry | null> | null {
    if (revision > this.revision) {
      throw new KvError("FUTURE_REVISION", `revision ${revision} is in the future (the current revision is ${this.revision})`);
    }
    if (revision === this.revision) return null;
    if (revision < this.compactRevision - 1) {
      throw new KvError(
        "COMPACTED",
        `revision ${revision} is compacted: the oldest revision this node can read is ${this.compactRevision - 1}`,
      );
    }
    const states = new Map<string, Entry | null>();
    // Newest first: the last state set for a key is the one before its oldest change after `revision`.
    for (let i = this.history.length - 1; i >= this.historyHead; i--) {
      const change = this.history[i]!;
      if (change.event.modRevision <= revision) break;
      const key = bytesToKey(change.event.key);
      if (inSpan(key, span)) states.set(key, change.prev);
    }
    return states;
  }

  /** Entries of `span` in key order, as they are now or, with `past`, with those states instead. */
  private visit(span: Span, past: Map<string, Entry | null> | null, visit: (entry: Entry) => boolean): void {
    if (past === null || past.size === 0) {
      this.index.scan(span.start, span.end, visit);
      return;
    }
    const changed = [...past.keys()].sort();
    let i = 0;
    let going = true;
    this.index.scan(span.start, span.end, (entry) => {
      while (going && i < changed.length && changed[i]! < entry.key) {
        const old = past.get(changed[i++]!);
        if (old) going = visit(old);
      }
      if (!going) return false;
      if (i < changed.length && changed[i] === entry.key) {
        const old = past.get(changed[i++]!);
        going = old ? visit(old) : true;
      } else {
        going = visit(entry);
      }
      return going;
    });
    while (going && i < changed.length) {
      const old = past.get(changed[i++]!);
      if (old) going = visit(old);
    }
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
    let before: Entry | null = null;
    if (entry !== undefined) {
      before = { ...entry };
      prev = this.toKeyValue(entry, false);
      if (entry.lease !== lease) {
        this.leases.detach(entry.lease, key);
        this.leases.attach(lease, key);
      }
      this.dataBytes += value.length - entry.value.length;
      // A snapshot being encoded in the background must see this entry as it was when it started.
      if (this.frozen !== null && !this.frozen.has(entry)) this.frozen.set(entry, before);
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
    this.pending.push({ event, prev: before });
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
    // The removed entry is never changed again (a new put creates a new one): history may keep it.
    const event: WatchEvent = {
      type: "delete",
      key: keyToBytes(entry.key),
      modRevision: revision,
      createRevision: 0,
      version: 0,
      lease: 0,
      prevValue: entry.value,
    };
    this.pending.push({ event, prev: entry });
  }

  // ---- watch events ---------------------------------------------------------------------------

  /** Forget the events of a command that failed part-way. */
  discardEvents(): void {
    this.pending = [];
  }

  /** Record the events of the command just applied and tell the listeners. */
  flushEvents(): void {
    const changes = this.pending;
    if (changes.length === 0) return;
    this.pending = [];
    this.remember(changes);
    const events = changes.map((c) => c.event);
    const revision = this.revision;
    for (const listener of [...this.listeners]) {
      try {
        listener(events, revision);
      } catch {
        // A listener is local (a watch stream); its failure must never disturb the state machine.
      }
    }
  }

  private remember(changes: Change[]): void {
    const revision = changes[0]!.event.modRevision;
    if (changes.length > this.historyMaxEvents) {
      this.history = [];
      this.historyHead = 0;
      this.historyBytes = 0;
      this.compactRevision = revision + 1;
      return;
    }
    for (const change of changes) {
      this.history.push(change);
      this.historyBytes += eventBytes(change.event);
    }
    // Drop whole revisions from the front until within both budgets.
    while (
      this.history.length - this.historyHead > this.historyMaxEvents ||
      this.historyBytes > this.historyMaxBytes
    ) {
      this.dropThrough(this.history[this.historyHead]!.event.modRevision);
    }
    this.trimHistory();
  }

  /** Drop the history of revisions up to and including `revision`. */
  private dropThrough(revision: number): void {
    const history = this.history;
    while (this.historyHead < history.length && history[this.historyHead]!.event.modRevision <= revision) {
      this.historyBytes -= eventBytes(history[this.historyHead]!.event);
      this.historyHead++;
    }
    if (revision + 1 > this.compactRevision) this.compactRevision = revision + 1;
  }

  private trimHistory(): void {
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
      if (history[mid]!.event.modRevision < from) lo = mid + 1;
      else hi = mid;
    }
    const out: WatchEvent[] = [];
    for (let i = lo; i < history.length; i++) {
      const event = history[i]!.event;
      if (inSpan(bytesToKey(event.key), span)) out.push(event);
    }
    return out;
  }

  /**
   * Compact the history through `revision` (the `compact` command): reads at older revisions and
   * watches from revisions up to it fail with COMPACTED. Throws FUTURE_REVISION past the current one.
   */
  compact(revision: number): void {
    if (revision > this.revision) {
      throw new KvError("FUTURE_REVISION", `cannot compact revision ${revision}: the current revision is ${this.revision}`);
    }
    this.dropThrough(revision);
    this.trimHistory();
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
