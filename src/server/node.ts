// The node runtime: drives the pure Raft core with real time, a write-ahead log and sockets, applies
// committed entries to the key-value state machine, and serves clients.

import { formatAddr, type NodeAddr } from "../config";
import { DEFAULT_SESSION_TTL_MS, KvStore, keyMatcher } from "../kv/store";
import { encodeLogCommand, extendAllLeasesCommand, leaseExpireCommand, parseRangeRequest } from "../kv/codec";
import { isKvError } from "../kv/errors";
import type { ApplyResult, Command, KeySelector, RangeRequest, WatchEvent } from "../kv/types";
import { dialFrames, listenFrames, PeerLink, type FramedConn, type FrameListener } from "../net";
import { RaftCore } from "../raft/core";
import { fromWire, parseMessage, toWire } from "../raft/wire";
import { NONE, type Message, type Ready, type Snapshot, type SnapshotMeta } from "../raft/types";
import { lockDataDir, loadLatestSnapshot, Wal, writeSnapshot, writeSnapshotAsync, type DataDirLock } from "../storage";
import type { ClientOp, ErrorCode, HelloFrame, LeaderHint, NodeStatus, RaftFrame, RequestFrame, SnapChunkFrame } from "../protocol";
import { VERSION } from "../protocol";
import { serveHttp, type HttpEndpoints } from "./http";
import { Logger, type LogFormat, type LogLevel } from "./log";

export interface NodeOptions {
  id: number;
  nodes: NodeAddr[];
  dataDir: string;
  heartbeatMs?: number;
  electionMs?: number;
  /** Take a snapshot and compact the log once this many entries were applied since the last one. */
  snapshotEntries?: number;
  logLevel?: LogLevel;
  logFormat?: LogFormat;
  /** Where to listen; defaults to the node's own address from nodes.conf. */
  listenHost?: string;
  /** false: one fsync per log entry instead of one per event-loop turn (only to measure group commit). */
  groupCommit?: boolean;
  /** Client sessions (for exactly-once retries) idle longer than this are forgotten. Same on every node. */
  sessionTtlMs?: number;
  /** Serve /health, /status and /metrics over HTTP on this port (0 or absent: no HTTP). */
  httpPort?: number;
}

export const DEFAULT_HEARTBEAT_MS = 50;
export const DEFAULT_ELECTION_MS = 300;
export const DEFAULT_SNAPSHOT_ENTRIES = 10_000;
/** Requests a leader holds awaiting commit or read confirmation before it answers TOO_BUSY. */
export const MAX_PENDING_REQUESTS = 20_000;
/** Entries kept in memory after a snapshot so slightly slow followers catch up without one. */
const CATCH_UP_ENTRIES = 5_000;
/** A node idle (nothing applied) this long runs one full garbage collection. */
const IDLE_GC_AFTER_MS = 2000;
/** How often a leader looks for expired leases. */
const LEASE_CHECK_MS = 100;
const SNAPSHOT_CHUNK_BYTES = 1024 * 1024;
const SNAPSHOT_STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
/** Granularity of the Raft clock. */
const TICK_MS = 10;

interface PendingWrite {
  term: number;
  conn: FramedConn;
  reqId: number;
}

interface Watcher {
  conn: FramedConn;
  id: number;
  matches: (key: Uint8Array) => boolean;
  /** First revision wanted: a lagging node may still apply older ones after the watch starts. */
  from: number;
}

interface PendingRead {
  conn: FramedConn;
  reqId: number;
  range: RangeRequest;
  index: number; // -1 until confirmed
}

export class RaftKvNode {
  readonly id: number;
  readonly self: NodeAddr;
  private readonly opts: Required<Omit<NodeOptions, "listenHost" | "httpPort">> & { listenHost?: string; httpPort?: number };
  private http: HttpEndpoints | null = null;
  readonly log: Logger;
  private core!: RaftCore;
  private kv!: KvStore;
  private wal!: Wal;
  private lock!: DataDirLock;
  private listener: FrameListener | null = null;
  private readonly links = new Map<number, PeerLink>();
  private tickTimer: ReturnType<typeof setInterval> | null = null;
  private readyScheduled = false;
  private stopped = false;
  private readonly startedAt = Date.now();

  private readonly pendingWrites = new Map<number, PendingWrite>();
  private readonly pendingReads = new Map<number, PendingRead>();
  /** Confirmed reads waiting for the state machine to catch up to their index, by index. */
  private readonly readsAwaitingApply: PendingRead[] = [];
  private nextReadCtx = 1;

  /** The latest snapshot on disk (its bytes stay there: read back only to send to a follower). */
  private snapshot: SnapshotMeta | null = null;
  private snapshotInProgress = false;
  private logBytesSinceSnapshot = 0;
  private readonly snapshotStreams = new Set<number>();
  private readonly incomingSnapshots = new Map<number, { index: number; term: number; parts: Uint8Array[]; received: number; total: number }>();

  private persistedTerm = 0;
  private persistedVote = NONE;
  private lastRole = "follower";
  private lastLeader = NONE;

  private readonly watchers = new Set<Watcher>();
  private appliedAtLastCheck = 0;
  private idleSince = Date.now();
  private collectedSinceActivity = false;
  private leaseTimer: ReturnType<typeof setInterval> | null = null;
  /** Leader only: index of this term's lease refresh; lease expiry waits until it is applied. */
  private leaseRefreshIndex = 0;
  /** Leader only: index of a proposed lease expiry not yet applied. */
  private leaseExpireIndex = 0;

  constructor(opts: NodeOptions) {
    const self = opts.nodes.find((n) => n.id === opts.id);
    if (!self) throw new Error(`node ${opts.id} is not listed in the configuration (ids: ${opts.nodes.map((n) => n.id).join(", ")})`);
    this.id = opts.id;
    this.self = self;
    this.opts = {
      heartbeatMs: DEFAULT_HEARTBEAT_MS,
      electionMs: DEFAULT_ELECTION_MS,
      snapshotEntries: DEFAULT_SNAPSHOT_ENTRIES,
      logLevel: "info",
      logFormat: "text",
      groupCommit: true,
      sessionTtlMs: DEFAULT_SESSION_TTL_MS,
      ...opts,
    };
    if (this.opts.electionMs < 2 * this.opts.heartbeatMs) {
      throw new Error(`--election-ms (${this.opts.electionMs}) must be at least twice --heartbeat-ms (${this.opts.heartbeatMs})`);
    }
    if (this.opts.heartbeatMs < TICK_MS) throw new Error(`--heartbeat-ms must be at least ${TICK_MS}`);
    this.log = new Logger(this.id, () => this.core?.term ?? 0, this.opts.logLevel, this.opts.logFormat);
  }

  // ---- lifecycle ------------------------------------------------------------------------

  async start(): Promise<void> {
    this.lock = lockDataDir(this.opts.dataDir);
    try {
      this.recover();
      this.listener = listenFrames({
        hostname: this.opts.listenHost ?? this.self.host,
        port: this.self.port,
        onFrame: (conn, value) => this.onFrame(conn, value),
        onError: (conn, err) => this.log.warn("closed a connection that sent bad data", { remote: conn.remoteAddress, reason: err.message }),
        onClose: (conn) => {
          for (const w of this.watchers) if (w.conn === conn) this.watchers.delete(w);
        },
      });
      if (this.opts.httpPort) {
        this.http = serveHttp(this.opts.listenHost ?? this.self.host, this.opts.httpPort, () => this.status());
      }
    } catch (err) {
      this.listener?.stop();
      this.wal?.close();
      this.lock.release();
      throw err;
    }
    for (const peer of this.opts.nodes) {
      if (peer.id === this.id) continue;
      const link = new PeerLink({
        host: peer.host,
        port: peer.port,
        hello: { k: "hello", from: this.id } satisfies HelloFrame,
        onConnect: () => this.log.debug("connected to peer", { peer: peer.id }),
        onDisconnect: (_l, reason) => this.log.debug("lost peer connection", { peer: peer.id, reason }),
        onError: (_l, err) => this.log.warn("bad data from peer", { peer: peer.id, reason: err.message }),
      });
      this.links.set(peer.id, link);
    }
    this.tickTimer = setInterval(() => {
      this.core.tick();
      this.scheduleReady();
    }, TICK_MS);
    this.leaseTimer = setInterval(() => {
      this.expireLeases();
      this.collectGarbageWhenIdle();
    }, LEASE_CHECK_MS);
    this.log.info("serving", {
      ...(this.http ? { http: this.http.port } : {}),
      addr: formatAddr(this.self),
      dataDir: this.opts.dataDir,
      peers: this.opts.nodes.length - 1,
      heartbeatMs: this.opts.heartbeatMs,
      electionMs: this.opts.electionMs,
      version: VERSION,
    });
  }

  private recover(): void {
    const t0 = performance.now();
    const storageLog = (level: "warn" | "info", msg: string) => this.log.log(level, msg);
    const { wal, state } = Wal.open(this.opts.dataDir, { log: storageLog });
    this.wal = wal;
    this.snapshot = state.snapshot && { index: state.snapshot.index, term: state.snapshot.term };
    this.persistedTerm = state.hardState.term;
    this.persistedVote = state.hardState.vote;
    const kvOptions = { sessionTtlMs: this.opts.sessionTtlMs };
    this.kv = state.snapshot ? KvStore.restore(state.snapshot.data, kvOptions) : new KvStore(kvOptions);
    this.kv.onEvents((events, revision) => this.publish(events, revision));
    this.core = new RaftCore(
      {
        id: this.id,
        voters: this.opts.nodes.map((n) => n.id),
        heartbeatTicks: Math.max(1, Math.round(this.opts.heartbeatMs / TICK_MS)),
        electionTicks: Math.max(2, Math.round(this.opts.electionMs / TICK_MS)),
        rng: Math.random,
      },
      { hardState: state.hardState, entries: state.entries, snapshot: state.snapshot },
    );
    this.log.info("recovered from disk", {
      snapshotIndex: state.snapshot?.index ?? 0,
      entries: state.entries.length,
      commit: state.hardState.commit,
      ms: Math.round(performance.now() - t0),
    });
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    for (const link of this.links.values()) link.close();
    this.listener?.stop();
    this.http?.stop();
    this.failAllPending("SHUTTING_DOWN", `node ${this.id} is shutting down`);
    try {
      this.wal.close();
    } finally {
      this.lock.release();
    }
    this.log.info("stopped");
  }

  get port(): number {
    return this.listener?.port ?? this.self.port;
  }

  // ---- the Ready loop -------------------------------------------------------------------

  private scheduleReady(): void {
    if (this.readyScheduled || this.stopped) return;
    this.readyScheduled = true;
    // setImmediate runs after this turn's I/O callbacks: everything that arrived together is
    // persisted with one fsync (group commit) and sent in one batch.
    setImmediate(() => {
      this.readyScheduled = false;
      if (!this.stopped) this.processReady();
    });
  }

  private processReady(): void {
    while (this.core.hasReady()) {
      const rd = this.core.ready();
      // A leader's messages depend on no unpersisted term or vote (it persisted both before it won),
      // so it may send its appends first and write its own log while followers write theirs (Raft
      // thesis 10.2.1). It still counts itself toward a commit only after its own fsync.
      const sendFirst =
        this.core.role === "leader" && !rd.snapshot && (!rd.hardState || (rd.hardState.term === this.persistedTerm && rd.hardState.vote === this.persistedVote));
      if (sendFirst) for (const m of rd.messages) this.sendMessage(m);
      try {
        this.persist(rd);
      } catch (err) {
        // A failed write or fsync leaves the disk state unknown: stop rather than risk lying.
        this.log.error("storage failure, stopping the node", { reason: (err as Error).message });
        process.exit(2);
      }
      if (!sendFirst) for (const m of rd.messages) this.sendMessage(m);
      this.apply(rd);
      this.core.advance(rd);
    }
    this.noticeRoleChange();
    this.maybeSnapshot();
  }

  private persist(rd: Ready): void {
    if (rd.snapshot) {
      writeSnapshot(this.opts.dataDir, rd.snapshot);
      this.wal.resetLog({ index: rd.snapshot.index, term: rd.snapshot.term });
      this.snapshot = { index: rd.snapshot.index, term: rd.snapshot.term };
    }
    // Term and vote must be on disk before anything that depends on them is sent; the commit index
    // need not be (after a crash it is learned again from the leader), so a batch that only moves
    // the commit index is written with the next sync instead of costing an fsync of its own.
    let mustSync = rd.entries.length > 0 || rd.snapshot !== null;
    if (rd.hardState) {
      this.wal.setHardState(rd.hardState);
      mustSync ||= rd.hardState.term !== this.persistedTerm || rd.hardState.vote !== this.persistedVote;
      this.persistedTerm = rd.hardState.term;
      this.persistedVote = rd.hardState.vote;
    }
    if (!this.opts.groupCommit) {
      for (const e of rd.entries) {
        this.wal.append([e]);
        this.wal.sync();
      }
    } else if (rd.entries.length) this.wal.append(rd.entries);
    if (mustSync) this.wal.sync();
  }

  private apply(rd: Ready): void {
    if (rd.snapshot) {
      this.kv.load(rd.snapshot.data);
      this.log.info("installed snapshot from leader", { index: rd.snapshot.index, bytes: rd.snapshot.data.length });
      // The changes the snapshot skipped over are not in this node's history: watchers resume elsewhere.
      for (const w of this.watchers) this.endWatch(w, "COMPACTED", "this node installed a snapshot; resume the watch on another node");
    }
    for (const e of rd.committed) {
      this.logBytesSinceSnapshot += e.data.length;
      let result: ApplyResult | null = null;
      if (e.data.length) result = this.kv.applyEntry(e.index, e.data);
      else this.kv.markApplied(e.index);
      const p = this.pendingWrites.get(e.index);
      if (!p) continue;
      this.pendingWrites.delete(e.index);
      if (p.term !== e.term) {
        this.reply(p.conn, p.reqId, { code: "LEADERSHIP_LOST", message: "leadership changed before the write committed; it was not applied" });
      } else if (result && result.ok) {
        // The previous value a put replaced is not sent back: clients do not ask for it.
        const r = result.result;
        this.replyOk(p.conn, p.reqId, r.op === "put" && r.prev ? { op: "put", revision: r.revision } : r);
      } else if (result) {
        this.reply(p.conn, p.reqId, { code: result.error.code, message: result.error.message });
      }
    }
    for (const rs of rd.readStates) {
      const r = this.pendingReads.get(rs.ctx);
      if (!r) continue;
      this.pendingReads.delete(rs.ctx);
      r.index = rs.index;
      this.readsAwaitingApply.push(r);
    }
    for (const rf of rd.readFailures) {
      const r = this.pendingReads.get(rf.ctx);
      if (!r) continue;
      this.pendingReads.delete(rf.ctx);
      this.reply(r.conn, r.reqId, { code: "LEADERSHIP_LOST", message: `read not confirmed: ${rf.reason}`, leader: this.leaderHint() });
    }
    if (this.readsAwaitingApply.length) {
      let lastApplied = Math.max(this.core.applied, rd.snapshot?.index ?? 0);
      if (rd.committed.length) lastApplied = rd.committed[rd.committed.length - 1]!.index;
      let keep = 0;
      for (const r of this.readsAwaitingApply) {
        if (r.index <= lastApplied) this.serveRange(r.conn, r.reqId, r.range);
        else this.readsAwaitingApply[keep++] = r;
      }
      this.readsAwaitingApply.length = keep;
    }
  }

  private noticeRoleChange(): void {
    const role = this.core.role;
    const leader = this.core.leader;
    if (role === this.lastRole && leader === this.lastLeader) return;
    if (role === "leader" && this.lastRole !== "leader") {
      this.log.info("became leader");
      // Leases were timed by the previous leader's clock; give every one a full TTL from now, so a
      // leader change never expires a lease early. Expiry checks wait until this is applied.
      this.leaseExpireIndex = 0;
      this.leaseRefreshIndex = this.core.propose(encodeLogCommand({ cmd: extendAllLeasesCommand(Date.now()), now: Date.now() }))?.index ?? 0;
      this.scheduleReady();
    }
    else if (leader !== this.lastLeader && leader !== NONE && role !== "leader") this.log.info("following leader", { leader });
    else if (role !== this.lastRole) this.log.info(`became ${role}`);
    if (this.lastRole === "leader" && role !== "leader") {
      // Writes we proposed may or may not commit under the next leader; the client retries them
      // with the same sequence number and the session table applies each at most once.
      for (const [index, p] of this.pendingWrites) {
        this.reply(p.conn, p.reqId, { code: "LEADERSHIP_LOST", message: `node ${this.id} lost leadership; the write may or may not have been applied: retry it`, leader: this.leaderHint() });
        this.pendingWrites.delete(index);
      }
      for (const r of this.readsAwaitingApply) this.reply(r.conn, r.reqId, { code: "LEADERSHIP_LOST", message: "leadership changed", leader: this.leaderHint() });
      this.readsAwaitingApply.length = 0;
    }
    this.lastRole = role;
    this.lastLeader = leader;
  }

  // ---- snapshots and compaction ---------------------------------------------------------

  private maybeSnapshot(): void {
    if (this.snapshotInProgress) return;
    const applied = this.core.applied;
    const base = this.snapshot?.index ?? 0;
    if (applied - base < this.opts.snapshotEntries) return;
    // A snapshot costs time proportional to the whole state; take one only once the log since the
    // last one is a good fraction of the state too, so the cost per write stays constant as it grows.
    if (this.logBytesSinceSnapshot < this.kv.stats().approxBytes / 4) return;
    const term = this.core.termAt(applied);
    if (term === undefined) return;
    this.snapshotInProgress = true;
    this.logBytesSinceSnapshot = 0;
    const t0 = performance.now();
    const previous = this.snapshot;
    let encodeMs = 0;
    let snap: Snapshot;
    // Encoded in slices between which the node keeps serving (the state is captured now).
    this.kv
      .snapshotAsync()
      .then((data) => {
        encodeMs = performance.now() - t0;
        snap = { index: applied, term, data };
        return writeSnapshotAsync(this.opts.dataDir, snap);
      })
      .then(() => {
        // Meanwhile a newer snapshot may have been installed from the leader: never step back.
        if (this.stopped || (this.snapshot && this.snapshot.index >= snap.index)) return;
        this.snapshot = { index: snap.index, term: snap.term };
        // Keep the log back to the previous snapshot on disk (a fallback if the newest is damaged),
        // and a tail of entries in memory so a briefly slow follower needs no snapshot.
        const deleted = this.wal.compact(previous?.index ?? 0);
        const keep = Math.min(CATCH_UP_ENTRIES, this.opts.snapshotEntries);
        this.core.compact(Math.max(this.core.status().snapshotIndex, applied - keep));
        this.log.info("snapshot written", { index: applied, bytes: snap.data.length, encodeMs: Math.round(encodeMs), segmentsDeleted: deleted });
      })
      .catch((err: Error) => this.log.error("snapshot failed", { reason: err.message }))
      .finally(() => {
        this.snapshotInProgress = false;
      });
  }

  /** Stream our latest snapshot to a follower on its own connection, in chunks, with flow control. */
  private async streamSnapshot(peerId: number, term: number): Promise<void> {
    if (this.snapshotStreams.has(peerId)) return;
    const snap = this.snapshot && loadLatestSnapshot(this.opts.dataDir, (level, msg) => this.log.log(level, msg));
    if (!snap) {
      // Compacted only in memory so far (the snapshot file is being written): retry later.
      this.core.reportSnapshot(peerId, false);
      return;
    }
    const peer = this.opts.nodes.find((n) => n.id === peerId)!;
    this.snapshotStreams.add(peerId);
    let conn: FramedConn | null = null;
    try {
      conn = await dialFrames(peer.host, peer.port, { onFrame: () => {} });
      conn.send({ k: "hello", from: this.id } satisfies HelloFrame);
      const total = snap.data.length;
      for (let offset = 0; offset < total || (offset === 0 && total === 0); offset += SNAPSHOT_CHUNK_BYTES) {
        while (conn.queuedBytes > SNAPSHOT_STREAM_WINDOW_BYTES) {
          if (conn.closed || this.stopped) throw new Error("connection closed");
          await Bun.sleep(2);
        }
        const chunk: SnapChunkFrame = {
          k: "snapChunk",
          from: this.id,
          term,
          index: snap.index,
          snapTerm: snap.term,
          offset,
          total,
          data: snap.data.subarray(offset, Math.min(total, offset + SNAPSHOT_CHUNK_BYTES)),
        };
        if (!conn.send(chunk)) throw new Error("send queue full");
        // The previous chunks left the queue: the follower is alive and the transfer not stalled.
        this.core.snapshotStreamProgress(peerId);
        if (total === 0) break;
      }
      while (conn.queuedBytes > 0 && !conn.closed) await Bun.sleep(2);
      this.log.info("sent snapshot to follower", { peer: peerId, index: snap.index, bytes: total });
      this.core.reportSnapshot(peerId, true);
    } catch (err) {
      this.log.warn("snapshot transfer failed", { peer: peerId, reason: (err as Error).message });
      this.core.reportSnapshot(peerId, false);
    } finally {
      conn?.close();
      this.snapshotStreams.delete(peerId);
      this.scheduleReady();
    }
  }

  private onSnapChunk(f: SnapChunkFrame): void {
    if (
      typeof f.from !== "number" ||
      typeof f.term !== "number" ||
      typeof f.index !== "number" ||
      typeof f.offset !== "number" ||
      typeof f.total !== "number" ||
      !(f.data instanceof Uint8Array)
    ) {
      this.log.warn("ignored a malformed snapshot chunk");
      return;
    }
    // Each chunk is contact from the leader: a long transfer must not time this node out into an election.
    this.core.snapshotChunkReceived(f.from, f.term);
    this.scheduleReady();
    let inc = this.incomingSnapshots.get(f.from);
    if (f.offset === 0) {
      inc = { index: f.index, term: f.snapTerm, parts: [], received: 0, total: f.total };
      this.incomingSnapshots.set(f.from, inc);
    }
    if (!inc || inc.index !== f.index || inc.received !== f.offset) {
      this.incomingSnapshots.delete(f.from);
      return;
    }
    inc.parts.push(f.data);
    inc.received += f.data.length;
    if (inc.received < inc.total) return;
    this.incomingSnapshots.delete(f.from);
    const data = new Uint8Array(inc.total);
    let at = 0;
    for (const p of inc.parts) {
      data.set(p, at);
      at += p.length;
    }
    const msg = parseMessage({ type: "snap", from: f.from, to: this.id, term: f.term, snapshot: { index: inc.index, term: inc.term, data } });
    if (typeof msg === "string") return;
    this.core.step(msg);
    this.scheduleReady();
  }

  // ---- network --------------------------------------------------------------------------

  private sendMessage(m: Message): void {
    if (m.type === "snap") {
      void this.streamSnapshot(m.to, m.term);
      return;
    }
    this.links.get(m.to)?.send({ k: "raft", m: toWire(m) } satisfies RaftFrame);
  }

  private onFrame(conn: FramedConn, value: unknown): void {
    if (!value || typeof value !== "object") throw new Error("frame is not an object");
    const f = value as { k?: unknown };
    switch (f.k) {
      case "raft": {
        const m = parseMessage(fromWire((value as { m: unknown }).m));
        if (typeof m === "string") throw new Error(`malformed raft message: ${m}`);
        if (m.to !== this.id) {
          this.log.warn("dropped a message meant for another node (check nodes.conf on every host)", { to: m.to, from: m.from });
          return;
        }
        this.core.step(m);
        this.scheduleReady();
        return;
      }
      case "snapChunk":
        this.onSnapChunk(value as SnapChunkFrame);
        return;
      case "hello":
        return;
      case "req":
        this.onRequest(conn, value as RequestFrame);
        return;
      default:
        throw new Error(`unknown frame kind ${JSON.stringify(f.k)}`);
    }
  }

  // ---- clients --------------------------------------------------------------------------

  private leaderHint(): LeaderHint | undefined {
    const leader = this.core.leader;
    if (leader === NONE || leader === this.id) return undefined;
    const addr = this.opts.nodes.find((n) => n.id === leader);
    return addr ? { id: leader, addr: formatAddr(addr) } : undefined;
  }

  private notLeader(conn: FramedConn, reqId: number): void {
    const hint = this.leaderHint();
    if (hint) {
      this.reply(conn, reqId, { code: "NOT_LEADER", message: `node ${this.id} is not the leader; node ${hint.id} at ${hint.addr} is`, leader: hint });
    } else {
      this.reply(conn, reqId, { code: "NO_LEADER", message: `no quorum: node ${this.id} cannot reach a majority (leader unknown)` });
    }
  }

  private onRequest(conn: FramedConn, req: RequestFrame): void {
    if (typeof req.id !== "number") throw new Error("request without an id");
    try {
      this.handleRequest(conn, req);
    } catch (err) {
      if (isKvError(err)) this.reply(conn, req.id, { code: err.code, message: err.message });
      else this.reply(conn, req.id, { code: "BAD_REQUEST", message: (err as Error).message });
    }
  }

  private handleRequest(conn: FramedConn, req: RequestFrame & ClientOp): void {
    switch (req.op) {
      case "status":
        this.replyOk(conn, req.id, this.status());
        return;
      case "range": {
        const range = parseRangeRequest(req.range);
        if (req.serializable) {
          this.serveRange(conn, req.id, range);
          return;
        }
        if (this.core.role !== "leader") return this.notLeader(conn, req.id);
        if (this.pendingReads.size + this.readsAwaitingApply.length >= MAX_PENDING_REQUESTS) {
          return this.reply(conn, req.id, { code: "TOO_BUSY", message: `node ${this.id} has ${MAX_PENDING_REQUESTS} requests pending; retry later` });
        }
        const ctx = this.nextReadCtx++;
        this.pendingReads.set(ctx, { conn, reqId: req.id, range, index: -1 });
        this.core.readIndex(ctx);
        this.scheduleReady();
        return;
      }
      case "watch":
        this.startWatch(conn, req.id, req.selector, req.fromRevision ?? 0);
        return;
      case "write": {
        if (this.core.role !== "leader") return this.notLeader(conn, req.id);
        if (this.pendingWrites.size >= MAX_PENDING_REQUESTS) {
          return this.reply(conn, req.id, { code: "TOO_BUSY", message: `node ${this.id} has ${MAX_PENDING_REQUESTS} writes pending; retry later` });
        }
        const hasSession = typeof req.clientId === "string" && typeof req.seq === "number";
        // Encoding validates the command: bad input is refused (KvError, with what is wrong) before it
        // can reach the log.
        const data = encodeLogCommand({
          cmd: this.stampLeaseCommand(req.cmd),
          now: Date.now(),
          ...(hasSession ? { clientId: req.clientId, seq: req.seq } : {}),
        });
        const at = this.core.propose(data)!;
        this.pendingWrites.set(at.index, { term: at.term, conn, reqId: req.id });
        this.scheduleReady();
        return;
      }
      default:
        throw new Error(`unknown request op ${JSON.stringify((req as { op?: unknown }).op)}`);
    }
  }

  /** Lease times come from the leader's clock, never the client's. Expiry and refresh are internal. */
  private stampLeaseCommand(cmd: Command): Command {
    const op = (cmd as { op?: unknown } | null)?.op;
    if (op === "leaseGrant" || op === "leaseKeepAlive") return { ...cmd, now: Date.now() } as Command;
    if (op === "leaseExpire" || op === "leaseRefreshAll") throw new Error(`${op} is proposed by the leader itself, not by clients`);
    return cmd;
  }

  /**
   * Under load the JS heap fills with short-lived garbage faster than the collector returns it; once
   * the node has been idle (nothing applied) for a while, one collection gives that memory back.
   */
  private collectGarbageWhenIdle(): void {
    const applied = this.core.applied;
    if (applied !== this.appliedAtLastCheck) {
      this.appliedAtLastCheck = applied;
      this.idleSince = Date.now();
      this.collectedSinceActivity = false;
      return;
    }
    if (this.collectedSinceActivity || Date.now() - this.idleSince < IDLE_GC_AFTER_MS) return;
    this.collectedSinceActivity = true;
    // Bun.gc(false) asks for a concurrent collection: it returns at once and does not pause the node
    // (a synchronous full one took a second at a million keys, long enough to cost a leader its lease).
    Bun.gc(false);
    this.log.debug("asked for a garbage collection while idle", { rssMiB: Math.round(process.memoryUsage.rss() / 1048576) });
  }

  private expireLeases(): void {
    if (this.core.role !== "leader" || this.stopped) return;
    const applied = this.core.applied;
    if (this.leaseRefreshIndex === 0 || applied < this.leaseRefreshIndex || applied < this.leaseExpireIndex) return;
    const now = Date.now();
    const ids = this.kv.expiredLeases(now);
    if (!ids.length) return;
    const at = this.core.propose(encodeLogCommand({ cmd: leaseExpireCommand(ids, now), now }));
    if (at) {
      this.leaseExpireIndex = at.index;
      this.log.info("expiring leases", { ids: ids.length <= 10 ? ids : `${ids.length} leases` });
      this.scheduleReady();
    }
  }

  // ---- watches --------------------------------------------------------------------------

  private startWatch(conn: FramedConn, id: number, selector: KeySelector, fromRevision: number): void {
    const matches = keyMatcher(selector);
    const backlog = fromRevision > 0 ? this.kv.eventsSince(fromRevision, selector) : [];
    if (backlog === "compacted") {
      this.send(conn, { k: "ev", id, error: { code: "COMPACTED", message: `revision ${fromRevision} is compacted on node ${this.id} (oldest kept: ${this.kv.compactRevision})` } });
      return;
    }
    this.replyOk(conn, id, { watching: true, revision: this.kv.revision });
    // Replay history one revision per frame, then go live: nothing can be applied in between.
    let i = 0;
    while (i < backlog.length) {
      const rev = backlog[i]!.modRevision;
      const group: WatchEvent[] = [];
      while (i < backlog.length && backlog[i]!.modRevision === rev) group.push(backlog[i++]!);
      if (!this.send(conn, { k: "ev", id, revision: rev, events: group })) return;
    }
    this.watchers.add({ conn, id, matches, from: fromRevision });
  }

  private publish(events: readonly WatchEvent[], revision: number): void {
    if (!this.watchers.size) return;
    for (const w of this.watchers) {
      if (revision < w.from) continue;
      const mine = events.filter((e) => w.matches(e.key));
      if (mine.length && !this.send(w.conn, { k: "ev", id: w.id, revision, events: mine })) {
        this.endWatch(w, "WATCHER_TOO_SLOW", "the watcher fell too far behind; resume from its last revision");
      }
    }
  }

  private endWatch(w: Watcher, code: string, message: string): void {
    this.watchers.delete(w);
    this.send(w.conn, { k: "ev", id: w.id, error: { code, message } });
    w.conn.close();
  }

  private send(conn: FramedConn, frame: unknown): boolean {
    return !conn.closed && conn.send(frame);
  }

  private serveRange(conn: FramedConn, reqId: number, range: RangeRequest): void {
    this.replyOk(conn, reqId, this.kv.range(range));
  }

  private replyOk(conn: FramedConn, id: number, result: unknown): void {
    if (!conn.closed) conn.send({ k: "res", id, ok: true, result });
  }

  private reply(conn: FramedConn, id: number, err: { code: ErrorCode; message: string; leader?: LeaderHint }): void {
    if (conn.closed) return;
    conn.send({ k: "res", id, ok: false, code: err.code, message: err.message, ...(err.leader ? { leader: err.leader } : {}) });
  }

  private failAllPending(code: ErrorCode, message: string): void {
    for (const p of this.pendingWrites.values()) this.reply(p.conn, p.reqId, { code, message });
    for (const r of this.pendingReads.values()) this.reply(r.conn, r.reqId, { code, message });
    for (const r of this.readsAwaitingApply) this.reply(r.conn, r.reqId, { code, message });
    this.pendingWrites.clear();
    this.pendingReads.clear();
    this.readsAwaitingApply.length = 0;
  }

  status(): NodeStatus {
    const s = this.core.status();
    const hint = this.core.leader === this.id ? { id: this.id, addr: formatAddr(this.self) } : this.leaderHint();
    const kv = this.kv.stats();
    return {
      id: this.id,
      addr: formatAddr(this.self),
      role: s.role,
      term: s.term,
      leader: s.leader,
      leaderAddr: hint?.addr ?? null,
      commitIndex: s.commitIndex,
      appliedIndex: s.appliedIndex,
      lastIndex: s.lastIndex,
      snapshotIndex: this.snapshot?.index ?? 0,
      walBytes: this.wal.sizeBytes(),
      keys: kv.keys,
      revision: kv.revision,
      uptimeMs: Date.now() - this.startedAt,
      rssBytes: process.memoryUsage.rss(),
      heapBytes: process.memoryUsage().heapUsed,
      version: VERSION,
    };
  }
}
