// Who may say what on the node's port. A connection becomes a peer only through a `hello` that names
// this cluster, a configured peer and that peer's incarnation (and, with TLS, comes with that peer's node
// certificate); only peers may send Raft messages and snapshot chunks. With TLS, client requests are
// allowed by the role in the client's certificate.
//
// A node that joins (`serve --join` on a new data dir) does not know its cluster's id: its hellos say
// cluster "", a member admits them and answers with a `welcome` naming its cluster, and the node records
// that id (IDENTITY) before it admits any peer. Until then it refuses hellos (JOIN_PENDING, the peer
// retries). A joining node that is contacted by the members of one cluster while a member listed in its
// nodes.conf, of another cluster, says it is not a member was added to one cluster and given the other's
// nodes.conf: it refuses to run.

import { formatAddr, parseEndpoint, type NodeAddr } from "../config";
import type { FramedConn, RefusedFrame } from "../net";
import { describeIdentity } from "../net/tls";
import type { ClientOp, HelloFrame, WelcomeFrame } from "../protocol";
import { MAX_MEMBERS } from "../raft/confchange";
import type { KnownPeers, NodeIdentity } from "../storage/identity";
import type { Logger } from "./log";

/** Requests the read role may make (write may too); anything not listed here needs write or admin. */
const READ_OPS: ReadonlySet<string> = new Set(["range", "status", "stats", "watch", "leases"]);
/**
 * Commands (in a "write" request) the write role may propose. sessionRegister is open to every role: the
 * client library registers its session before its first write, so a read client trying to put is refused
 * at the put, which the message then names. Anything not listed (compact, the session TTL, membership
 * and cluster operations) needs admin.
 */
const WRITE_COMMANDS: ReadonlySet<string> = new Set(["put", "del", "txn", "leaseGrant", "leaseKeepAlive", "leaseRevoke"]);

/** Refusal codes a peer may receive on its outbound connection. */
export const REFUSED_INCARNATION = "INCARNATION_MISMATCH";
export const REFUSED_CLUSTER = "CLUSTER_MISMATCH";
export const REFUSED_NOT_A_PEER = "NOT_A_PEER";
/** This node joins and no member of its nodes.conf has welcomed it yet: the peer retries. */
export const REFUSED_JOIN_PENDING = "JOIN_PENDING";

export interface GateOptions {
  /** Is this id a member of the cluster now (nodes.conf, or added since through the log)? */
  isMember: (id: number) => boolean;
  /** The members' addresses, sent in a welcome. */
  memberAddrs: () => readonly NodeAddr[];
  /** Record the identity durably (a joining node learned its cluster id); called before the gate uses it. */
  recordIdentity: (identity: NodeIdentity) => void;
  /** This joining node was given another cluster's nodes.conf: it must not run. */
  joinConflict: (message: string) => void;
}

/** A cluster id as a peer may state it (hello, welcome, refusal): "" or at most 64 characters. */
const MAX_CLUSTER_ID_CHARS = 64;
const isClusterId = (x: unknown): x is string => typeof x === "string" && x.length <= MAX_CLUSTER_ID_CHARS;

/** Who said what about this node's cluster while it was joining. */
interface ClusterClaim {
  peer: number;
  cluster: string;
}

export class ConnectionGate {
  /** One object, shared with the transport's links: a welcome fills in its cluster for later connections. */
  private readonly helloFrame: HelloFrame;
  /** Joining, not welcomed yet: a member of another cluster connected to this node. */
  private contactedBy: ClusterClaim | null = null;
  /** Joining, not welcomed yet: a peer from nodes.conf said this node is not a member of its cluster. */
  private notMemberOf: ClusterClaim | null = null;

  constructor(
    private readonly self: NodeIdentity,
    private readonly options: GateOptions,
    private readonly knownPeers: KnownPeers,
    private readonly log: Logger,
  ) {
    this.helloFrame = { k: "hello", from: self.nodeId, cluster: self.clusterId, incarnation: self.incarnation };
  }

  /** The hello this node opens each of its peer connections with. */
  hello(): HelloFrame {
    return this.helloFrame;
  }

  /** Joining and not yet told which cluster it joined. */
  get awaitingWelcome(): boolean {
    return this.self.clusterId === "";
  }

  /**
   * A hello arrived: admit the connection as that peer (conn.peerId), or refuse it (the other end is
   * told why, the connection closed, and the refusal logged with the remote address).
   */
  onHello(conn: FramedConn, frame: Partial<HelloFrame>): void {
    const from = frame.from;
    const cert = conn.certificate;
    if (cert && cert.kind !== "node") return this.refuse(conn, REFUSED_NOT_A_PEER, `a ${describeIdentity(cert)} certificate cannot be used as a peer`);
    const notMember = () => this.refuse(conn, REFUSED_NOT_A_PEER, `hello from ${JSON.stringify(from)}, which is not a member of this node's configuration`);
    if (typeof from !== "number" || from === this.self.nodeId) return notMember();
    if (cert && cert.nodeId !== from) {
      return this.refuse(conn, REFUSED_NOT_A_PEER, `hello claims node ${from} but the certificate is node ${cert.nodeId}'s`);
    }
    if (!isClusterId(frame.cluster)) return this.refuse(conn, REFUSED_NOT_A_PEER, `hello from node ${from} names no cluster (or one over ${MAX_CLUSTER_ID_CHARS} characters)`);
    // Before its welcome a joining node knows neither its cluster nor every member (the leader may be
    // missing from its nodes.conf): it admits no one, and tells them to retry.
    if (this.awaitingWelcome) return this.refuseWhileJoining(conn, from, frame.cluster);
    if (!this.options.isMember(from)) return notMember();
    if (frame.cluster !== "" && frame.cluster !== this.self.clusterId) {
      return this.refuse(
        conn,
        REFUSED_CLUSTER,
        `node ${from} belongs to cluster ${JSON.stringify(frame.cluster)}, node ${this.self.nodeId} to cluster ${this.self.clusterId}: ` +
          `the nodes were started with different nodes.conf files, or belong to different clusters (a restored cluster has an id of its own); ` +
          `give every node its own cluster's nodes.conf and data dir`,
      );
    }
    if (typeof frame.incarnation !== "string" || frame.incarnation.length === 0 || frame.incarnation.length > 64) {
      return this.refuse(conn, REFUSED_NOT_A_PEER, `hello from node ${from} carries no incarnation`);
    }
    const known = this.knownPeers.get(from);
    if (known === undefined) {
      // The first time this cluster member is seen: remember it before acting on anything it says.
      this.knownPeers.record(from, frame.incarnation);
      this.log.info("recorded a peer's incarnation", { peer: from, incarnation: frame.incarnation });
    } else if (known !== frame.incarnation) {
      const replace = `\`raftkv member remove ${from}\`, \`raftkv member add NEW_ID HOST:PORT\`, then start it with \`raftkv serve NEW_ID CONFIG --join\``;
      return this.refuse(
        conn,
        REFUSED_INCARNATION,
        frame.cluster === ""
          ? `node ${this.self.nodeId} already knew another node ${from} (incarnation ${known}): a joining node needs an id this cluster never used. ` +
              `Join under a new id instead: ${replace}`
          : `node ${this.self.nodeId} knows node ${from} as incarnation ${known}, but it now presents ${frame.incarnation}: ` +
              `its data dir was emptied or replaced, so it forgot its term, vote and log and may not rejoin as node ${from}. ` +
              `Replace it instead: ${replace}`,
      );
    }
    conn.peerId = from;
    conn.exemptFromPartialFrameBudget();
    // A member added with `member add` joining: tell it which cluster it joined.
    if (frame.cluster === "") {
      const members = this.options.memberAddrs().map((a) => ({ id: a.id, addr: formatAddr(a) }));
      conn.send({ k: "welcome", cluster: this.self.clusterId, members } satisfies WelcomeFrame);
    }
  }

  /**
   * A peer this node dialed welcomed it: a joining node records its cluster's id. Returns the members
   * the welcome names (valid ids and addresses, not this node, each id once, at most MAX_MEMBERS), or
   * null when the welcome is malformed or came from another cluster.
   */
  onWelcome(peer: number, frame: Partial<WelcomeFrame>): NodeAddr[] | null {
    const cluster = frame.cluster;
    if (!isClusterId(cluster) || cluster === "") return null;
    if (!this.awaitingWelcome) {
      if (cluster !== this.self.clusterId) {
        this.log.error("a member of another cluster welcomed this node; ignored", { peer, cluster, ours: this.self.clusterId });
        return null;
      }
    } else {
      this.options.recordIdentity({ ...this.self, clusterId: cluster });
      this.self.clusterId = cluster;
      this.helloFrame.cluster = cluster;
      this.log.info("joined a cluster: recorded its id", { cluster, welcomedBy: peer });
    }
    return this.welcomeMembers(peer, frame.members);
  }

  /** The usable members of a welcome; a list longer than a cluster can be is ignored whole. */
  private welcomeMembers(peer: number, list: unknown): NodeAddr[] {
    if (!Array.isArray(list)) return [];
    if (list.length > MAX_MEMBERS) {
      this.log.warn("a welcome names more members than a cluster may have; ignored its list", { peer, members: list.length });
      return [];
    }
    const out: NodeAddr[] = [];
    for (const m of list as unknown[]) {
      const { id, addr } = (m ?? {}) as { id?: unknown; addr?: unknown };
      if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0 || id === this.self.nodeId || typeof addr !== "string") continue;
      if (out.some((a) => a.id === id)) continue;
      try {
        out.push({ id, ...parseEndpoint(addr) });
      } catch {
        // an address this node cannot use: skip it
      }
    }
    return out;
  }

  /** A peer refused this node's connection. A joining node checks it against who contacted it. */
  refusedBy(peer: number, code: string, cluster: string | undefined): void {
    if (!this.awaitingWelcome || code !== REFUSED_NOT_A_PEER || !cluster || !isClusterId(cluster)) return;
    this.notMemberOf ??= { peer, cluster };
    const conflict = this.joinConflict();
    if (conflict) this.options.joinConflict(conflict);
  }

  /** Not welcomed yet: nobody is admitted; a contact from a cluster that nodes.conf's members deny is fatal. */
  private refuseWhileJoining(conn: FramedConn, from: number, cluster: string): void {
    if (cluster !== "") this.contactedBy ??= { peer: from, cluster };
    const conflict = this.joinConflict();
    if (conflict) {
      this.refuse(conn, REFUSED_CLUSTER, conflict);
      this.options.joinConflict(conflict);
      return;
    }
    this.refuse(conn, REFUSED_JOIN_PENDING, `node ${this.self.nodeId} is joining and no member listed in its nodes.conf has welcomed it yet; it accepts peers once one has`);
  }

  private joinConflict(): string | null {
    const contact = this.contactedBy;
    const denial = this.notMemberOf;
    if (!contact || !denial || contact.cluster === denial.cluster) return null;
    const id = this.self.nodeId;
    return (
      `node ${id} was added to cluster ${contact.cluster} (its node ${contact.peer} connected to this node), but node ${denial.peer}, ` +
      `listed in this node's nodes.conf, belongs to cluster ${denial.cluster}, which does not have node ${id} as a member: ` +
      `the nodes.conf lists another cluster's members. Start node ${id} with --join and a nodes.conf that lists members of cluster ${contact.cluster} ` +
      `(or undo the add there: \`raftkv member remove ${id}\`); this data dir holds nothing of either cluster yet`
    );
  }

  /** May this connection deliver a Raft message or snapshot chunk from `from`? Refuses it if not. */
  admitsPeerFrame(conn: FramedConn, kind: string, from: unknown): boolean {
    if (conn.peerId === null) {
      const who = conn.certificate ? ` (${describeIdentity(conn.certificate)})` : "";
      this.refuse(conn, REFUSED_NOT_A_PEER, `a ${kind} frame on a connection that is not an identified peer${who}; only peers that said hello may speak Raft`);
      return false;
    }
    if (from !== conn.peerId) {
      this.refuse(conn, REFUSED_NOT_A_PEER, `peer ${conn.peerId} sent a ${kind} frame claiming to come from ${JSON.stringify(from)}`);
      return false;
    }
    return true;
  }

  /** Null when the connection may make this request; else why not (for PERMISSION_DENIED). */
  deniedReason(conn: FramedConn, op: ClientOp): string | null {
    const cert = conn.certificate;
    if (!cert || cert.kind === "node") return null; // plaintext mode, or a member of the cluster
    if (cert.role === "admin" || READ_OPS.has(op.op)) return null;
    const command = op.op === "write" ? String((op.cmd as { op?: unknown } | null)?.op) : op.op;
    if (op.op === "write" && command === "sessionRegister") return null;
    const needs = op.op === "write" && WRITE_COMMANDS.has(command) ? "write" : "admin";
    if (needs === "write" && cert.role === "write") return null;
    return `client ${JSON.stringify(cert.name)} has role ${cert.role}, which may not ${command}: it needs role ${needs}`;
  }

  private refuse(conn: FramedConn, code: string, message: string): void {
    this.log.warn("refused a connection", { remote: conn.remote, reason: message });
    const cluster = this.self.clusterId || undefined;
    conn.send({ k: "refused", code, message, ...(cluster ? { cluster } : {}) } satisfies RefusedFrame);
    conn.close(`refused: ${message}`);
  }
}
