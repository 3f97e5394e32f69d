// The production transport: Raft messages over one persistent outbound connection per peer
// (PeerLink), snapshots streamed in chunks on a connection of their own, and the reassembly of
// snapshot chunks a leader streams to this node.

import type { NodeAddr } from "../config";
import { dialFrames, PeerLink, RefusedError, type FramedConn, type TlsMaterial } from "../net";
import { parseMessage, toWire } from "../raft/wire";
import type { Message, NodeId } from "../raft/types";
import type { HelloFrame, RaftFrame, SnapChunkFrame } from "../protocol";
import type { Logger } from "./log";
import type { SnapshotReader } from "../storage";
import { unwrapSnapshotData } from "./membership";
import { StaleSnapshotStream, type SnapshotStream, type Transport } from "./runtime";
import { SnapshotReceiver } from "./snapshot-receiver";

const SNAPSHOT_CHUNK_BYTES = 1024 * 1024;
const SNAPSHOT_STREAM_WINDOW_BYTES = 4 * 1024 * 1024;

export interface TcpTransportOptions {
  /** The first frame on every connection to a peer: who this node is (ConnectionGate.hello()). */
  hello: HelloFrame;
  /** Mutual TLS with this node's certificate; setTls() replaces it for new connections. */
  tls?: TlsMaterial;
  /** A peer refused this node's connection and said why (e.g. it knows another incarnation of it). */
  onRefused: (peer: NodeId, err: RefusedError) => void;
  /** A frame a peer sent back on this node's connection to it (a `welcome`). */
  onFrame?: (peer: NodeId, value: unknown) => void;
}

export class TcpTransport implements Transport {
  private readonly links = new Map<number, PeerLink>();
  private readonly incoming: SnapshotReceiver;
  /** The address each link dials. */
  private readonly linkAddrs = new Map<number, string>();
  /** Ids of the peers snapshot chunks are accepted from (updated in place as members change). */
  private readonly peerIds: number[];
  private connected = false;
  private closed = false;

  constructor(
    private readonly id: NodeId,
    private nodes: NodeAddr[],
    private readonly log: Logger,
    private readonly options: TcpTransportOptions,
  ) {
    this.peerIds = nodes.map((n) => n.id);
    this.incoming = new SnapshotReceiver({
      self: id,
      peers: this.peerIds,
      now: () => performance.now(),
      onDrop: (from, reason) => log.warn(`dropped an incomplete snapshot transfer from node ${from}`, { reason }),
    });
  }

  /** New TLS material (certificate rotation) for the connections made from now on. */
  setTls(tls: TlsMaterial): void {
    this.options.tls = tls;
    for (const link of this.links.values()) link.setTls(tls);
  }

  /** Start dialing every peer. */
  connect(): void {
    this.connected = true;
    this.setPeers(this.nodes);
  }

  /** The members changed: dial new ones (or new addresses), hang up on removed ones. */
  setPeers(nodes: NodeAddr[]): void {
    this.nodes = nodes;
    this.peerIds.splice(0, this.peerIds.length, ...nodes.map((n) => n.id));
    if (!this.connected || this.closed) return;
    for (const [id, link] of this.links) {
      const addr = nodes.find((n) => n.id === id);
      if (addr && `${addr.host}:${addr.port}` === this.linkAddrs.get(id)) continue;
      link.close();
      this.links.delete(id);
      this.linkAddrs.delete(id);
    }
    for (const peer of nodes) {
      if (peer.id === this.id || this.links.has(peer.id)) continue;
      const link = new PeerLink({
        host: peer.host,
        port: peer.port,
        hello: this.options.hello,
        tls: this.options.tls,
        onFrame: (_l, value) => this.options.onFrame?.(peer.id, value),
        onConnect: () => this.log.debug("connected to peer", { peer: peer.id }),
        onDisconnect: (_l, reason) => this.log.debug("lost peer connection", { peer: peer.id, reason }),
        onError: (_l, err) => {
          if (err instanceof RefusedError) this.options.onRefused(peer.id, err);
          else this.log.warn("connection to peer failed", { peer: peer.id, reason: err.message });
        },
      });
      this.links.set(peer.id, link);
      this.linkAddrs.set(peer.id, `${peer.host}:${peer.port}`);
    }
  }

  close(): void {
    this.closed = true;
    for (const link of this.links.values()) link.close();
  }

  /** Bytes sent to each peer on its link (for metrics). */
  bytesSent(): { peer: number; bytes: number }[] {
    return [...this.links].map(([peer, link]) => ({ peer, bytes: link.bytesSent }));
  }

  send(m: Message): void {
    this.links.get(m.to)?.send({ k: "raft", m: toWire(m) } satisfies RaftFrame);
  }

  /** Stream a snapshot to a follower on its own connection, in chunks, with flow control. */
  async sendSnapshot(peerId: NodeId, term: number, open: () => Promise<SnapshotReader | null>, stream: SnapshotStream): Promise<boolean> {
    const peer = this.nodes.find((n) => n.id === peerId);
    if (!peer) throw new Error(`no address known for node ${peerId}`);
    /** Throws once the connection closed or this node no longer leads the stream's term. */
    const checkStream = () => {
      if (conn?.closed || this.closed) throw new Error("connection closed");
      if (!stream.current()) throw new StaleSnapshotStream(term);
    };
    let conn: FramedConn | null = null;
    try {
      conn = await dialFrames(peer.host, peer.port, { onFrame: () => {}, tls: this.options.tls });
      const snap = await open();
      if (!snap) return false;
      conn.send(this.options.hello);
      // The file's bytes as they are (the configuration ahead of the state machine's), read a chunk at
      // a time off the JS thread; at most SNAPSHOT_STREAM_WINDOW_BYTES wait in the send queue.
      for (let offset = 0; offset < snap.size || offset === 0; ) {
        while (conn.queuedBytes > SNAPSHOT_STREAM_WINDOW_BYTES) {
          checkStream();
          await Bun.sleep(2);
        }
        checkStream();
        const data = await snap.read(offset, SNAPSHOT_CHUNK_BYTES);
        // The stream belongs to its term: a node that stopped leading it stops sending at once.
        checkStream();
        const chunk: SnapChunkFrame = { k: "snapChunk", from: this.id, term, index: snap.index, snapTerm: snap.term, offset, total: snap.size, crc: snap.crc, data };
        if (!conn.send(chunk)) throw new Error("send queue full");
        // The previous chunks left the queue: the follower is alive and the transfer not stalled.
        stream.progress();
        if (snap.size === 0) break;
        offset += data.length;
      }
      while (conn.queuedBytes > 0) {
        checkStream();
        await Bun.sleep(2);
      }
      return true;
    } finally {
      conn?.close();
    }
  }

  /**
   * A snapshot chunk arrived on `conn`; `onContact` hears of every one from a configured peer (contact
   * from the leader). Returns the whole snapshot message once its last chunk is in. Throws (closing the
   * connection) for a malformed chunk or one from a sender that is not a peer.
   */
  onSnapChunk(conn: object, f: SnapChunkFrame, onContact: (from: NodeId, term: number) => void): Message | null {
    const done = this.incoming.receive(conn, f);
    onContact(f.from, f.term);
    if (!done) return null;
    this.log.info("received snapshot", { from: done.from, index: done.snapshot.index, bytes: done.snapshot.data.length, ms: Math.round(done.ms) });
    let snapshot: { index: number; term: number; data: Uint8Array; config?: unknown };
    try {
      // The configuration travels ahead of the state machine's bytes (membership.ts).
      snapshot = { index: done.snapshot.index, term: done.snapshot.term, ...unwrapSnapshotData(done.snapshot.data) };
    } catch (err) {
      this.log.warn("ignored a snapshot with a damaged configuration", { from: done.from, reason: (err as Error).message });
      return null;
    }
    const msg = parseMessage({ type: "snap", from: done.from, to: this.id, term: done.term, snapshot });
    return typeof msg === "string" ? null : msg;
  }

  /** A connection closed: drop the snapshot transfer that came on it, if any. */
  connectionClosed(conn: object): void {
    this.incoming.connectionClosed(conn);
  }

  /** Drop incoming snapshot transfers that stalled; called periodically. */
  expireSnapshotTransfers(): void {
    this.incoming.expire();
  }
}
