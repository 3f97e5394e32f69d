// A small metrics registry (counters, gauges, histograms, with labels) rendered in the Prometheus text
// exposition format (version 0.0.4), and the node's own metrics built on it.

import type { NodeStatus } from "../protocol";

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Most distinct label sets one metric may have; past it new ones share the `other` child (bad input must not grow memory). */
export const MAX_LABEL_SETS = 1000;

/** Latency buckets in seconds, 100 µs to 10 s. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Buckets for slow operations (snapshots), 1 ms to 2 min. */
const SLOW_BUCKETS = [0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

function formatValue(v: number): string {
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return Number.isNaN(v) ? "NaN" : String(v);
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labelText(names: readonly string[], values: readonly string[], extra = ""): string {
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i]!)}"`);
  if (extra) parts.push(extra);
  return parts.length ? `{${parts.join(",")}}` : "";
}

abstract class Family<C> {
  private readonly children = new Map<string, { values: string[]; child: C }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    readonly type: "counter" | "gauge" | "histogram",
  ) {
    if (!NAME_RE.test(name)) throw new Error(`bad metric name ${JSON.stringify(name)}`);
    for (const l of labelNames) if (!LABEL_RE.test(l) || l === "le") throw new Error(`bad label name ${JSON.stringify(l)} on ${name}`);
  }

  protected abstract newChild(): C;
  protected abstract renderChild(child: C, labels: readonly string[], out: string[]): void;

  /** The child for these label values (one per label name, in order). */
  labels(...values: string[]): C {
    if (values.length !== this.labelNames.length) {
      throw new Error(`${this.name} takes ${this.labelNames.length} label value(s), got ${values.length}`);
    }
    const key = values.join("\u0000");
    let entry = this.children.get(key);
    if (!entry) {
      const other = values.map(() => "other");
      if (this.children.size >= MAX_LABEL_SETS && key !== other.join("\u0000")) return this.labels(...other);
      entry = { values, child: this.newChild() };
      this.children.set(key, entry);
    }
    return entry.child;
  }

  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`, `# TYPE ${this.name} ${this.type}`);
    for (const { values, child } of this.children.values()) this.renderChild(child, values, out);
  }
}

export class CounterChild {
  value = 0;
  inc(by = 1): void {
    if (!(by >= 0)) throw new Error(`a counter only goes up (inc by ${by})`);
    this.value += by;
  }
}

export class Counter extends Family<CounterChild> {
  protected newChild(): CounterChild {
    return new CounterChild();
  }
  protected renderChild(c: CounterChild, labels: readonly string[], out: string[]): void {
    out.push(`${this.name}${labelText(this.labelNames, labels)} ${formatValue(c.value)}`);
  }
  /** For a counter without labels. */
  inc(by = 1): void {
    this.labels().inc(by);
  }
}

export class GaugeChild {
  value = 0;
  set(v: number): void {
    this.value = v;
  }
}

export class Gauge extends Family<GaugeChild> {
  protected newChild(): GaugeChild {
    return new GaugeChild();
  }
  protected renderChild(c: GaugeChild, labels: readonly string[], out: string[]): void {
    out.push(`${this.name}${labelText(this.labelNames, labels)} ${formatValue(c.value)}`);
  }
  /** For a gauge without labels. */
  set(v: number): void {
    this.labels().set(v);
  }
}

export class HistogramChild {
  /** Observations per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array(bounds.length + 1).fill(0);
  }
  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
  /** Observes the seconds since `startMs` (a performance.now() reading). */
  observeSince(startMs: number): void {
    this.observe((performance.now() - startMs) / 1000);
  }
}

export class Histogram extends Family<HistogramChild> {
  readonly bounds: readonly number[];
  constructor(name: string, help: string, buckets: readonly number[], labelNames: readonly string[] = []) {
    super(name, help, labelNames, "histogram");
    for (let i = 1; i < buckets.length; i++) if (!(buckets[i]! > buckets[i - 1]!)) throw new Error(`${name}: buckets must increase`);
    this.bounds = buckets;
  }
  protected newChild(): HistogramChild {
    return new HistogramChild(this.bounds);
  }
  protected renderChild(c: HistogramChild, labels: readonly string[], out: string[]): void {
    let cumulative = 0;
    for (let i = 0; i <= this.bounds.length; i++) {
      cumulative += c.counts[i]!;
      const le = i < this.bounds.length ? formatValue(this.bounds[i]!) : "+Inf";
      out.push(`${this.name}_bucket${labelText(this.labelNames, labels, `le="${le}"`)} ${cumulative}`);
    }
    out.push(`${this.name}_sum${labelText(this.labelNames, labels)} ${formatValue(c.sum)}`);
    out.push(`${this.name}_count${labelText(this.labelNames, labels)} ${c.count}`);
  }
  /** For a histogram without labels. */
  observe(v: number): void {
    this.labels().observe(v);
  }
}

export class Registry {
  private readonly families = new Map<string, Family<unknown>>();

  private add<F extends Family<unknown>>(f: F): F {
    if (this.families.has(f.name)) throw new Error(`metric ${f.name} registered twice`);
    this.families.set(f.name, f);
    if (!f.labelNames.length) f.labels(); // shown (as 0) before its first change
    return f;
  }

  counter(name: string, help: string, labelNames: string[] = []): Counter {
    if (!name.endsWith("_total")) throw new Error(`counter ${name} must end in _total`);
    return this.add(new Counter(name, help, labelNames, "counter"));
  }

  gauge(name: string, help: string, labelNames: string[] = []): Gauge {
    return this.add(new Gauge(name, help, labelNames, "gauge"));
  }

  histogram(name: string, help: string, buckets: readonly number[], labelNames: string[] = []): Histogram {
    return this.add(new Histogram(name, help, buckets, labelNames));
  }

  /** Every metric in the Prometheus text format. */
  render(): string {
    const out: string[] = [];
    for (const f of this.families.values()) f.render(out);
    return out.join("\n") + "\n";
  }
}

// ---- the node's metrics ----------------------------------------------------------------------

/** Values read from the node when metrics are rendered (gauges that are cheaper to read than to track). */
export interface NodeGauges {
  status: NodeStatus;
  pendingProposals: number;
  openConnections: number;
  watchers: number;
  leases: number;
  storedBytes: number;
  /** Bytes sent to each peer on its links since the node started. */
  peerBytesSent: { peer: number; bytes: number }[];
}

/** What metrics read of a connection (a FramedConn). */
export interface PeerConn {
  readonly bytesReceived: number;
  readonly closed: boolean;
}

/** A leader this node learned of: when (wall clock, ms), in which term. */
export interface LeaderChange {
  at: number;
  term: number;
  leader: number;
}

/** One second of this node's activity, for the dashboard's charts. */
export interface Sample {
  at: number;
  /** Log entries applied in the second (every node applies every committed write). */
  applied: number;
  /** Leader only: mean and 99th percentile commit latency of the writes of the second, ms; null without writes. */
  commitMeanMs: number | null;
  commitP99Ms: number | null;
}

/** What one node tells the dashboard about itself (the `stats` client request). */
export interface NodeStats {
  status: NodeStatus;
  leaderChanges: LeaderChange[];
  samples: Sample[];
}

/** Leader changes remembered for the dashboard. */
export const MAX_LEADER_HISTORY = 100;
/** The dashboard's charts cover this many one-second samples (5 minutes). */
const MAX_SAMPLES = 300;
const SAMPLE_MS = 1000;
/** Appends to a peer unanswered this long are taken as lost (the connection dropped them). */
const RTT_PROBE_TIMEOUT_MS = 5000;

const ROLES = ["follower", "precandidate", "candidate", "leader"];
const WRITE_OPS = new Set(["put", "del", "txn", "compact", "leaseGrant", "leaseKeepAlive", "leaseRevoke", "sessionRegister", "sessionTtl"]);
const OTHER_OPS = new Set(["range", "status", "watch", "leases", "stats", "snapshotSave", "snapshotChunk"]);
/** Answers to a proposed write that say it did not commit under this leader. */
const PROPOSAL_FAILURES = new Set(["LEADERSHIP_LOST", "SHUTTING_DOWN"]);

/** The label for a client request: the write's command, or the request kind. Never free text. */
function opLabel(req: { op?: unknown; cmd?: unknown }): string {
  const op = req.op === "write" ? (req.cmd as { op?: unknown } | null)?.op : req.op;
  return typeof op === "string" && (WRITE_OPS.has(op) || OTHER_OPS.has(op)) ? op : "unknown";
}

/** The q-quantile of the observations in `counts` (per bucket), interpolated within its bucket. */
function quantile(bounds: readonly number[], counts: readonly number[], q: number): number {
  const total = counts.reduce((a, b) => a + b, 0);
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    if (counts[i]! === 0 || seen + counts[i]! < rank) {
      seen += counts[i]!;
      continue;
    }
    if (i >= bounds.length) return bounds[bounds.length - 1]!;
    const lower = i === 0 ? 0 : bounds[i - 1]!;
    return lower + (bounds[i]! - lower) * ((rank - seen) / counts[i]!);
  }
  return 0;
}

/**
 * Everything /metrics reports for one node, and the hooks the runtime calls. Each hook is one call at
 * the place the event happens; gauges are read from the node (NodeGauges) only when rendered.
 */
export class NodeMetrics {
  private readonly r = new Registry();

  private readonly leaderChangesSeen = this.r.counter("raftkv_leader_changes_seen_total", "Times this node learned of a new leader.");
  private readonly proposalsCommitted = this.r.counter("raftkv_proposals_committed_total", "Client writes this node proposed as leader that committed and were applied.");
  private readonly proposalsApplied = this.r.counter("raftkv_proposals_applied_total", "Log entries applied to this node's state machine.");
  private readonly proposalsFailed = this.r.counter("raftkv_proposals_failed_total", "Client writes this node proposed as leader that failed (leadership lost or shutdown).");
  private readonly proposalsPending = this.r.gauge("raftkv_proposals_pending", "Client writes proposed by this node awaiting commit.");
  private readonly requests = this.r.counter("raftkv_client_requests_total", "Client requests answered, by operation and result (ok or the error code).", ["op", "result"]);
  private readonly requestDuration = this.r.histogram("raftkv_client_request_duration_seconds", "Time from a client request's arrival to its answer.", LATENCY_BUCKETS, ["op"]);
  private readonly commitDuration = this.r.histogram("raftkv_commit_duration_seconds", "Leader: time from a client write's arrival to its commit and apply (successful writes).", LATENCY_BUCKETS);
  private readonly walFsyncDuration = this.r.histogram("raftkv_wal_fsync_duration_seconds", "Time of one fdatasync of the write-ahead log.", LATENCY_BUCKETS);
  private readonly applyDuration = this.r.histogram("raftkv_apply_duration_seconds", "Time to apply one batch of committed entries to the state machine.", LATENCY_BUCKETS);
  private readonly snapshots = this.r.counter("raftkv_snapshots_total", "Snapshots this node wrote of its state machine.");
  private readonly snapshotSize = this.r.gauge("raftkv_snapshot_size_bytes", "Size of the latest snapshot this node wrote.");
  private readonly snapshotDuration = this.r.histogram("raftkv_snapshot_duration_seconds", "Time to encode and durably write a snapshot.", SLOW_BUCKETS);
  private readonly eventLoopStalls = this.r.histogram("raftkv_event_loop_stall_seconds", "Times the JS thread was busy long enough to delay heartbeats (over 2 heartbeat intervals), by how long.", SLOW_BUCKETS);
  private readonly peerSentBytes = this.r.counter("raftkv_peer_sent_bytes_total", "Bytes sent to a peer.", ["peer"]);
  private readonly peerReceivedBytes = this.r.counter("raftkv_peer_received_bytes_total", "Bytes received from a peer.", ["peer"]);
  private readonly peerSentMessages = this.r.counter("raftkv_peer_sent_messages_total", "Raft messages sent to a peer.", ["peer"]);
  private readonly peerReceivedMessages = this.r.counter("raftkv_peer_received_messages_total", "Raft messages received from a peer.", ["peer"]);
  private readonly peerRoundTrip = this.r.histogram("raftkv_peer_round_trip_time_seconds", "Leader: time from a heartbeat to a peer until its answer.", LATENCY_BUCKETS, ["peer"]);
  private readonly openConnections = this.r.gauge("raftkv_open_connections", "Open TCP connections accepted by this node (clients and peers).");
  private readonly watchers = this.r.gauge("raftkv_watchers", "Watches this node is serving.");
  private readonly leases = this.r.gauge("raftkv_leases", "Leases in the state machine.");
  private readonly keys = this.r.gauge("raftkv_keys", "Keys in the state machine.");
  private readonly storedBytes = this.r.gauge("raftkv_stored_bytes", "Approximate bytes of keys and values in the state machine.");
  private readonly term = this.r.gauge("raftkv_term", "Current Raft term.");
  private readonly isLeader = this.r.gauge("raftkv_is_leader", "1 if this node is the leader.");
  private readonly hasLeader = this.r.gauge("raftkv_has_leader", "1 if this node knows a leader.");
  private readonly role = this.r.gauge("raftkv_role", "Current role (1 for the active one).", ["role"]);
  private readonly commitIndex = this.r.gauge("raftkv_commit_index", "Highest log index known committed.");
  private readonly appliedIndex = this.r.gauge("raftkv_applied_index", "Highest log index applied to the state machine.");
  private readonly lastIndex = this.r.gauge("raftkv_last_index", "Last index in the log.");
  private readonly snapshotIndex = this.r.gauge("raftkv_snapshot_index", "Index of the latest snapshot on disk.");
  private readonly walBytes = this.r.gauge("raftkv_wal_bytes", "Bytes of write-ahead log on disk.");
  private readonly revision = this.r.gauge("raftkv_revision", "Current store revision.");
  private readonly uptime = this.r.gauge("raftkv_uptime_seconds", "Seconds since the node started.");
  private readonly rss = this.r.gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
  private readonly cpu = this.r.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.");
  private readonly startTime = this.r.gauge("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.");

  /** Requests in flight per connection: their operation and arrival time. */
  private readonly inFlight = new WeakMap<object, Map<number, { op: string; t0: number }>>();
  /** Connections peers opened to this node, and the bytes received on each so far counted. */
  private readonly peerConns = new Map<PeerConn, { peer: number; bytes: number }>();
  /** Per peer: appends not yet answered, when the last answer came, and a heartbeat being timed. */
  private readonly rtt = new Map<number, { unanswered: number; lastAnswer: number; probe: number | null }>();
  private lastLeader: { term: number; leader: number } | null = null;
  readonly leaderChanges: LeaderChange[] = [];
  readonly samples: Sample[] = [];
  private lastApplied = 0;
  private lastCommitCounts: number[] = [];
  private lastCommitSum = 0;
  private readonly timer: ReturnType<typeof setInterval>;

  constructor(private readonly gauges: () => NodeGauges) {
    this.startTime.set(Math.round(Date.now() / 1000 - process.uptime()));
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
    this.timer.unref?.();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  // ---- hooks the runtime calls ---------------------------------------------------------

  /** The node's known leader changed (NONE: none known). */
  leaderSeen(term: number, leader: number): void {
    if (leader < 0 || (this.lastLeader?.term === term && this.lastLeader.leader === leader)) return;
    this.lastLeader = { term, leader };
    this.leaderChangesSeen.inc();
    this.leaderChanges.push({ at: Date.now(), term, leader });
    if (this.leaderChanges.length > MAX_LEADER_HISTORY) this.leaderChanges.shift();
  }

  requestStarted(conn: object, req: { id: number; op?: unknown; cmd?: unknown }): void {
    let m = this.inFlight.get(conn);
    if (!m) this.inFlight.set(conn, (m = new Map()));
    m.set(req.id, { op: opLabel(req), t0: performance.now() });
  }

  /** A request was answered: `result` is "ok" or the error code. */
  requestEnded(conn: object, id: number, result: string): void {
    const m = this.inFlight.get(conn);
    const r = m?.get(id);
    if (!r) return;
    m!.delete(id);
    const seconds = (performance.now() - r.t0) / 1000;
    this.requests.labels(r.op, result).inc();
    this.requestDuration.labels(r.op).observe(seconds);
    if (!WRITE_OPS.has(r.op)) return;
    if (result === "ok") {
      this.commitDuration.observe(seconds);
      this.proposalsCommitted.inc();
    } else if (PROPOSAL_FAILURES.has(result)) this.proposalsFailed.inc();
  }

  /** A connection turned out to come from a peer (its hello frame). */
  peerConnected(conn: PeerConn, peer: number): void {
    this.countPeerBytesReceived(); // lets go of closed connections
    if (!this.peerConns.has(conn)) this.peerConns.set(conn, { peer, bytes: 0 });
  }

  private countPeerBytesReceived(): void {
    for (const [conn, seen] of this.peerConns) {
      this.peerReceivedBytes.labels(String(seen.peer)).inc(conn.bytesReceived - seen.bytes);
      seen.bytes = conn.bytesReceived;
      if (conn.closed) this.peerConns.delete(conn);
    }
  }

  walSynced(ms: number): void {
    this.walFsyncDuration.observe(ms / 1000);
  }

  /** A batch of committed entries was applied. */
  applied(entries: number, ms: number): void {
    if (!entries) return;
    this.proposalsApplied.inc(entries);
    this.applyDuration.observe(ms / 1000);
  }

  eventLoopStalled(ms: number): void {
    this.eventLoopStalls.observe(ms / 1000);
  }

  snapshotWritten(bytes: number, ms: number): void {
    this.snapshots.inc();
    this.snapshotSize.set(bytes);
    this.snapshotDuration.observe(ms / 1000);
  }

  /**
   * A Raft message handed to the link to `m.to`. Round trips are timed on heartbeats (appends without
   * entries, answered without a disk write) sent while every earlier append to that peer has been
   * answered: a peer answers appends in order, so the next answer is the heartbeat's.
   */
  messageSent(m: { type: string; to: number; entries?: unknown[] }): void {
    this.peerSentMessages.labels(String(m.to)).inc();
    if (m.type !== "app") return;
    const now = performance.now();
    let r = this.rtt.get(m.to);
    if (!r) this.rtt.set(m.to, (r = { unanswered: 0, lastAnswer: now, probe: null }));
    // Appends lost with a dropped connection are never answered: after a silence, count afresh.
    if (r.unanswered > 0 && now - r.lastAnswer > RTT_PROBE_TIMEOUT_MS) {
      r.unanswered = 0;
      r.probe = null;
    }
    if (r.unanswered === 0 && !m.entries?.length) r.probe = now;
    r.unanswered++;
  }

  messageReceived(m: { type: string; from: number }): void {
    this.peerReceivedMessages.labels(String(m.from)).inc();
    const r = m.type === "appResp" ? this.rtt.get(m.from) : undefined;
    if (!r) return;
    r.unanswered = Math.max(0, r.unanswered - 1);
    r.lastAnswer = performance.now();
    if (r.probe !== null) this.peerRoundTrip.labels(String(m.from)).observeSince(r.probe);
    r.probe = null;
  }

  // ---- reading ---------------------------------------------------------------------------

  /** Reads the node's gauges and renders every metric in the Prometheus text format. */
  render(): string {
    const g = this.gauges();
    const s = g.status;
    this.proposalsPending.set(g.pendingProposals);
    this.openConnections.set(g.openConnections);
    this.watchers.set(g.watchers);
    this.leases.set(g.leases);
    this.keys.set(s.keys);
    this.storedBytes.set(g.storedBytes);
    for (const p of g.peerBytesSent) {
      const sent = this.peerSentBytes.labels(String(p.peer));
      sent.inc(Math.max(0, p.bytes - sent.value));
    }
    this.countPeerBytesReceived();
    this.term.set(s.term);
    this.isLeader.set(s.role === "leader" ? 1 : 0);
    this.hasLeader.set(s.leader >= 0 ? 1 : 0);
    for (const role of ROLES) this.role.labels(role).set(s.role === role ? 1 : 0);
    this.commitIndex.set(s.commitIndex);
    this.appliedIndex.set(s.appliedIndex);
    this.lastIndex.set(s.lastIndex);
    this.snapshotIndex.set(s.snapshotIndex);
    this.walBytes.set(s.walBytes);
    this.revision.set(s.revision);
    this.uptime.set(Math.round(s.uptimeMs / 1000));
    this.rss.set(process.memoryUsage.rss());
    const cpu = process.cpuUsage();
    const cpuSeconds = this.cpu.labels();
    cpuSeconds.inc(Math.max(0, (cpu.user + cpu.system) / 1e6 - cpuSeconds.value));
    return this.r.render();
  }

  stats(): NodeStats {
    return { status: this.gauges().status, leaderChanges: this.leaderChanges, samples: this.samples };
  }

  private sample(): void {
    const applied = this.proposalsApplied.labels().value;
    const c = this.commitDuration.labels();
    const counts = c.counts.map((n, i) => n - (this.lastCommitCounts[i] ?? 0));
    const n = counts.reduce((a, b) => a + b, 0);
    this.samples.push({
      at: Date.now(),
      applied: applied - this.lastApplied,
      commitMeanMs: n ? ((c.sum - this.lastCommitSum) / n) * 1000 : null,
      commitP99Ms: n ? quantile(this.commitDuration.bounds, counts, 0.99) * 1000 : null,
    });
    if (this.samples.length > MAX_SAMPLES) this.samples.shift();
    this.lastApplied = applied;
    this.lastCommitCounts = [...c.counts];
    this.lastCommitSum = c.sum;
  }
}
