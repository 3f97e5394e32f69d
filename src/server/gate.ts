// Who may say what on the node's port. A connection becomes a peer only through a `hello` that names
// this cluster, a configured peer and that peer's incarnation (and, with TLS, comes with that peer's node
// certificate); only peers may send Raft messages and snapshot chunks. With TLS, client requests are
// allowed by the role in the client's certificate.

import type { FramedConn, RefusedFrame } from "../net";
import { describeIdentity } from "../net/tls";
import type { ClientOp, HelloFrame } from "../protocol";
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

export interface GateOptions {
  /** Is this id a member of the cluster now (nodes.conf, or added since through the log)? */
  isMember: (id: number) => boolean;
  /** The ids of the nodes.conf the cluster was created with: between them the cluster id must match. */
  bootstrapIds: readonly number[];
  /** A node joining with --join does not know the cluster id yet: it checks none. */
  joining: boolean;
}

export class ConnectionGate {
  private readonly bootstrapIds: ReadonlySet<number>;

  constructor(
    private readonly self: NodeIdentity,
    private readonly options: GateOptions,
    private readonly knownPeers: KnownPeers,
    private readonly log: Logger,
  ) {
    this.bootstrapIds = new Set(options.bootstrapIds);
  }

  /** The hello this node opens each of its peer connections with. */
  hello(): HelloFrame {
    return { k: "hello", from: this.self.nodeId, cluster: this.self.clusterId, incarnation: this.self.incarnation };
  }

  /**
   * A hello arrived: admit the connection as that peer (conn.peerId), or refuse it (the other end is
   * told why, the connection closed, and the refusal logged with the remote address).
   */
  onHello(conn: FramedConn, frame: Partial<HelloFrame>): void {
    const from = frame.from;
    const cert = conn.certificate;
    if (cert && cert.kind !== "node") return this.refuse(conn, REFUSED_NOT_A_PEER, `a ${describeIdentity(cert)} certificate cannot be used as a peer`);
    if (typeof from !== "number" || from === this.self.nodeId || !this.options.isMember(from)) {
      return this.refuse(conn, REFUSED_NOT_A_PEER, `hello from ${JSON.stringify(from)}, which is not a member of this node's configuration`);
    }
    if (cert && cert.nodeId !== from) {
      return this.refuse(conn, REFUSED_NOT_A_PEER, `hello claims node ${from} but the certificate is node ${cert.nodeId}'s`);
    }
    // A member added later (member add, serve --join) computed its cluster id from another nodes.conf.
    const bootstrapPeer = this.bootstrapIds.has(from) && this.bootstrapIds.has(this.self.nodeId);
    if (!this.options.joining && bootstrapPeer && frame.cluster !== this.self.clusterId) {
      return this.refuse(
        conn,
        REFUSED_CLUSTER,
        `node ${from} belongs to cluster ${JSON.stringify(frame.cluster)}, node ${this.self.nodeId} to cluster ${this.self.clusterId}: ` +
          `the nodes were started with different nodes.conf files; give every node the same one`,
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
      return this.refuse(
        conn,
        REFUSED_INCARNATION,
        `node ${this.self.nodeId} knows node ${from} as incarnation ${known}, but it now presents ${frame.incarnation}: ` +
          `its data dir was emptied or replaced, so it forgot its term, vote and log and may not rejoin as node ${from}. ` +
          `Replace it instead: \`raftkv member remove ${from}\`, \`raftkv member add NEW_ID HOST:PORT\`, then start it with \`raftkv serve NEW_ID CONFIG --join\``,
      );
    }
    conn.peerId = from;
    conn.exemptFromPartialFrameBudget();
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
    conn.send({ k: "refused", code, message } satisfies RefusedFrame);
    conn.close(`refused: ${message}`);
  }
}
