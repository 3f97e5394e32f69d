// The production node: assembles the runtime (runtime.ts) with real time, the write-ahead log and
// snapshot files in the data directory, TCP peers and clients, and optional HTTP.

import { formatAddr, type NodeAddr } from "../config";
import { ByteBudget, connectionsWithinFileLimit, DEFAULT_NET_LIMITS, listenFrames, SlowReaderError, loadTlsMaterial, type FramedConn, type FrameListener, type NetLimits, type RefusedError, type TlsFiles, type TlsMaterial } from "../net";
import type { Snapshot } from "../raft/types";
import { fromWire, parseMessage } from "../raft/wire";
import { lockDataDir, openLatestSnapshot, Wal, writeSnapshot, writeSnapshotAsync, type DataDirLock } from "../storage";
import { clusterIdOf, KnownPeers, loadOrCreateIdentity, writeIdentity } from "../storage/identity";
import type { HelloFrame, NodeStatus, RequestFrame, SnapChunkFrame, WelcomeFrame } from "../protocol";
import { VERSION } from "../protocol";
import { ClientService } from "./clients";
import { ConnectionGate, REFUSED_INCARNATION, REFUSED_JOIN_PENDING } from "./gate";
import { serveHttp, type HttpEndpoints } from "./http";
import { LEASE_CHECK_MS, LeaseKeeper } from "./leases";
import { bestTransferTarget, dropBootstrapConfig, memberAddrs, unwrapSnapshot, wrapSnapshotData } from "./membership";
import { Logger, type LogFormat, type LogLevel } from "./log";
import { NodeMetrics } from "./metrics";
import { NodeRuntime, type Clock } from "./runtime";
import { TcpTransport } from "./transport";
import { Watches } from "./watches";
import { StallWatch } from "./stall";

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
  /** Serve /health, /status and /metrics over HTTP on this port (0 or absent: no HTTP). */
  httpPort?: number;
  /** Mutual TLS on the node port (and HTTPS on the HTTP port) with these files; re-read by reloadTls(). */
  tls?: TlsFiles;
  /** Connection limits of the node port (src/net/limits.ts); defaults DEFAULT_NET_LIMITS. */
  limits?: Partial<NetLimits>;
  /**
   * Join an existing cluster (after `raftkv member add`): start with no configuration and learn it
   * from the leader. `nodes` then only says where to find members and this node's own address. Only a
   * new data dir joins; one that exists says what the node is (IDENTITY), with or without this flag.
   */
  join?: boolean;
}

export const DEFAULT_HEARTBEAT_MS = 50;
export const DEFAULT_ELECTION_MS = 300;
export const DEFAULT_SNAPSHOT_ENTRIES = 10_000;
export { MAX_PENDING_REQUESTS } from "./limits";
/** A node idle (nothing applied) this long runs one full garbage collection. */
const IDLE_GC_AFTER_MS = 2000;
/** How often the event loop's health is checked (stall.ts). */
const STALL_WATCH_MS = 20;
/** Granularity of the Raft clock. */
const TICK_MS = 10;

/** Real time: a monotonic clock (durations and log stamps) and the timers of the event loop. */
export const realClock: Clock = {
  now: () => performance.now(),
  defer: (fn) => void setImmediate(fn),
  every: (ms, fn) => {
    const t = setInterval(fn, ms);
    return () => clearInterval(t);
  },
};

export class RaftKvNode {
  readonly id: number;
  readonly self: NodeAddr;
  private readonly opts: Required<Omit<NodeOptions, "listenHost" | "httpPort" | "join" | "tls" | "limits">> &
    Pick<NodeOptions, "listenHost" | "httpPort" | "join" | "tls" | "limits">;
  /** Every known node's address: the members' (from the configuration) and nodes.conf's. Updated in place. */
  private readonly addrs: NodeAddr[];
  private http: HttpEndpoints | null = null;
  readonly log: Logger;
  private runtime!: NodeRuntime;
  private clients!: ClientService;
  private watches!: Watches;
  private leases!: LeaseKeeper;
  private transport!: TcpTransport;
  private wal!: Wal;
  private lock!: DataDirLock;
  private listener: FrameListener | null = null;
  private gate!: ConnectionGate;
  private tls: TlsMaterial | undefined;
  private leaseTimer: ReturnType<typeof setInterval> | null = null;
  private stopStallWatch: (() => void) | null = null;
  private stopped = false;
  /** The data dir was created by `serve --join`: the configuration comes from the log, not nodes.conf. */
  private joined = false;
  private readonly startedAt = Date.now();
  private readonly metrics = new NodeMetrics(() => {
    const kv = this.runtime.kv.stats();
    return {
      status: this.status(),
      pendingProposals: this.runtime.pendingWriteCount,
      openConnections: this.listener?.connections.size ?? 0,
      watchers: this.watches.count,
      leases: kv.leases,
      storedBytes: kv.approxBytes,
      peerBytesSent: this.transport.bytesSent(),
    };
  });

  private appliedAtLastCheck = 0;
  private idleSince = Date.now();
  private collectedSinceActivity = false;

  constructor(opts: NodeOptions) {
    const self = opts.nodes.find((n) => n.id === opts.id);
    if (!self) throw new Error(`node ${opts.id} is not listed in the configuration (ids: ${opts.nodes.map((n) => n.id).join(", ")})`);
    this.id = opts.id;
    this.self = self;
    this.addrs = [...opts.nodes];
    this.opts = {
      heartbeatMs: DEFAULT_HEARTBEAT_MS,
      electionMs: DEFAULT_ELECTION_MS,
      snapshotEntries: DEFAULT_SNAPSHOT_ENTRIES,
      logLevel: "info",
      logFormat: "text",
      groupCommit: true,
      ...opts,
    };
    if (this.opts.electionMs < 2 * this.opts.heartbeatMs) {
      throw new Error(`--election-ms (${this.opts.electionMs}) must be at least twice --heartbeat-ms (${this.opts.heartbeatMs})`);
    }
    if (this.opts.heartbeatMs < TICK_MS) throw new Error(`--heartbeat-ms must be at least ${TICK_MS}`);
    this.log = new Logger(this.id, () => this.runtime?.core.term ?? 0, this.opts.logLevel, this.opts.logFormat);
  }

  // ---- lifecycle ------------------------------------------------------------------------

  async start(): Promise<void> {
    this.lock = lockDataDir(this.opts.dataDir);
    try {
      const dataDir = this.opts.dataDir;
      const { identity, created } = loadOrCreateIdentity(dataDir, { conf: clusterIdOf(this.opts.nodes), nodeId: this.id, join: this.opts.join === true });
      if (created) this.log.info("recorded this node's identity in its data dir", { ...identity });
      else if (this.opts.join && !identity.joined) this.log.info("--join ignored: this data dir already belongs to a cluster created from nodes.conf", { cluster: identity.clusterId });
      this.joined = identity.joined === true;
      const gateOptions = {
        isMember: (id: number) => this.addrs.some((a) => a.id === id),
        memberAddrs: () => memberAddrs(this.runtime.core.membership.config, this.opts.nodes),
        recordIdentity: (updated: typeof identity) => writeIdentity(dataDir, updated),
        joinConflict: (message: string) => {
          this.log.error(`refusing to run: ${message}`);
          process.exit(2);
        },
      };
      this.gate = new ConnectionGate(identity, gateOptions, new KnownPeers(dataDir), this.log);
      this.tls = this.opts.tls && loadTlsMaterial(this.opts.tls);
      this.recover();
      const limits = { ...DEFAULT_NET_LIMITS, ...this.opts.limits };
      limits.maxConnections = connectionsWithinFileLimit(limits.maxConnections);
      const listenHost = this.opts.listenHost ?? this.self.host;
      this.listener = listenFrames({
        hostname: listenHost,
        port: this.self.port,
        tls: this.tls,
        ...limits,
        partialFrames: new ByteBudget(limits.maxPartialFrameBytes),
        slowReader: {
          pauseAtBytes: limits.slowReaderPauseBytes,
          disconnectAtBytes: limits.slowReaderDisconnectBytes,
          total: new ByteBudget(limits.maxQueuedBytesTotal),
        },
        onFrame: (conn, value) => this.onFrame(conn, value),
        onError: (conn, err) =>
          this.log.warn(err instanceof SlowReaderError ? "disconnected a client that does not read its replies" : "closed a connection that sent bad data", {
            remote: conn.remote,
            reason: err.message,
          }),
        onRefused: (remote, reason) => this.log.warn("refused a connection", { remote, reason }),
        onClose: (conn) => {
          this.watches.dropConn(conn);
          this.clients.dropConn(conn);
          this.transport.connectionClosed(conn);
        },
      });
      if (this.opts.httpPort) {
        this.http = serveHttp(listenHost, this.opts.httpPort, { self: this.id, nodes: this.addrs, status: () => this.status(), metrics: this.metrics, tls: () => this.tls });
      }
      if (!this.tls && !isLoopback(listenHost)) {
        this.log.warn(
          `listening on ${listenHost} without TLS: anyone who can reach port ${this.self.port} can read and write data; ` +
            "turn TLS on with `raftkv certs init nodes.conf` and `raftkv serve ... --certs certs` (or a certs/ directory beside nodes.conf)",
        );
      }
    } catch (err) {
      this.listener?.stop();
      this.wal?.close();
      this.lock.release();
      throw err;
    }
    this.transport.connect();
    this.runtime.start();
    this.stopStallWatch = new StallWatch({
      intervalMs: STALL_WATCH_MS,
      thresholdMs: 2 * this.opts.heartbeatMs,
      onStall: (ms) => {
        this.metrics.eventLoopStalled(ms);
        this.log.logAtMostEvery(1000, "warn", "event loop stalled: heartbeats and replies were late", { ms: Math.round(ms), role: this.runtime.core.role, electionMs: this.opts.electionMs });
      },
    }).start();
    this.leaseTimer = setInterval(() => {
      this.leases.expire();
      this.transport.expireSnapshotTransfers();
      this.clients.saves.expire();
      this.collectGarbageWhenIdle();
    }, LEASE_CHECK_MS);
    this.log.info("serving", {
      ...(this.http ? { http: this.http.port } : {}),
      addr: formatAddr(this.self),
      dataDir: this.opts.dataDir,
      peers: this.opts.nodes.length - 1,
      tls: this.tls ? "on" : "off",
      heartbeatMs: this.opts.heartbeatMs,
      electionMs: this.opts.electionMs,
      version: VERSION,
    });
  }

  private recover(): void {
    const t0 = performance.now();
    const dir = this.opts.dataDir;
    const storageLog = (level: "warn" | "info", msg: string) => this.log.log(level, msg);
    const opened = Wal.open(dir, { log: storageLog });
    const wal = opened.wal;
    // A snapshot file may carry the configuration ahead of the state machine's bytes (membership.ts).
    const state = { ...opened.state, snapshot: opened.state.snapshot && unwrapSnapshot(opened.state.snapshot) };
    this.wal = wal;
    this.transport = new TcpTransport(this.id, this.opts.nodes, this.log, {
      hello: this.gate.hello(),
      tls: this.tls,
      onRefused: (peer, err) => this.refusedByPeer(peer, err),
      onFrame: (peer, value) => {
        if ((value as { k?: unknown } | null)?.k === "welcome") this.welcomed(peer, value as Partial<WelcomeFrame>);
      },
    });
    // A node that joined has no bootstrap configuration: its snapshots always carry theirs.
    const bootstrap = this.joined ? [] : this.opts.nodes;
    const forStorage = (snap: Snapshot) => ({ index: snap.index, term: snap.term, data: wrapSnapshotData(dropBootstrapConfig(snap, bootstrap)) });
    this.runtime = new NodeRuntime(
      {
        id: this.id,
        // Joined: no configuration until the log or a snapshot (the leader's, or its own on a restart) gives one.
        voters: this.joined ? [] : this.opts.nodes.map((n) => n.id),
        heartbeatTicks: Math.max(1, Math.round(this.opts.heartbeatMs / TICK_MS)),
        electionTicks: Math.max(2, Math.round(this.opts.electionMs / TICK_MS)),
        tickMs: TICK_MS,
        rng: Math.random,
        snapshotEntries: this.opts.snapshotEntries,
        groupCommit: this.opts.groupCommit,
      },
      {
        clock: realClock,
        transport: this.transport,
        storage: {
          wal,
          writeSnapshot: (snap) => writeSnapshot(dir, forStorage(snap)),
          writeSnapshotAsync: (snap) => writeSnapshotAsync(dir, forStorage(snap)),
          // The file's bytes are what a follower gets: the configuration (if any) ahead of the state's.
          openLatestSnapshot: () => openLatestSnapshot(dir),
        },
        recovered: state,
        log: this.log,
        failStop: (reason) => {
          this.log.error("stopping the node", { reason });
          process.exit(2);
        },
        metrics: this.metrics,
      },
    );
    this.watches = new Watches(this.runtime.kv, this.id);
    this.runtime.onSnapshotInstalled.push(() => this.watches.endAfterSnapshot());
    this.runtime.onConfigChanged.push((config) => {
      // Addresses travel in the configuration; nodes.conf ones stay known for leader hints.
      const members = memberAddrs(config, this.opts.nodes);
      const others = this.opts.nodes.filter((n) => !members.some((m) => m.id === n.id));
      this.addrs.splice(0, this.addrs.length, ...members, ...others);
      this.transport.setPeers(members);
    });
    this.leases = new LeaseKeeper(this.runtime, realClock, this.log);
    this.clients = new ClientService({ runtime: this.runtime, watches: this.watches, logNow: () => this.leases.now(), nodes: this.addrs, status: () => this.status(), metrics: this.metrics, electionMs: this.opts.electionMs });
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
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    this.stopStallWatch?.();
    this.transport.close();
    this.listener?.stop();
    this.http?.stop();
    this.metrics.stop();
    this.runtime.stop({ code: "SHUTTING_DOWN", message: `node ${this.id} is shutting down` });
    try {
      this.wal.close();
    } finally {
      this.lock.release();
    }
    this.log.info("stopped");
  }

  /** SIGHUP: re-read the certificate files; connections made from now on use them. */
  reloadTls(): void {
    if (!this.opts.tls || this.stopped) return;
    try {
      this.tls = loadTlsMaterial(this.opts.tls);
      this.listener?.reloadTls(this.tls);
      this.transport.setTls(this.tls);
      this.http?.reloadTls(this.tls);
      this.log.info("reloaded TLS certificates", { cert: this.opts.tls.cert });
    } catch (err) {
      this.log.error("could not reload TLS certificates; keeping the old ones", { reason: (err as Error).message });
    }
  }

  /**
   * A member welcomed this joining node. Until its log or a snapshot gives it a configuration, it takes
   * the members' addresses from the welcome: its nodes.conf may not name the leader, which it must reach.
   */
  private welcomed(peer: number, frame: Partial<WelcomeFrame>): void {
    const welcome = this.gate.onWelcome(peer, frame);
    if (!welcome || welcome.length === 0 || this.runtime.core.membership.config.voters.length > 0) return;
    const others = this.addrs.filter((a) => !welcome.some((w) => w.id === a.id));
    this.addrs.splice(0, this.addrs.length, ...welcome, ...others);
    this.transport.setPeers([...this.addrs]);
  }

  /** A peer refused our connection. One that knows another incarnation of this node is final. */
  private refusedByPeer(peer: number, err: RefusedError): void {
    this.gate.refusedBy(peer, err.code, err.cluster);
    if (err.code !== REFUSED_INCARNATION) {
      // A joining peer not yet welcomed by its cluster is expected for a moment.
      this.log.log(err.code === REFUSED_JOIN_PENDING ? "info" : "error", "a peer refused this node's connection", { peer, reason: err.message });
      return;
    }
    this.log.error(`refusing to run: ${err.message}`, { peer });
    process.exit(2);
  }

  /**
   * A leader about to stop hands leadership to the most up-to-date voter first (SIGTERM), and waits
   * at most a few election timeouts for it to take over. Returns whom it handed over to, or null.
   */
  async handOffLeadership(): Promise<number | null> {
    if (this.stopped || this.runtime.role !== "leader") return null;
    const target = bestTransferTarget(this.runtime);
    if (target === null || this.runtime.transferLeadership(target)) return null;
    const deadline = performance.now() + 3 * this.opts.electionMs;
    while (performance.now() < deadline && this.runtime.leader !== target) {
      if (this.runtime.role === "leader" && !this.runtime.core.transferring) return null;
      await Bun.sleep(5);
    }
    this.log.info("handed leadership over before stopping", { to: target, done: this.runtime.leader === target });
    return this.runtime.leader === target ? target : null;
  }

  get port(): number {
    return this.listener?.port ?? this.self.port;
  }

  // ---- network --------------------------------------------------------------------------

  private onFrame(conn: FramedConn, value: unknown): void {
    if (!value || typeof value !== "object") throw new Error("frame is not an object");
    const f = value as { k?: unknown };
    switch (f.k) {
      case "raft": {
        const m = parseMessage(fromWire((value as { m: unknown }).m));
        if (typeof m === "string") throw new Error(`malformed raft message: ${m}`);
        if (!this.gate.admitsPeerFrame(conn, "raft", m.from)) return;
        if (m.to !== this.id) {
          this.log.warn("dropped a message meant for another node (check nodes.conf on every host)", { to: m.to, from: m.from });
          return;
        }
        this.runtime.step(m);
        return;
      }
      case "snapChunk": {
        if (!this.gate.admitsPeerFrame(conn, "snapshot chunk", (value as SnapChunkFrame).from)) return;
        const m = this.transport.onSnapChunk(conn, value as SnapChunkFrame, (from, term) => this.runtime.snapshotChunkReceived(from, term));
        if (m) this.runtime.step(m);
        return;
      }
      case "hello":
        this.gate.onHello(conn, value as Partial<HelloFrame>);
        if (conn.peerId !== null) this.metrics.peerConnected(conn, conn.peerId);
        return;
      case "req": {
        const req = value as RequestFrame;
        const denied = this.gate.deniedReason(conn, req);
        if (denied === null) this.clients.onRequest(conn, req);
        else if (typeof req.id === "number") conn.send({ k: "res", id: req.id, ok: false, code: "PERMISSION_DENIED", message: `permission denied: ${denied}` });
        return;
      }
      default:
        throw new Error(`unknown frame kind ${JSON.stringify(f.k)}`);
    }
  }

  /**
   * Under load the JS heap fills with short-lived garbage faster than the collector returns it; once
   * the node has been idle (nothing applied) for a while, one collection gives that memory back.
   */
  private collectGarbageWhenIdle(): void {
    try {
      this.collectGarbageWhenIdleUnguarded();
    } catch (err) {
      // Reading memory figures can fail (EMFILE when out of file descriptors): skip this round.
      this.log.warn("idle collection skipped", { reason: (err as Error).message });
    }
  }

  private collectGarbageWhenIdleUnguarded(): void {
    const applied = this.runtime.applied;
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

  status(): NodeStatus {
    const core = this.runtime.core;
    const s = core.status();
    const hint = core.leader === this.id ? { id: this.id, addr: formatAddr(this.self) } : this.clients.leaderHint();
    const kv = this.runtime.kv.stats();
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
      snapshotIndex: this.runtime.snapshot?.index ?? 0,
      walBytes: this.wal.sizeBytes(),
      keys: kv.keys,
      revision: kv.revision,
      uptimeMs: Date.now() - this.startedAt,
      rssBytes: process.memoryUsage.rss(),
      heapBytes: process.memoryUsage().heapUsed,
      version: VERSION,
      voters: s.config.voters,
      learners: s.config.learners,
      configIndex: s.configIndex,
      ...(s.progress
        ? { followers: Object.entries(s.progress).map(([id, p]) => ({ id: Number(id), match: p.match, lag: Math.max(0, s.commitIndex - p.match), state: p.state })) }
        : {}),
    };
  }
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}
