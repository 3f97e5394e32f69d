// The raftkv client library: finds the leader, follows redirects, retries with the same request id so
// a retried write is applied at most once, and fails with a clear error when no quorum answers.
//
//   const c = new RaftKvClient({ endpoints: ["127.0.0.1:7001", "127.0.0.1:7002"] });
//   await c.put("10", "42");
//   const kv = await c.get("10");        // linearizable; { serializable: true } for a local read
//   await c.delete("10");
//   c.close();

import { formatAddr, parseEndpoint } from "../config";
import { bytesToKey, keyToBytes, prefixEnd } from "../kv/bytes";
import { validateCommand } from "../kv/codec";
import { isKvError } from "../kv/errors";
import type {
  Command,
  CompactResult,
  Compare,
  DelResult,
  KeyValue,
  LeaseGrantResult,
  LeaseKeepAliveResult,
  LeaseRevokeResult,
  PutResult,
  RangeRequest,
  RangeResult,
  SessionRegisterResult,
  SessionTtlResult,
  TxnCommand,
  TxnResult,
} from "../kv/types";
import { DialError, dialFrames, FrameTooLargeError, RefusedError, TlsError, type FramedConn, type TlsMaterial } from "../net";
import { MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION, type ClientOp, type LeaseStatus, type MemberList, type NodeStatus, type ResponseFrame, type SnapshotSaveHeader } from "../protocol";
import { RaftKvError } from "./errors";
import { Watch, type WatchOptions } from "./watch";

export { RaftKvError, Watch, type WatchOptions };

export type Bytes = string | Uint8Array;

export interface ClientOptions {
  /** "host:port" of any cluster nodes; the client finds the leader itself. */
  endpoints: string[];
  /** Total time for one call, retries included. Default 5000 ms. */
  timeoutMs?: number;
  /**
   * A name for this client. Not a session: sessions for exactly-once writes are registered with the
   * cluster (unique ids), so any number of processes may use the same clientId.
   */
  clientId?: string;
  /**
   * Give up at once, instead of retrying until timeoutMs, when every endpoint has failed
   * FAIL_FAST_ROUNDS times in a row in a way retrying rarely fixes: connection refused, host not found,
   * or a server that is not raftkv. The CLI sets it; a program that must ride out a whole-cluster restart
   * leaves it off (the error then comes at the deadline, with the same code and message).
   */
  failFast?: boolean;
  /** Mutual TLS: the cluster CA and this client's certificate and key (PEM), for a cluster run with --certs. */
  tls?: TlsMaterial;
}

/**
 * Answers that say "try again (elsewhere)". Every other error code is the request's own answer
 * (VALUE_TOO_LARGE, KEY_TOO_LARGE, RESULT_TOO_LARGE, BAD_REQUEST, PERMISSION_DENIED, SESSION_EXPIRED, ...):
 * it is returned at once and never retried.
 */
const RETRYABLE = new Set(["NOT_LEADER", "NO_LEADER", "LEADERSHIP_LOST", "TOO_BUSY", "SHUTTING_DOWN", "CONNECTION"]);
const ATTEMPT_TIMEOUT_MS = 2000;
const MAX_BACKOFF_MS = 50;
/** Chunk requests of a snapshot save kept in flight (each answer is at most one chunk, 1 MiB). */
const SNAPSHOT_CHUNKS_IN_FLIGHT = 4;
/** failFast: full rounds over the endpoints, each failing to connect, before giving up. */
export const FAIL_FAST_ROUNDS = 2;

/** Why an endpoint could not be used at all: the cluster is not there, as opposed to not answering. */
type Unusable = { kind: "refused" | "dns" | "foreign"; message: string };

/** The server sent bytes that are not raftkv frames. */
class ForeignServerError extends Error {}

function unusable(target: string, err: unknown): Unusable | undefined {
  if (err instanceof ForeignServerError) return { kind: "foreign", message: `${target} is not a raftkv node (${err.message})` };
  if (!(err instanceof DialError)) return undefined;
  const code = (err.cause as { code?: unknown } | undefined)?.code;
  if (code === "ECONNREFUSED") return { kind: "refused", message: `${target} refused the connection (nothing listens there: wrong port, or the node is down)` };
  if (typeof code === "string" && (code === "ENOTFOUND" || code.startsWith("EAI_"))) {
    return { kind: "dns", message: `${target}: host not found (${code})` };
  }
  return undefined;
}

/** The error for "no endpoint could be used": NOT_RAFTKV if every one is a foreign server, else UNREACHABLE. */
function unreachable(failures: Map<string, Unusable>): RaftKvError {
  const all = [...failures.values()];
  if (all.every((f) => f.kind === "foreign")) return new RaftKvError("NOT_RAFTKV", all.map((f) => f.message).join("; "));
  return new RaftKvError("UNREACHABLE", `cannot connect to any endpoint: ${all.map((f) => f.message).join("; ")}`);
}

/** How often a paged range is read again from its start when a later page lost the first one's revision. */
const MAX_RANGE_RESTARTS = 3;

/** A later page of a range could not be read at the first page's revision. */
class PageRevisionLost extends Error {
  constructor(override readonly cause: RaftKvError) {
    super(cause.message);
  }
}

const te = new TextEncoder();
const td = new TextDecoder();
export const toBytes = (b: Bytes): Uint8Array => (typeof b === "string" ? te.encode(b) : b);
export const toText = (b: Uint8Array): string => td.decode(b);


interface Conn {
  conn: FramedConn;
  pending: Map<number, { resolve: (r: ResponseFrame) => void; reject: (e: Error) => void }>;
  /** Requests sent and not yet settled, and callers waiting for one of them to settle. */
  inFlight: number;
  waiting: (() => void)[];
}

export class RaftKvClient {
  readonly endpoints: string[];
  readonly timeoutMs: number;
  readonly clientId: string;
  readonly failFast: boolean;
  private readonly tls: TlsMaterial | undefined;
  private readonly freeLanes: { id: string; seq: number }[] = [];
  private nextId = 1;
  private leader: string | null = null;
  private rr = 0;
  private readonly conns = new Map<string, Promise<Conn>>();
  private closed = false;

  constructor(opts: ClientOptions) {
    if (!opts.endpoints.length) throw new RaftKvError("BAD_REQUEST", "no endpoints given");
    this.endpoints = [...new Set(opts.endpoints.map((e) => formatAddr(parseEndpoint(e))))]; // each once: failFast counts endpoints
    this.timeoutMs = opts.timeoutMs ?? 5000;
    if (!Number.isFinite(this.timeoutMs) || this.timeoutMs <= 0) throw new RaftKvError("BAD_REQUEST", `timeoutMs must be a positive number of ms, got ${opts.timeoutMs}`);
    this.failFast = opts.failFast ?? false;
    this.clientId = opts.clientId ?? crypto.randomUUID();
    this.tls = opts.tls;
    if (this.clientId.length > 100) throw new RaftKvError("BAD_REQUEST", "clientId must be at most 100 characters");
  }

  // ---- the public API -------------------------------------------------------------------

  /** Store value under key. Resolves once a majority has it on disk. */
  async put(key: Bytes, value: Bytes, opts: { lease?: number } = {}): Promise<PutResult> {
    return (await this.write({ op: "put", key: toBytes(key), value: toBytes(value), ...(opts.lease ? { lease: opts.lease } : {}) })) as PutResult;
  }

  /** The key's value and metadata, or null if it does not exist. */
  async get(key: Bytes, opts: { serializable?: boolean } = {}): Promise<KeyValue | null> {
    const r = await this.range({ key: toBytes(key) }, opts);
    return r.kvs[0] ?? null;
  }

  /**
   * The keys of a range. A node answers in pages of bounded size; this reads page after page at the
   * revision of the first (so the whole result is one consistent state) until `range.limit` keys or the
   * end of the range, and returns them as one result.
   */
  async range(range: RangeRequest, opts: { serializable?: boolean } = {}): Promise<RangeResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.rangePages(range, opts.serializable ?? false);
      } catch (err) {
        // A later page answered by another node (after a leader change, or a lagging one for a
        // serializable read) may lack the first page's revision: read again from the start.
        const retry = err instanceof PageRevisionLost && attempt < MAX_RANGE_RESTARTS;
        if (!retry) throw err instanceof PageRevisionLost ? err.cause : err;
      }
    }
  }

  private async rangePages(range: RangeRequest, serializable: boolean): Promise<RangeResult> {
    const first = (await this.call({ op: "range", range, serializable })) as RangeResult;
    if (!first.more || first.nextKey === undefined) return first;
    const limit = range.limit ?? 0;
    const kvs = [...first.kvs];
    let end: Uint8Array | undefined = range.rangeEnd;
    if (range.prefix) {
      const e = prefixEnd(bytesToKey(range.key));
      end = e === null ? new Uint8Array([0]) : keyToBytes(e);
    }
    let page = first;
    while (page.more && page.nextKey !== undefined && (limit === 0 || kvs.length < limit)) {
      const next: RangeRequest = { key: page.nextKey, revision: first.revision };
      if (end !== undefined) next.rangeEnd = end;
      if (limit !== 0) next.limit = limit - kvs.length;
      if (range.keysOnly) next.keysOnly = true;
      try {
        page = (await this.call({ op: "range", range: next, serializable })) as RangeResult;
      } catch (err) {
        if (err instanceof RaftKvError && (err.code === "COMPACTED" || err.code === "FUTURE_REVISION")) throw new PageRevisionLost(err);
        throw err;
      }
      kvs.push(...page.kvs);
    }
    return { op: "range", revision: first.revision, kvs, count: first.count, more: page.more };
  }

  /** Delete a key (or, with prefix, every key under it). Resolves with how many were deleted. */
  async delete(key: Bytes, opts: { prefix?: boolean } = {}): Promise<DelResult> {
    return (await this.write({ op: "del", key: toBytes(key), ...(opts.prefix ? { prefix: true } : {}) })) as DelResult;
  }

  async txn(txn: Omit<TxnCommand, "op">): Promise<TxnResult> {
    return (await this.write({ op: "txn", ...txn })) as TxnResult;
  }

  /** Set key to value only if its current value is `expected` (null: only if the key does not exist). */
  async cas(key: Bytes, expected: Bytes | null, value: Bytes): Promise<TxnResult> {
    const k = toBytes(key);
    const compare: Compare =
      expected === null ? { key: k, target: "absent" } : { key: k, target: "value", result: "equal", value: toBytes(expected) };
    return this.txn({ compare: [compare], success: [{ op: "put", key: k, value: toBytes(value) }], failure: [{ op: "range", key: k }] });
  }

  /** A lease that lives ttlMs unless kept alive; keys put with it are deleted when it expires. */
  async leaseGrant(ttlMs: number, id = 0): Promise<LeaseGrantResult> {
    return (await this.write({ op: "leaseGrant", id, ttlMs, now: 0 })) as LeaseGrantResult;
  }

  async leaseKeepAlive(id: number): Promise<LeaseKeepAliveResult> {
    return (await this.write({ op: "leaseKeepAlive", id, now: 0 })) as LeaseKeepAliveResult;
  }

  async leaseRevoke(id: number): Promise<LeaseRevokeResult> {
    return (await this.write({ op: "leaseRevoke", id })) as LeaseRevokeResult;
  }

  /** The leases by id (at most MAX_LEASES_LISTED; `more` if there are others), with time left by the leader's clock. */
  async leaseList(): Promise<{ leases: LeaseStatus[]; more: boolean }> {
    return (await this.call({ op: "leases" })) as { leases: LeaseStatus[]; more: boolean };
  }

  /** One lease: granted TTL, time left by the leader's clock, and its keys. LEASE_NOT_FOUND if none. */
  async leaseTimeToLive(id: number): Promise<LeaseStatus & { keys: Uint8Array[] }> {
    return (await this.call({ op: "leases", lease: id })) as LeaseStatus & { keys: Uint8Array[] };
  }

  /** Forget the history through `revision`: reads and watches at or before it then fail with COMPACTED. */
  async compact(revision: number): Promise<CompactResult> {
    return (await this.write({ op: "compact", revision })) as CompactResult;
  }

  /** Set the cluster-wide session TTL (through the log, so every node expires sessions alike). */
  async setSessionTtl(ttlMs: number): Promise<SessionTtlResult> {
    return (await this.write({ op: "sessionTtl", ttlMs })) as SessionTtlResult;
  }

  /**
   * Every change to key (or, with prefix, to keys under it) as it is applied, from any node; resumes on
   * another node without gaps or repeats if this one dies. `for await (const ev of watch) ...`; close() ends it.
   */
  watch(key: Bytes, opts: WatchOptions & { prefix?: boolean; rangeEnd?: Bytes } = {}): Watch {
    const selector = { key: toBytes(key), ...(opts.prefix ? { prefix: true } : {}), ...(opts.rangeEnd ? { rangeEnd: toBytes(opts.rangeEnd) } : {}) };
    return new Watch(this.endpoints, selector, opts, this.tls);
  }

  /** The members as the leader sees them: voters, learners, each one's match index and lag. */
  async members(): Promise<MemberList> {
    return (await this.call({ op: "member", action: "list" })) as MemberList;
  }

  /**
   * Change one member (answered once the change is committed): add joins `id` at `addr` as a learner,
   * promote makes a caught-up learner a voter, remove takes a voter or learner out.
   */
  async memberChange(action: "add" | "promote" | "remove", id: number, addr?: string): Promise<MemberList> {
    return (await this.call({ op: "member", action, node: id, ...(addr !== undefined ? { addr } : {}) })) as MemberList;
  }

  /** Hand leadership to voter `id`; resolves once it leads. */
  async leaderTransfer(id: number): Promise<{ leader: number; term: number }> {
    return (await this.call({ op: "leaderTransfer", node: id })) as { leader: number; term: number };
  }

  /**
   * Stream a consistent snapshot of the state machine from the leader (`raftkv snapshot save`): the
   * leader confirms its leadership, captures its applied state and answers with the header (revision,
   * index, size, sha256); then the chunks are pulled in order, a few requests ahead, from that node and
   * handed to `onChunk` (awaited: a slow sink slows the transfer, never piles chunks up in memory). The
   * caller checks the checksum. The capture may take a while on a large state: it must fit in the
   * client's timeout.
   */
  async snapshotSave(onHeader: (h: SnapshotSaveHeader) => void | Promise<void>, onChunk: (data: Uint8Array) => void | Promise<void>): Promise<SnapshotSaveHeader> {
    const answered: { uncertain: boolean; by?: string } = { uncertain: false };
    const header = (await this.call({ op: "snapshotSave" }, answered, this.timeoutMs)) as SnapshotSaveHeader;
    const addr = answered.by!;
    if (!Number.isSafeInteger(header.size) || header.size < 0 || !Number.isSafeInteger(header.chunkBytes) || header.chunkBytes <= 0) {
      throw new RaftKvError("INTERNAL", `${addr} answered the snapshot save with a malformed header (size ${header.size}, chunks of ${header.chunkBytes} bytes)`);
    }
    await onHeader(header);
    const request = (offset: number) => {
      const p = this.attempt(addr, { op: "snapshotChunk", save: header.save, offset }, Date.now() + this.timeoutMs);
      p.catch(() => {}); // awaited in order below; a later one may fail before an earlier one is awaited
      return p;
    };
    const inFlight: { offset: number; res: Promise<ResponseFrame> }[] = [];
    let next = 0;
    let received = 0;
    while (received < header.size) {
      while (next < header.size && inFlight.length < SNAPSHOT_CHUNKS_IN_FLIGHT) {
        inFlight.push({ offset: next, res: request(next) });
        next += header.chunkBytes;
      }
      const { offset, res } = inFlight.shift()!;
      let r: ResponseFrame;
      try {
        r = await res;
      } catch (err) {
        throw new RaftKvError("UNAVAILABLE", `snapshot transfer from ${addr} broke off at byte ${offset} of ${header.size}: ${(err as Error).message}; run the save again`);
      }
      if (!r.ok) throw new RaftKvError(r.code, `snapshot transfer from ${addr} failed at byte ${offset} of ${header.size}: ${r.message}`);
      const data = (r.result as { data?: unknown }).data;
      const expected = Math.min(header.chunkBytes, header.size - offset);
      if (!(data instanceof Uint8Array) || data.length !== expected) {
        throw new RaftKvError("INTERNAL", `snapshot chunk at byte ${offset} from ${addr} is malformed (expected ${expected} bytes)`);
      }
      await onChunk(data);
      received += data.length;
    }
    return header;
  }

  /** Status of one node (every endpoint when called through statusAll). */
  async status(endpoint: string): Promise<NodeStatus> {
    const addr = formatAddr(parseEndpoint(endpoint));
    const deadline = Date.now() + this.timeoutMs;
    let res: ResponseFrame;
    try {
      res = await this.attempt(addr, { op: "status" }, deadline);
    } catch (err) {
      throw err instanceof TlsError ? new RaftKvError("TLS", err.message) : err;
    }
    if (!res.ok) throw new RaftKvError(res.code, res.message);
    return res.result as NodeStatus;
  }

  /** Status of every endpoint; unreachable ones are reported with the error. */
  async statusAll(): Promise<{ endpoint: string; status?: NodeStatus; error?: string }[]> {
    let tlsFailure: RaftKvError | undefined;
    const rows = await Promise.all(
      this.endpoints.map(async (endpoint) => {
        try {
          return { endpoint, status: await this.status(endpoint) };
        } catch (err) {
          if (err instanceof RaftKvError && err.code === "TLS") tlsFailure = err;
          return { endpoint, error: (err as Error).message };
        }
      }),
    );
    // No node answered and TLS is why: that is this client's configuration, not an outage.
    if (tlsFailure && !rows.some((r) => r.status)) throw tlsFailure;
    return rows;
  }

  close(): void {
    this.closed = true;
    for (const p of this.conns.values()) {
      p.then((c) => c.conn.close(), () => {});
    }
    this.conns.clear();
  }

  // ---- the retry loop -------------------------------------------------------------------

  /**
   * A write carries (session id, sequence); every retry of it reuses them, so it applies at most once.
   * The server remembers one result per session, so each write in flight gets a session ("lane") of its
   * own, registered through the log (ids are unique cluster-wide, so a restarted process never reuses
   * one). Lanes are reused; their sequence numbers only grow. A command over a limit is refused here,
   * at once, with its code (VALUE_TOO_LARGE, ...), and never sent.
   *
   * SESSION_EXPIRED (the lane sat idle past the cluster's session TTL): when no attempt of this write
   * can have been applied, a fresh lane is registered and the write sent again; otherwise the caller
   * gets SESSION_EXPIRED: the outcome is unknown.
   */
  async write(cmd: Command): Promise<unknown> {
    try {
      validateCommand(cmd);
    } catch (err) {
      if (isKvError(err)) throw new RaftKvError(err.code, err.message);
      throw err;
    }
    for (let registered = 0; ; registered++) {
      const lane = this.freeLanes.pop() ?? { id: await this.registerSession(), seq: 0 };
      lane.seq++;
      const attempts = { uncertain: false };
      try {
        const result = await this.call({ op: "write", cmd, clientId: lane.id, seq: lane.seq }, attempts);
        this.freeLanes.push(lane);
        return result;
      } catch (err) {
        if (!(err instanceof RaftKvError) || err.code !== "SESSION_EXPIRED") {
          this.freeLanes.push(lane);
          throw err;
        }
        // The lane is gone on the server: drop it.
        if (!attempts.uncertain && registered === 0) continue;
        throw new RaftKvError(
          "SESSION_EXPIRED",
          "outcome unknown: the session expired while the write was being retried, so it may or may not have " +
            `been applied; read the state before trying again (${err.message})`,
        );
      }
    }
  }

  private async registerSession(): Promise<string> {
    return ((await this.call({ op: "write", cmd: { op: "sessionRegister" } })) as SessionRegisterResult).sessionId;
  }

  /**
   * Send `op` until it gets an answer or the deadline passes. `attempts.uncertain` is set once an
   * attempt may have been executed without an answer (lost connection, timeout, lost leadership).
   */
  private async call(op: ClientOp, attempts?: { uncertain: boolean; by?: string }, attemptMs = ATTEMPT_TIMEOUT_MS): Promise<unknown> {
    if (this.closed) throw new RaftKvError("BAD_REQUEST", "client is closed");
    const deadline = Date.now() + this.timeoutMs;
    let lastCode = "";
    let lastMessage = "";
    // Short, capped backoff: during an election the new leader is usually known within a few hundred
    // ms, and a client asleep for long after that only adds to the outage it sees.
    let backoff = 10;
    let redirects = 0;
    let noLeader = ""; // the most telling failure: a live node that cannot see a majority
    const tried = new Set<string>();
    const unusableNow = new Map<string, Unusable>(); // endpoints that failed to connect since the last answer
    let unusableRounds = 0;
    while (Date.now() < deadline) {
      const target = this.leader ?? this.endpoints[this.rr++ % this.endpoints.length]!;
      tried.add(target);
      let res: ResponseFrame;
      try {
        res = await this.attempt(target, op, deadline, attemptMs);
      } catch (err) {
        // A TLS or certificate problem is this client's configuration, not an outage: no retry.
        if (err instanceof TlsError) throw new RaftKvError("TLS", err.message);
        if (err instanceof RaftKvError) throw err; // refused before it was sent: never retried
        if (attempts) attempts.uncertain = true;
        if (this.leader === target) this.leader = null;
        lastCode = "CONNECTION";
        lastMessage = `${target}: ${(err as Error).message}`;
        const why = unusable(target, err);
        if (why) unusableNow.set(target, why);
        else unusableNow.delete(target);
        if (this.failFast && unusableNow.size === this.endpoints.length) {
          // A full round in which every endpoint failed to connect.
          if (++unusableRounds >= FAIL_FAST_ROUNDS) throw unreachable(unusableNow);
          unusableNow.clear();
        }
        if (tried.size >= this.endpoints.length) {
          await this.pause(backoff, deadline);
          backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        }
        continue;
      }
      if (res.ok) {
        this.leader = target;
        if (attempts) attempts.by = target;
        return res.result;
      }
      unusableNow.clear();
      unusableRounds = 0;
      lastCode = res.code;
      lastMessage = res.message;
      if (res.code === "NO_LEADER") noLeader = res.message;
      if (res.code === "LEADERSHIP_LOST" && attempts) attempts.uncertain = true;
      if (!RETRYABLE.has(res.code)) throw new RaftKvError(res.code, res.message);
      if (res.code === "NOT_LEADER" && res.leader && redirects++ < 3) {
        // Follow the redirect at once; after a few in a row, views disagree: back off.
        this.leader = res.leader.addr;
        continue;
      }
      redirects = 0;
      this.leader = null;
      await this.pause(backoff, deadline);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
    if (noLeader) throw new RaftKvError("NO_QUORUM", noLeader);
    if (unusableNow.size === this.endpoints.length) throw unreachable(unusableNow);
    if (lastCode === "CONNECTION") {
      throw new RaftKvError("UNAVAILABLE", `no quorum: no node answered within ${this.timeoutMs} ms (last error: ${lastMessage})`);
    }
    if (lastCode) throw new RaftKvError("TIMEOUT", `timed out after ${this.timeoutMs} ms: ${lastMessage}`);
    throw new RaftKvError("TIMEOUT", `no quorum: no answer within ${this.timeoutMs} ms (the leader may have lost its majority)`);
  }

  private pause(ms: number, deadline: number): Promise<void> {
    return Bun.sleep(Math.max(0, Math.min(ms, deadline - Date.now())));
  }

  private async attempt(addr: string, op: ClientOp, deadline: number, attemptMs = ATTEMPT_TIMEOUT_MS): Promise<ResponseFrame> {
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new Error("timed out");
    const c = await this.connect(addr, Math.min(remaining, ATTEMPT_TIMEOUT_MS));
    if (c.inFlight >= MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION) await this.waitForSlot(c, deadline);
    c.inFlight++;
    try {
      return await this.sendAndWait(c, op, deadline - Date.now(), attemptMs);
    } finally {
      c.inFlight--;
      c.waiting.shift()?.();
    }
  }

  /**
   * Wait until `c` has fewer than MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION requests in flight, or the
   * deadline passes: then TIMEOUT (the request was never sent, so it is not retried).
   */
  private async waitForSlot(c: Conn, deadline: number): Promise<void> {
    while (c.inFlight >= MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION) {
      let wake!: () => void;
      const woken = new Promise<void>((resolve) => (wake = resolve));
      c.waiting.push(wake);
      const timer = setTimeout(wake, Math.max(0, deadline - Date.now()));
      await woken;
      clearTimeout(timer);
      const i = c.waiting.indexOf(wake);
      if (i >= 0) c.waiting.splice(i, 1); // woken by the timer: leave the queue
      if (Date.now() < deadline) continue;
      if (i < 0) c.waiting.shift()?.(); // a freed slot woke this one: pass it on
      throw new RaftKvError("TIMEOUT", `timed out after ${this.timeoutMs} ms waiting to send: ${MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION} requests already in flight on the connection`);
    }
  }

  private sendAndWait(c: Conn, op: ClientOp, remaining: number, attemptMs: number): Promise<ResponseFrame> {
    const id = this.nextId++;
    return new Promise<ResponseFrame>((resolve, reject) => {
      const timer = setTimeout(() => {
        c.pending.delete(id);
        reject(new Error(`no answer within ${Math.min(remaining, attemptMs)} ms`));
      }, Math.min(remaining, attemptMs));
      c.pending.set(id, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      let sent: boolean;
      try {
        sent = c.conn.send({ k: "req", id, ...op });
      } catch (err) {
        if (!(err instanceof FrameTooLargeError)) throw err;
        sent = false;
        reject(new RaftKvError("REQUEST_TOO_LARGE", `request not sent: ${err.message}`));
      }
      if (!sent) {
        c.pending.delete(id);
        clearTimeout(timer);
        reject(new Error("connection closed"));
      }
    });
  }

  private connect(addr: string, timeoutMs: number): Promise<Conn> {
    const existing = this.conns.get(addr);
    if (existing) return existing;
    const { host, port } = parseEndpoint(addr);
    const pending: Conn["pending"] = new Map();
    let failure: Error | undefined; // why the connection ended, when the other end said (TLS, refusal)
    const p = dialFrames(
      host,
      port,
      {
        onFrame: (_conn, value) => {
          const res = value as ResponseFrame;
          const waiter = pending.get(res.id);
          if (!waiter) return;
          pending.delete(res.id);
          waiter.resolve(res);
        },
        onError: (_conn, err) => {
          // TLS problems and refusals (src/net: a `refused` frame) say what happened; other bad bytes
          // mean the other end is not a raftkv node.
          failure = err instanceof TlsError || err instanceof RefusedError ? err : new ForeignServerError(`it sent bytes that are not a raftkv frame: ${err.message}`);
        },
        onClose: () => {
          this.conns.delete(addr);
          for (const w of pending.values()) w.reject(failure ?? new Error("connection lost"));
          pending.clear();
        },
        tls: this.tls,
      },
      timeoutMs,
    ).then(
      (conn) => ({ conn, pending, inFlight: 0, waiting: [] }),
      (err: Error) => {
        this.conns.delete(addr);
        throw err;
      },
    );
    this.conns.set(addr, p);
    return p;
  }
}
