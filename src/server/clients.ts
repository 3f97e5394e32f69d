// Client requests: parse and route each request frame, hold it until the runtime has an outcome
// (a committed write, a confirmed read), and reply on the connection it came from.

import { formatAddr, type NodeAddr } from "../config";
import { MAX_RESULT_BYTES, RESULT_KEY_OVERHEAD_BYTES, encodeLogCommand, parseRangeRequest } from "../kv/codec";
import { isKvError } from "../kv/errors";
import type { ApplyResult, Command, RangeRequest } from "../kv/types";
import { FrameTooLargeError, type FramedConn } from "../net";
import { NONE } from "../raft/types";
import type { ClientOp, ErrorCode, LeaderHint, LeaseStatus, NodeStatus, RequestFrame } from "../protocol";
import { MAX_PENDING_REQUESTS, MAX_REFUSALS_PER_CONNECTION, MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION, REFUSALS_WINDOW_MS } from "./limits";
import { handleLeaderTransfer, handleMemberRequest, type AdminReplies } from "./membership";
import type { NodeMetrics } from "./metrics";
import type { Failure, NodeRuntime } from "./runtime";
import { SnapshotSaves } from "./snapshot-save";
import type { Watches } from "./watches";

interface ConnState {
  inFlight: number;
  refused: number;
  refusedSince: number;
}

/** Most leases in one `lease list` reply (about 40 bytes each); the reply says `more` past it. */
export const MAX_LEASES_LISTED = 10_000;

/** What the client side needs of a connection (FramedConn in production). */
export type ClientConn = Pick<FramedConn, "send" | "sendEncoded" | "close" | "closed">;

export interface ClientServiceDeps {
  runtime: NodeRuntime;
  watches: Watches;
  /** The time stamped into log commands (LeaseKeeper.now: the log's clock, carried on monotonically). */
  logNow: () => number;
  /** Monotonic milliseconds (default performance.now). */
  now?: () => number;
  /** Every node's address, for leader hints (kept up to date as the configuration changes). */
  nodes: NodeAddr[];
  /** The election timeout: how long a leadership transfer may take. */
  electionMs?: number;
  status: () => NodeStatus;
  /** Told of every request and answer; also answers `stats` (production: /metrics and the dashboard). */
  metrics?: NodeMetrics;
}

export class ClientService {
  private readonly runtime: NodeRuntime;
  private readonly watches: Watches;
  private readonly logNow: () => number;
  private readonly nodes: NodeAddr[];
  private readonly status: () => NodeStatus;
  /** Monotonic milliseconds. */
  private readonly now: () => number;
  /** Per open connection that sent a request: requests in flight (awaiting commit or read confirmation),
   * and requests refused over a limit in the window that started at refusedSince. */
  private readonly conns = new Map<ClientConn, ConnState>();
  private readonly metrics: NodeMetrics | undefined;
  private readonly electionMs: number;
  /** `raftkv snapshot save` transfers in progress. */
  readonly saves: SnapshotSaves;

  constructor(deps: ClientServiceDeps) {
    this.electionMs = deps.electionMs ?? 300;
    this.runtime = deps.runtime;
    this.watches = deps.watches;
    this.logNow = deps.logNow;
    this.now = deps.now ?? (() => performance.now());
    this.nodes = deps.nodes;
    this.status = deps.status;
    this.metrics = deps.metrics;
    const runtime = this.runtime;
    this.saves = new SnapshotSaves({ kv: runtime.kv, id: runtime.id, termAt: (i) => runtime.core.termAt(i) ?? runtime.core.term }, this.now);
  }

  private get id(): number {
    return this.runtime.id;
  }

  leaderHint(): LeaderHint | undefined {
    const leader = this.runtime.leader;
    if (leader === NONE || leader === this.id) return undefined;
    const addr = this.nodes.find((n) => n.id === leader);
    return addr ? { id: leader, addr: formatAddr(addr) } : undefined;
  }

  private notLeader(conn: ClientConn, reqId: number): void {
    const hint = this.leaderHint();
    if (hint) {
      this.reply(conn, reqId, { code: "NOT_LEADER", message: `node ${this.id} is not the leader; node ${hint.id} at ${hint.addr} is`, leader: hint });
    } else {
      this.reply(conn, reqId, { code: "NO_LEADER", message: `no quorum: node ${this.id} cannot reach a majority (leader unknown)` });
    }
  }

  /**
   * One request frame. Throws (the connection is closed and the reason logged) for a frame that is not
   * a request, or once the connection has been refused MAX_REFUSALS_PER_CONNECTION requests over its
   * limits within REFUSALS_WINDOW_MS: it is not waiting for its replies, and answering it would cost the
   * node more than it costs the client.
   */
  onRequest(conn: ClientConn, req: RequestFrame): void {
    if (typeof req.id !== "number") throw new Error("request without an id");
    this.metrics?.requestStarted(conn, req);
    try {
      this.handleRequest(conn, req);
    } catch (err) {
      if (isKvError(err)) this.reply(conn, req.id, { code: err.code, message: err.message });
      else this.reply(conn, req.id, { code: "BAD_REQUEST", message: (err as Error).message });
    }
    if ((this.conns.get(conn)?.refused ?? 0) >= MAX_REFUSALS_PER_CONNECTION) {
      this.conns.delete(conn);
      throw new Error(`it kept sending after ${MAX_REFUSALS_PER_CONNECTION} of its requests were refused over the limits within ${REFUSALS_WINDOW_MS} ms, without waiting for replies`);
    }
  }

  /** The connection closed: forget it (outcomes of its requests still arrive, and are dropped). */
  dropConn(conn: ClientConn): void {
    this.conns.delete(conn);
    this.saves.dropConn(conn);
  }

  private connState(conn: ClientConn): ConnState {
    let st = this.conns.get(conn);
    if (!st) this.conns.set(conn, (st = { inFlight: 0, refused: 0, refusedSince: 0 }));
    return st;
  }

  /** Counts a request refused over a limit (onRequest closes the connection past too many). */
  private refused(conn: ClientConn): void {
    const st = this.connState(conn);
    const now = this.now();
    if (now - st.refusedSince >= REFUSALS_WINDOW_MS) {
      st.refused = 0;
      st.refusedSince = now;
    }
    st.refused++;
  }

  /**
   * Counts a request in flight on `conn` and returns the function that ends it (idempotent); over the
   * connection's limit, answers TOO_BUSY and returns null.
   */
  private admit(conn: ClientConn, reqId: number): (() => void) | null {
    const st = this.connState(conn);
    if (st.inFlight >= MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION) {
      this.refused(conn);
      this.reply(conn, reqId, {
        code: "TOO_BUSY",
        message: `node ${this.id} already has ${MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION} requests in flight on this connection; wait for their replies before sending more`,
      });
      return null;
    }
    st.inFlight++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      st.inFlight--;
    };
  }

  /**
   * Runs `answer` for one request held in flight; whatever goes wrong there (a result that cannot be
   * encoded, a bug) fails that request only and never reaches the runtime's apply loop.
   */
  private settle(conn: ClientConn, reqId: number, end: () => void, answer: () => void): void {
    end();
    try {
      answer();
    } catch (err) {
      this.replyError(conn, reqId, err);
    }
  }

  private handleRequest(conn: ClientConn, req: RequestFrame & ClientOp): void {
    switch (req.op) {
      case "status":
        this.replyOk(conn, req.id, this.status());
        return;
      case "stats":
        if (!this.metrics) throw new Error(`node ${this.id} keeps no stats`);
        this.replyOk(conn, req.id, this.metrics.stats());
        return;
      case "range": {
        const range = parseRangeRequest(req.range);
        if (req.serializable) {
          this.serveRange(conn, req.id, range);
          return;
        }
        this.linearizable(conn, req.id, () => this.serveRange(conn, req.id, range));
        return;
      }
      case "watch": {
        const started = this.watches.start(conn, req.id, req.selector, req.fromRevision ?? 0, req.prevKv === true);
        if (started === "TOO_MANY_WATCHES") this.refused(conn);
        this.metrics?.requestEnded(conn, req.id, started);
        return;
      }
      case "leases": {
        // Time left is measured on the leader's clock, after a ReadIndex like any linearizable read.
        if (req.lease !== undefined && !(typeof req.lease === "number" && Number.isSafeInteger(req.lease) && req.lease > 0)) {
          throw new Error(`lease must be a positive integer, got ${JSON.stringify(req.lease)}`);
        }
        this.linearizable(conn, req.id, () => this.serveLeases(conn, req.id, req.lease));
        return;
      }
      case "write": {
        if (this.runtime.role !== "leader") return this.notLeader(conn, req.id);
        if (this.runtime.pendingWriteCount >= MAX_PENDING_REQUESTS) {
          return this.reply(conn, req.id, { code: "TOO_BUSY", message: `node ${this.id} has ${MAX_PENDING_REQUESTS} writes pending; retry later` });
        }
        // Admitted first: a connection over its limit is refused without its command being encoded.
        const end = this.admit(conn, req.id);
        if (!end) return;
        const hasSession = typeof req.clientId === "string" && typeof req.seq === "number";
        let data: Uint8Array;
        try {
          // Encoding validates the command: bad input is refused (KvError, with what is wrong) before it
          // can reach the log.
          data = encodeLogCommand({
            cmd: this.stampLeaseCommand(req.cmd),
            now: this.logNow(),
            ...(hasSession ? { clientId: req.clientId, seq: req.seq } : {}),
          });
        } catch (err) {
          end();
          throw err;
        }
        const at = this.runtime.propose(data, {
          applied: (result) => this.settle(conn, req.id, end, () => this.replyApplied(conn, req.id, result)),
          failed: (f) => this.settle(conn, req.id, end, () => this.fail(conn, req.id, f)),
        });
        if (!at) {
          end();
          // Refused while leadership is handed over (at most an election timeout): the client retries.
          if (this.runtime.role === "leader") this.reply(conn, req.id, { code: "NO_LEADER", message: `node ${this.id} is handing leadership over; retry` });
          else this.notLeader(conn, req.id);
        }
        return;
      }
      case "member":
        return handleMemberRequest(this.runtime, this.nodes, req, this.adminReplies(conn, req.id));
      case "leaderTransfer":
        return handleLeaderTransfer(this.runtime, req, this.electionMs, this.adminReplies(conn, req.id));
      case "snapshotSave":
        return this.startSnapshotSave(conn, req.id);
      case "snapshotChunk":
        this.replyOk(conn, req.id, { data: this.saves.chunk(conn, req.save, req.offset) });
        return;
      default:
        throw new Error(`unknown request op ${JSON.stringify((req as { op?: unknown }).op)}`);
    }
  }

  private adminReplies(conn: ClientConn, reqId: number): AdminReplies {
    return {
      ok: (result) => this.replyOk(conn, reqId, result),
      fail: (code, message) => this.reply(conn, reqId, { code, message }),
      notLeader: () => this.notLeader(conn, reqId),
    };
  }

  /** A backup: confirmed like a linearizable read, then captured at once (server/snapshot-save.ts). */
  private startSnapshotSave(conn: ClientConn, reqId: number): void {
    if (this.runtime.role !== "leader") return this.notLeader(conn, reqId);
    const busy = this.saves.refusal();
    if (busy) return this.reply(conn, reqId, { code: "TOO_BUSY", message: busy });
    const end = this.admit(conn, reqId);
    if (!end) return;
    const started = this.runtime.readIndex({
      ready: () => {
        const capture = this.saves.refusal() ?? this.saves.begin(conn);
        if (typeof capture === "string") return this.settle(conn, reqId, end, () => this.reply(conn, reqId, { code: "TOO_BUSY", message: capture }));
        capture.then(
          (header) => this.settle(conn, reqId, end, () => (conn.closed ? this.saves.dropConn(conn) : this.replyOk(conn, reqId, header))),
          (err) => this.settle(conn, reqId, end, () => this.replyError(conn, reqId, err)),
        );
      },
      failed: (f) => this.settle(conn, reqId, end, () => this.fail(conn, reqId, f)),
    });
    if (!started) {
      end();
      this.notLeader(conn, reqId);
    }
  }

  /** Lease times come from the leader's clock, never the client's. Expiry and refresh are internal. */
  private stampLeaseCommand(cmd: Command): Command {
    const op = (cmd as { op?: unknown } | null)?.op;
    if (op === "leaseGrant" || op === "leaseKeepAlive") return { ...cmd, now: this.logNow() } as Command;
    if (op === "leaseExpire" || op === "leaseRefreshAll") throw new Error(`${op} is proposed by the leader itself, not by clients`);
    return cmd;
  }

  private replyApplied(conn: ClientConn, reqId: number, result: ApplyResult | null): void {
    if (!result) return;
    if (result.ok) {
      // The previous value a put replaced is not sent back: clients do not ask for it.
      const r = result.result;
      this.replyOk(conn, reqId, r.op === "put" && r.prev ? { op: "put", revision: r.revision } : r);
    } else {
      this.reply(conn, reqId, { code: result.error.code, message: result.error.message });
    }
  }

  private fail(conn: ClientConn, reqId: number, f: Failure): void {
    this.reply(conn, reqId, { code: f.code, message: f.message, ...(f.leaderHint ? { leader: this.leaderHint() } : {}) });
  }

  /** Serve a read once the leader has confirmed it still leads (ReadIndex) and applied that far. */
  private linearizable(conn: ClientConn, reqId: number, serve: () => void): void {
    if (this.runtime.role !== "leader") return this.notLeader(conn, reqId);
    if (this.runtime.pendingReadCount >= MAX_PENDING_REQUESTS) {
      return this.reply(conn, reqId, { code: "TOO_BUSY", message: `node ${this.id} has ${MAX_PENDING_REQUESTS} requests pending; retry later` });
    }
    const end = this.admit(conn, reqId);
    if (!end) return;
    const started = this.runtime.readIndex({
      ready: () => this.settle(conn, reqId, end, serve),
      failed: (f) => this.settle(conn, reqId, end, () => this.fail(conn, reqId, f)),
    });
    if (!started) {
      end();
      this.notLeader(conn, reqId);
    }
  }

  /** Ranges come back in pages within MAX_RESULT_BYTES; a revision outside the history is an error reply. */
  private serveRange(conn: ClientConn, reqId: number, range: RangeRequest): void {
    let result;
    try {
      result = this.runtime.kv.range(range);
    } catch (err) {
      if (!isKvError(err)) throw err;
      return this.reply(conn, reqId, { code: err.code, message: err.message });
    }
    this.replyOk(conn, reqId, result);
  }

  private serveLeases(conn: ClientConn, reqId: number, id: number | undefined): void {
    const now = this.logNow();
    const remaining = (expiresAt: number) => Math.max(0, Math.round(expiresAt - now));
    if (id === undefined) {
      const all = this.runtime.kv.leaseList();
      const leases: LeaseStatus[] = all
        .slice(0, MAX_LEASES_LISTED)
        .map((l) => ({ id: l.id, ttlMs: l.ttlMs, remainingMs: remaining(l.expiresAt), keyCount: l.keys }));
      return this.replyOk(conn, reqId, { leases, more: all.length > leases.length });
    }
    const lease = this.runtime.kv.leaseInfo(id);
    if (!lease) return this.reply(conn, reqId, { code: "LEASE_NOT_FOUND", message: `lease ${id} does not exist (expired, revoked or never granted)` });
    // The keys listed stop at MAX_RESULT_BYTES (keyCount still counts them all), so the reply fits a frame.
    const keys: Uint8Array[] = [];
    let bytes = 0;
    for (const key of lease.keys) {
      bytes += key.length + RESULT_KEY_OVERHEAD_BYTES;
      if (bytes > MAX_RESULT_BYTES) break;
      keys.push(key);
    }
    const status: LeaseStatus & { keys: Uint8Array[] } = {
      id,
      ttlMs: lease.ttlMs,
      remainingMs: remaining(lease.expiresAt),
      keyCount: lease.keys.length,
      keys,
    };
    this.replyOk(conn, reqId, status);
  }

  /** A result too large for one frame fails its request with RESULT_TOO_LARGE. */
  private replyOk(conn: ClientConn, id: number, result: unknown): void {
    try {
      if (!conn.closed) conn.send({ k: "res", id, ok: true, result });
    } catch (err) {
      if (!(err instanceof FrameTooLargeError)) throw err;
      return this.reply(conn, id, {
        code: "RESULT_TOO_LARGE",
        message: `the result is ${err.payloadBytes} bytes, over the ${err.maxFrameBytes}-byte frame limit; ask for less (a range with a limit, or a narrower prefix)`,
      });
    }
    this.metrics?.requestEnded(conn, id, "ok");
  }

  private replyError(conn: ClientConn, id: number, err: unknown): void {
    if (isKvError(err)) this.reply(conn, id, { code: err.code, message: err.message });
    else this.reply(conn, id, { code: "INTERNAL", message: `node ${this.id} failed this request: ${(err as Error)?.message ?? String(err)}` });
  }

  private reply(conn: ClientConn, id: number, err: { code: ErrorCode; message: string; leader?: LeaderHint }): void {
    this.metrics?.requestEnded(conn, id, err.code);
    if (conn.closed) return;
    conn.send({ k: "res", id, ok: false, code: err.code, message: err.message, ...(err.leader ? { leader: err.leader } : {}) });
  }
}
