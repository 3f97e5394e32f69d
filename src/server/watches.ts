// Watches: served by any node from its own applied state.
//
// Applying a revision only appends its events to the fan-out log here (no sends inside apply). Events
// reach watchers from turns of their own (setImmediate), each bounded (WATCH_FANOUT_*_PER_TURN), so
// Raft ticks, heartbeats and the Ready loop run between turns however many watchers there are. A turn
// visits watchers round-robin; a visit sends one watcher everything it has not yet had, up to about
// WATCH_VISIT_EVENTS events or WATCH_FANOUT_BYTES_PER_TURN of those it watches (whole revisions),
// batched into as few frames as fit. Watchers of the same keys and options get the same frames, so
// those are encoded once per visit and only the watch id differs. A watcher that still needs more than
// MAX_WATCH_BACKLOG_BYTES of events the store's history no longer holds is ended with WATCHER_TOO_SLOW
// and the revision to watch again from.
//
// The log holds every event since the oldest revision in the store's history (so a watch from a past
// revision replays from it in the same turns), and further back what lagging watchers still need.

import { bytesToKey } from "../kv/bytes";
import { MAX_RESULT_BYTES, RESULT_KEY_OVERHEAD_BYTES, parseRangeRequest } from "../kv/codec";
import { KvError } from "../kv/errors";
import { inSpan, spanOf, type Span } from "../kv/mvcc";
import type { KvStore } from "../kv/store";
import type { KeySelector, WatchEvent } from "../kv/types";
import { encodeFrame, encodePayload, FRAME_HEADER_BYTES, MAX_FRAME_BYTES } from "../net";
import type { ClientConn } from "./clients";
import { MAX_WATCH_BACKLOG_BYTES, MAX_WATCHES_PER_CONNECTION, MAX_WATCHES_TOTAL } from "./limits";

/**
 * A fan-out turn ends (checked between visits) once it has made this many checks: a watcher visited,
 * or one event tested against a watcher's keys (not counted again for the other watchers of its group).
 */
export const WATCH_FANOUT_CHECKS_PER_TURN = 5_000;

/** ... or once it has built and queued this many bytes of event frames. */
export const WATCH_FANOUT_BYTES_PER_TURN = 256 * 1024;

/** A visit covers about this many logged events (then on to the end of the revision it is in). */
export const WATCH_VISIT_EVENTS = 1_000;

/** Bytes an event counts for in a backlog: key, value, previous value, and this much for the rest. */
const EVENT_OVERHEAD_BYTES = 64;

const eventBytes = (e: WatchEvent): number => e.key.length + (e.value?.length ?? 0) + (e.prevValue?.length ?? 0) + EVENT_OVERHEAD_BYTES;

/** CBOR's first byte of a map of n (< 24) entries. */
const CBOR_MAP = 0xa0;

/** One event in the fan-out log. */
interface Logged {
  event: WatchEvent;
  /** The key as a binary string, converted once for all watchers' spans. */
  key: string;
  /** Bytes of the events logged before this one: a backlog's size is a difference of two of these. */
  before: number;
}

/** The frames of a visit, without the watch id: a CBOR map {revision, events[, more]} minus its header. */
interface Part {
  entries: number;
  rest: Uint8Array;
}

/** Watchers of the same keys and options: they get the same frames. */
interface Group {
  key: string;
  span: Span;
  prevKv: boolean;
  watchers: number;
  /**
   * The parts last built, for log positions [builtFrom, builtTo) of the [builtFrom, builtLimit) asked for
   * (kept for the current turn only).
   */
  builtFrom: number;
  builtLimit: number;
  builtTo: number;
  parts: Part[];
}

interface Watcher {
  conn: ClientConn;
  id: number;
  group: Group;
  /** The CBOR of {k: "ev", id} without its map header: the part of each frame that is this watcher's. */
  idRest: Uint8Array;
  /** First revision wanted: a lagging node may still apply older ones after the watch starts. */
  from: number;
  /** Position in the log of the next event to look at. */
  next: number;
}

export interface WatchesOptions {
  /** Runs a fan-out turn after the current one (production: setImmediate). */
  defer?: (fn: () => void) => void;
  /** Limits, for tests (defaults: the constants above and in limits.ts). */
  backlogBytes?: number;
  checksPerTurn?: number;
  bytesPerTurn?: number;
  visitEvents?: number;
  maxFrameBytes?: number;
}

type EndError = { code: string; message: string };

export class Watches {
  private readonly watchers = new Set<Watcher>();
  /** Open watches per connection (absent: none). */
  private readonly perConn = new Map<ClientConn, Set<Watcher>>();
  private readonly groups = new Map<string, Group>();

  /** The fan-out log: position p is log[p - logBase]; positions before logBase + logHead are dropped. */
  private log: Logged[] = [];
  private logBase = 0;
  private logHead = 0;
  /** Bytes of all events logged so far. */
  private bytesLogged = 0;

  private turnScheduled = false;
  /** During a turn: the frames for each connection, written together when the turn ends. */
  private outbox: Map<ClientConn, Outgoing> | null = null;
  /** Round-robin position over the watchers, kept from one turn to the next. */
  private rr: Iterator<Watcher> = this.watchers.values();
  /** Groups whose parts were built this turn (their parts are dropped when it ends). */
  private readonly built: Group[] = [];

  private readonly defer: (fn: () => void) => void;
  private readonly backlogBytes: number;
  private readonly checksPerTurn: number;
  private readonly bytesPerTurn: number;
  private readonly visitEvents: number;
  private readonly maxFrameBytes: number;

  /** Watches being served. */
  get count(): number {
    return this.watchers.size;
  }

  constructor(
    private readonly kv: KvStore,
    private readonly nodeId: number,
    opts: WatchesOptions = {},
  ) {
    this.defer = opts.defer ?? ((fn) => void setImmediate(fn));
    this.backlogBytes = opts.backlogBytes ?? MAX_WATCH_BACKLOG_BYTES;
    this.checksPerTurn = opts.checksPerTurn ?? WATCH_FANOUT_CHECKS_PER_TURN;
    this.bytesPerTurn = opts.bytesPerTurn ?? WATCH_FANOUT_BYTES_PER_TURN;
    this.visitEvents = opts.visitEvents ?? WATCH_VISIT_EVENTS;
    this.maxFrameBytes = opts.maxFrameBytes ?? MAX_FRAME_BYTES;
    // The history the store already keeps, so a watch can replay it.
    const history = kv.eventsSince(kv.compactRevision, { key: new Uint8Array(0), prefix: true });
    if (history !== "compacted") this.append(history);
    kv.onEvents((events) => this.publish(events));
  }

  /** Position after the last logged event. */
  private get logEnd(): number {
    return this.logBase + this.log.length;
  }

  private at(position: number): Logged {
    return this.log[position - this.logBase]!;
  }

  private bytesBefore(position: number): number {
    return position < this.logEnd ? this.at(position).before : this.bytesLogged;
  }

  /** Starts a watch; returns "ok", or the error code the watch was refused or ended with at once. */
  start(conn: ClientConn, id: number, selector: KeySelector, fromRevision: number, prevKv = false): "ok" | "TOO_MANY_WATCHES" | "COMPACTED" {
    const mine = this.perConn.get(conn);
    const refusal =
      (mine?.size ?? 0) >= MAX_WATCHES_PER_CONNECTION
        ? `${MAX_WATCHES_PER_CONNECTION} watches on this connection`
        : this.watchers.size >= MAX_WATCHES_TOTAL
          ? `${MAX_WATCHES_TOTAL} watches in total`
          : null;
    if (refusal) {
      const message = `node ${this.nodeId} already holds ${refusal}, its limit; close watches you no longer need, or watch a prefix instead of many keys`;
      send(conn, { k: "res", id, ok: false, code: "TOO_MANY_WATCHES", message });
      return "TOO_MANY_WATCHES";
    }
    if (!Number.isSafeInteger(fromRevision)) throw new KvError("BAD_COMMAND", `fromRevision must be an integer, got ${fromRevision}`);
    const span = spanOf(parseRangeRequest(selector));
    if (fromRevision > 0 && fromRevision < this.kv.compactRevision) {
      send(conn, { k: "ev", id, error: { code: "COMPACTED", message: `revision ${fromRevision} is compacted on node ${this.nodeId} (oldest kept: ${this.kv.compactRevision})` } });
      return "COMPACTED";
    }
    send(conn, { k: "res", id, ok: true, result: { watching: true, revision: this.kv.revision } });
    const w: Watcher = {
      conn,
      id,
      group: this.group(span, prevKv),
      idRest: mapRest(encodePayload({ k: "ev", id }), 2),
      from: fromRevision,
      // From a past revision: its first event in the log (which holds the store's whole history).
      next: fromRevision > 0 ? this.firstAtOrAfter(fromRevision) : this.logEnd,
    };
    w.group.watchers++;
    this.watchers.add(w);
    if (mine) mine.add(w);
    else this.perConn.set(conn, new Set([w]));
    if (w.next < this.logEnd) this.scheduleTurn();
    return "ok";
  }

  /** The connection closed: forget its watches. */
  dropConn(conn: ClientConn): void {
    const mine = this.perConn.get(conn);
    if (!mine) return;
    for (const w of mine) this.remove(w);
  }

  /** The changes a snapshot skipped over are not in this node's history: watchers resume elsewhere. */
  endAfterSnapshot(): void {
    for (const w of this.watchers) this.end(w, { code: "COMPACTED", message: "this node installed a snapshot; resume the watch on another node" });
    this.logBase = this.logEnd;
    this.log = [];
    this.logHead = 0;
  }

  private group(span: Span, prevKv: boolean): Group {
    const key = JSON.stringify([span.start, span.end, span.single, prevKv]);
    let g = this.groups.get(key);
    if (!g) this.groups.set(key, (g = { key, span, prevKv, watchers: 0, builtFrom: -1, builtLimit: -1, builtTo: -1, parts: [] }));
    return g;
  }

  private remove(w: Watcher): void {
    if (!this.watchers.delete(w)) return;
    const mine = this.perConn.get(w.conn)!;
    mine.delete(w);
    if (!mine.size) this.perConn.delete(w.conn);
    if (--w.group.watchers === 0) this.groups.delete(w.group.key);
  }

  /** Ends one watch with an error frame (its connection stays open for its other requests). */
  private end(w: Watcher, error: EndError): void {
    this.remove(w);
    const frame = { k: "ev", id: w.id, error };
    if (this.outbox) this.queue(w.conn, encodeFrame(frame));
    else send(w.conn, frame);
  }

  /** A revision was applied: log its events; a turn sends them. Runs inside apply: cheap, never throws. */
  private publish(events: readonly WatchEvent[]): void {
    this.append(events);
    if (this.watchers.size) this.scheduleTurn();
    else this.trim(this.logEnd);
  }

  private append(events: readonly WatchEvent[]): void {
    for (const event of events) {
      this.log.push({ event, key: bytesToKey(event.key), before: this.bytesLogged });
      this.bytesLogged += eventBytes(event);
    }
  }

  /** Drops the log before `position`, but never the store's history (a new watch may replay it). */
  private trim(position: number): void {
    const compactRevision = this.kv.compactRevision;
    while (this.logHead < this.log.length && this.logBase + this.logHead < position && this.log[this.logHead]!.event.modRevision < compactRevision) {
      this.logHead++;
    }
    if (this.logHead > 1024 && this.logHead * 2 > this.log.length) {
      this.log = this.log.slice(this.logHead);
      this.logBase += this.logHead;
      this.logHead = 0;
    }
  }

  /** The position of the first logged event of `revision` or later. */
  private firstAtOrAfter(revision: number): number {
    let lo = this.logHead;
    let hi = this.log.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.log[mid]!.event.modRevision < revision) lo = mid + 1;
      else hi = mid;
    }
    return this.logBase + lo;
  }

  private scheduleTurn(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    this.defer(() => this.turn());
  }

  /**
   * One turn of fan-out: ends watchers over their backlog limit, then visits watchers round-robin until
   * all have every logged event or the turn has done its share (checked between visits), and sends each
   * connection its frames in one write. Schedules the next turn if watchers are still behind.
   */
  private turn(): void {
    this.turnScheduled = false;
    const end = this.logEnd;
    this.outbox = new Map();
    try {
      this.endLaggards();
      let checks = 0;
      let bytes = 0;
      let caughtUp = 0; // watchers seen in a row with nothing left to send
      while (caughtUp < this.watchers.size && checks < this.checksPerTurn && bytes < this.bytesPerTurn) {
        let r = this.rr.next();
        if (r.done) r = (this.rr = this.watchers.values()).next();
        const w = r.value as Watcher;
        if (w.next >= end) {
          caughtUp++;
          continue;
        }
        caughtUp = 0;
        checks++;
        try {
          const cost = this.visit(w, end);
          checks += cost.checks;
          bytes += cost.bytes;
        } catch (err) {
          // A bug in one watch's fan-out ends that watch, never the node.
          this.end(w, { code: "INTERNAL", message: `node ${this.nodeId} could not send the events: ${(err as Error).message}` });
        }
      }
      if (caughtUp < this.watchers.size) this.scheduleTurn();
    } finally {
      for (const g of this.built) {
        g.parts = [];
        g.builtFrom = g.builtLimit = g.builtTo = -1;
      }
      this.built.length = 0;
      const outbox = this.outbox;
      this.outbox = null;
      // Not taken: the connection is closed (a slow reader was cut off); its watches go with it.
      for (const [conn, out] of outbox) if (conn.closed || !conn.sendEncoded(out.write())) this.dropConn(conn);
    }
  }

  /**
   * Ends the watchers that still need more than the backlog limit of events the store's history no
   * longer holds (the log keeps those for them alone), then drops the log no watcher needs. A watcher
   * within the history costs no memory of its own: it may replay all of it.
   */
  private endLaggards(): void {
    const inHistory = this.firstAtOrAfter(this.kv.compactRevision);
    const historyStart = this.bytesBefore(inHistory);
    // Scans every watcher: only once the log holds a quarter of the limit beyond the history (before
    // that no watcher can be over it, and that much is kept meanwhile).
    if (historyStart - this.bytesBefore(this.logBase + this.logHead) <= this.backlogBytes / 4) return;
    let needed = this.logEnd;
    for (const w of this.watchers) {
      const beyond = historyStart - this.bytesBefore(w.next);
      if (beyond > this.backlogBytes) {
        const revision = this.at(w.next).event.modRevision;
        this.end(w, {
          code: "WATCHER_TOO_SLOW",
          message: `watch ${w.id} fell behind on node ${this.nodeId}: it still needs ${beyond} bytes of events that are no longer in the node's history, over the ${this.backlogBytes}-byte limit; it had every event before revision ${revision}: watch again from revision ${revision} on a node that still has it, or read the keys again and watch from the revision of that read`,
        });
      } else if (w.next < needed) needed = w.next;
    }
    this.trim(needed);
  }

  /**
   * Sends `w` the events at [w.next, about w.next + visitEvents) that it watches, no more than about the
   * turn's byte budget of them, ending on a revision boundary, and moves it past them. Returns the work
   * done: events checked (none if another watcher of its group had the same frames built this turn) and
   * bytes of frames.
   */
  private visit(w: Watcher, end: number): { checks: number; bytes: number } {
    let from = w.next;
    let checks = 0;
    // Revisions older than the watch asked for (a lagging node still applying them) are skipped.
    while (from < end && this.at(from).event.modRevision < w.from && checks < this.visitEvents) {
      from++;
      checks++;
    }
    if (from === end || this.at(from).event.modRevision < w.from) {
      w.next = from;
      return { checks, bytes: 0 };
    }
    let limit = Math.min(end, from + this.visitEvents);
    while (limit < end && this.at(limit).event.modRevision === this.at(limit - 1).event.modRevision) limit++;
    const g = w.group;
    let bytes = 0;
    if (g.builtFrom !== from || g.builtLimit !== limit) {
      this.build(g, from, limit);
      g.builtFrom = from;
      g.builtLimit = limit;
      this.built.push(g);
      checks += g.builtTo - from;
      for (const p of g.parts) bytes += p.rest.length;
    }
    w.next = g.builtTo;
    for (const part of g.parts) {
      const payloadBytes = 1 + w.idRest.length + part.rest.length;
      if (payloadBytes > this.maxFrameBytes) {
        this.end(w, { code: "EVENTS_TOO_LARGE", message: `the events of one revision are ${payloadBytes} bytes, over the ${this.maxFrameBytes}-byte frame limit` });
        break;
      }
      this.queue(w.conn, { idRest: w.idRest, part });
      bytes += FRAME_HEADER_BYTES + payloadBytes;
    }
    return { checks, bytes };
  }

  /**
   * Into g.parts: the frames of the events at [from, limit) that group `g` watches, as few as fit
   * MAX_RESULT_BYTES of keys and values each, stopping at the first revision boundary once they hold the
   * turn's byte budget; g.builtTo is where they stop. A frame that ends inside a revision says `more` (the
   * client delivers a revision once its last frame is in); `revision` is the revision of the frame's last
   * event.
   */
  private build(g: Group, from: number, limit: number): void {
    const parts: Part[] = [];
    let events: WatchEvent[] = [];
    let bytes = 0;
    let total = 0;
    let p = from;
    for (; p < limit; p++) {
      const logged = this.at(p);
      if (total >= this.bytesPerTurn && logged.event.modRevision !== this.at(p - 1).event.modRevision) break;
      if (!inSpan(logged.key, g.span)) continue;
      const e = g.prevKv ? logged.event : withoutPrevValue(logged.event);
      const size = e.key.length + (e.value?.length ?? 0) + (e.prevValue?.length ?? 0) + RESULT_KEY_OVERHEAD_BYTES;
      if (events.length > 0 && bytes + size > MAX_RESULT_BYTES) {
        const revision = events[events.length - 1]!.modRevision;
        parts.push(part(revision, events, revision === e.modRevision));
        events = [];
        bytes = 0;
      }
      events.push(e);
      bytes += size;
      total += size;
    }
    if (events.length) parts.push(part(events[events.length - 1]!.modRevision, events, false));
    g.parts = parts;
    g.builtTo = p;
  }

  /** A frame for `conn`, into this turn's outbox. */
  private queue(conn: ClientConn, frame: Uint8Array | EventFrameParts): void {
    let out = this.outbox!.get(conn);
    if (!out) this.outbox!.set(conn, (out = new Outgoing()));
    out.add(frame);
  }
}

/** An event frame: the watcher's part of it and the part shared by its group. */
interface EventFrameParts {
  idRest: Uint8Array;
  part: Part;
}

/** The frames of one turn for one connection, written into one buffer (one write) when it ends. */
class Outgoing {
  private readonly frames: (Uint8Array | EventFrameParts)[] = [];
  private bytes = 0;

  add(frame: Uint8Array | EventFrameParts): void {
    this.frames.push(frame);
    this.bytes += frame instanceof Uint8Array ? frame.length : FRAME_HEADER_BYTES + 1 + frame.idRest.length + frame.part.rest.length;
  }

  write(): Uint8Array {
    const out = new Uint8Array(this.bytes);
    let at = 0;
    for (const f of this.frames) {
      if (f instanceof Uint8Array) {
        at = copy(out, at, f);
        continue;
      }
      const payloadBytes = 1 + f.idRest.length + f.part.rest.length;
      out[at++] = payloadBytes >>> 24;
      out[at++] = (payloadBytes >>> 16) & 0xff;
      out[at++] = (payloadBytes >>> 8) & 0xff;
      out[at++] = payloadBytes & 0xff;
      out[at++] = CBOR_MAP + 2 + f.part.entries; // {k, id} and the part's entries
      at = copy(out, at, f.idRest);
      at = copy(out, at, f.part.rest);
    }
    return out;
  }
}

/** Copies `src` into `out` at `at` (small pieces byte by byte: cheaper than set() for a few bytes). */
function copy(out: Uint8Array, at: number, src: Uint8Array): number {
  if (src.length < 64) for (let i = 0; i < src.length; i++) out[at + i] = src[i]!;
  else out.set(src, at);
  return at + src.length;
}

function part(revision: number, events: WatchEvent[], more: boolean): Part {
  const entries = more ? 3 : 2;
  return { entries, rest: mapRest(encodePayload(more ? { revision, events, more } : { revision, events }), entries) };
}

/** The CBOR of a map of `entries` entries without its header (checked to be that map's). */
function mapRest(encoded: Uint8Array, entries: number): Uint8Array {
  // Major type 5 (map); the count in the low bits, or in the 1, 2 or 4 bytes after them.
  const first = encoded[0]!;
  const view = new DataView(encoded.buffer, encoded.byteOffset, encoded.byteLength);
  const [count, headerBytes] =
    first < 0xb8 ? [first - CBOR_MAP, 1] : first === 0xb8 ? [encoded[1]!, 2] : first === 0xb9 ? [view.getUint16(1), 3] : first === 0xba ? [view.getUint32(1), 5] : [-1, 0];
  if (first < CBOR_MAP || count !== entries) throw new Error(`expected the CBOR header of a map of ${entries}, got 0x${first.toString(16)}`);
  return encoded.slice(headerBytes);
}

/** The event without its previous value (for watchers that did not ask for it). */
function withoutPrevValue(e: WatchEvent): WatchEvent {
  if (e.prevValue === undefined) return e;
  const { prevValue: _omitted, ...rest } = e;
  return rest;
}

function send(conn: ClientConn, frame: unknown): void {
  if (!conn.closed) conn.send(frame);
}
