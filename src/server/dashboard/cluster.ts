// The dashboard's view of the whole cluster, gathered by the node that serves the page: it asks every
// other node for its `stats` over the client protocol (their addresses are in nodes.conf) and merges
// the answers with its own.

import { formatAddr, type NodeAddr } from "../../config";
import { dialFrames, type FramedConn, type TlsMaterial } from "../../net";
import type { NodeStatus, RequestFrame, ResponseFrame } from "../../protocol";
import { MAX_LEADER_HISTORY, type LeaderChange, type NodeStats, type Sample } from "../metrics";

/** How long one node may take to answer before the dashboard shows it as unreachable. */
export const PEER_STATS_TIMEOUT_MS = 1000;
/** Page loads within this long of a gathering share it, however many browsers watch. */
const GATHER_REUSE_MS = 500;

export interface NodeView {
  id: number;
  addr: string;
  reachable: boolean;
  /** Why it is unreachable. */
  error?: string;
  status?: NodeStatus;
  /** Entries of the leader's commit index this node has yet to apply (known while a leader is reachable). */
  lag?: number;
}

export interface ClusterSnapshot {
  /** When gathered (wall clock, ms). */
  at: number;
  /** The node that gathered it. */
  from: number;
  /** The reachable leader of the highest term, or null. */
  leader: number | null;
  nodes: NodeView[];
  /** Leaders of the recent terms, oldest first, merged from every reachable node. */
  leaderChanges: LeaderChange[];
  /** One-second samples from the leader (else from this node), oldest first. */
  samples: Sample[];
  samplesFrom: number;
}

/** A kept connection to one node with its requests in flight. */
class StatsLink {
  private conn: Promise<FramedConn> | null = null;
  private nextId = 1;
  private readonly waiting = new Map<number, (f: ResponseFrame | Error) => void>();

  constructor(
    private readonly node: NodeAddr,
    private readonly tls: () => TlsMaterial | undefined,
  ) {}

  private connect(): Promise<FramedConn> {
    this.conn ??= dialFrames(
      this.node.host,
      this.node.port,
      {
        onFrame: (_c, value) => {
          const f = value as ResponseFrame;
          this.waiting.get(f?.id)?.(f);
        },
        onClose: () => this.reset(new Error("connection closed")),
        tls: this.tls(),
      },
      PEER_STATS_TIMEOUT_MS,
    ).catch((err: Error) => {
      this.conn = null;
      throw err;
    });
    return this.conn;
  }

  private reset(err: Error): void {
    this.conn = null;
    for (const done of this.waiting.values()) done(err);
    this.waiting.clear();
  }

  async stats(): Promise<NodeStats> {
    const conn = await this.connect();
    const id = this.nextId++;
    const answer = await new Promise<ResponseFrame | Error>((resolve) => {
      const timer = setTimeout(() => resolve(new Error(`no answer within ${PEER_STATS_TIMEOUT_MS} ms`)), PEER_STATS_TIMEOUT_MS);
      this.waiting.set(id, (f) => {
        clearTimeout(timer);
        resolve(f);
      });
      if (!conn.send({ k: "req", id, op: "stats" } satisfies RequestFrame)) this.waiting.get(id)!(new Error("connection closed"));
    });
    this.waiting.delete(id);
    if (answer instanceof Error) {
      conn.close();
      throw answer;
    }
    if (!answer.ok) throw new Error(`${answer.code}: ${answer.message}`);
    return answer.result as NodeStats;
  }

  close(): void {
    void this.conn?.then((c) => c.close(), () => {});
    this.reset(new Error("closed"));
  }
}

export class ClusterView {
  private readonly links = new Map<number, StatsLink>();
  private last: { at: number; snapshot: Promise<ClusterSnapshot> } | null = null;

  constructor(
    private readonly self: number,
    private readonly nodes: readonly NodeAddr[],
    private readonly localStats: () => NodeStats,
    tls: () => TlsMaterial | undefined = () => undefined,
  ) {
    for (const n of nodes) if (n.id !== self) this.links.set(n.id, new StatsLink(n, tls));
  }

  snapshot(): Promise<ClusterSnapshot> {
    const now = Date.now();
    if (!this.last || now - this.last.at > GATHER_REUSE_MS) this.last = { at: now, snapshot: this.gather() };
    return this.last.snapshot;
  }

  close(): void {
    for (const l of this.links.values()) l.close();
  }

  private async gather(): Promise<ClusterSnapshot> {
    const answers = await Promise.all(
      this.nodes.map(async (n): Promise<{ node: NodeAddr; stats?: NodeStats; error?: string }> => {
        const link = this.links.get(n.id);
        if (!link) return { node: n, stats: this.localStats() };
        try {
          return { node: n, stats: await link.stats() };
        } catch (err) {
          return { node: n, error: (err as Error).message };
        }
      }),
    );
    let leader: { id: number; term: number; stats: NodeStats } | null = null;
    for (const a of answers) {
      const s = a.stats?.status;
      if (s?.role === "leader" && (!leader || s.term > leader.term)) leader = { id: s.id, term: s.term, stats: a.stats! };
    }
    const byTerm = new Map<number, LeaderChange>();
    for (const a of answers) {
      for (const c of a.stats?.leaderChanges ?? []) {
        const seen = byTerm.get(c.term);
        if (!seen || c.at < seen.at) byTerm.set(c.term, c);
      }
    }
    const leaderChanges = [...byTerm.values()].sort((a, b) => a.term - b.term).slice(-MAX_LEADER_HISTORY);
    const samplesFrom = leader?.stats ?? this.localStats();
    return {
      at: Date.now(),
      from: this.self,
      leader: leader?.id ?? null,
      nodes: answers.map(({ node, stats, error }) => {
        const view: NodeView = { id: node.id, addr: formatAddr(node), reachable: !!stats };
        if (error) view.error = error;
        if (stats) view.status = stats.status;
        if (stats && leader) view.lag = Math.max(0, leader.stats.status.commitIndex - stats.status.appliedIndex);
        return view;
      }),
      leaderChanges,
      samples: samplesFrom.samples,
      samplesFrom: samplesFrom.status.id,
    };
  }
}
