// The frames clients and peers exchange with a node (each one CBOR value in a length-prefixed frame).
// Shared by server/ and client/; nothing else of either side leaks across.

import type { Command, KeySelector, RangeRequest, WatchEvent } from "./kv/types";

/**
 * First frame on a peer's outbound connection: who it is (node id, its cluster's id, and the incarnation of
 * its data dir; see storage/identity.ts). Only a connection whose hello was admitted may speak Raft. A node
 * that joins and has not been welcomed yet says cluster "".
 */
export interface HelloFrame {
  k: "hello";
  from: number;
  cluster: string;
  incarnation: string;
}

/**
 * A member's answer to the hello of a node that joins (`serve --join`, hello.cluster ""): the id of the
 * cluster it joined, which the node records before it accepts any member's hello, and the members'
 * addresses as that member knows them (its nodes.conf may name only one), so the leader can reach it.
 */
export interface WelcomeFrame {
  k: "welcome";
  cluster: string;
  members: { id: number; addr: string }[];
}

/** A Raft message between peers, in the wire form of raft/wire.ts (appends carry [term, data] pairs). */
export interface RaftFrame {
  k: "raft";
  m: unknown;
}

/** One chunk of a snapshot a leader streams to a follower that fell behind compaction. */
export interface SnapChunkFrame {
  k: "snapChunk";
  from: number;
  term: number;
  index: number;
  snapTerm: number;
  offset: number;
  total: number;
  /** crc32 of all `total` bytes (the snapshot file's): the receiver checks what it reassembled. */
  crc: number;
  data: Uint8Array;
}

export type ClientOp =
  | { op: "write"; cmd: Command; clientId?: string; seq?: number }
  | { op: "range"; range: RangeRequest; serializable?: boolean }
  | { op: "status" }
  | { op: "stats" } // what the dashboard shows of a node (server/metrics.ts NodeStats)
  // Leases as the leader sees them: every lease ({ leases: LeaseStatus[], more }: at most
  // MAX_LEASES_LISTED), or one with its keys (at most MAX_RESULT_BYTES of them; keyCount counts all).
  | { op: "leases"; lease?: number }
  // prevKv: events carry the value the key had before the change (prevValue).
  | { op: "watch"; selector: KeySelector; fromRevision?: number; prevKv?: boolean }
  // Membership (leader only): list, or change one member (add joins as a learner; addr is "host:port").
  | { op: "member"; action: "list" | "add" | "promote" | "remove"; node?: number; addr?: string }
  // Hand leadership to voter `node`; answered once it leads.
  | { op: "leaderTransfer"; node: number }
  // Backup (leader only): capture the state at a confirmed point, answered with SnapshotSaveHeader; then
  // the client pulls it chunk by chunk on the same connection (server/snapshot-save.ts).
  | { op: "snapshotSave" }
  | { op: "snapshotChunk"; save: number; offset: number };

/** One member as the leader sees it (`member list`). match and lag are null for the leader itself. */
export interface MemberInfo {
  id: number;
  addr: string | null;
  role: "voter" | "learner";
  leader: boolean;
  /** Highest log index known to be on the member's disk; lag = leader's commit index - match. */
  match: number | null;
  lag: number | null;
  /** Replication state: probe, replicate or snapshot. */
  state: string | null;
}

export interface MemberList {
  leader: number;
  term: number;
  commitIndex: number;
  /** Index of the log entry that set the configuration (0: the bootstrap from nodes.conf). */
  configIndex: number;
  members: MemberInfo[];
}

export type RequestFrame = { k: "req"; id: number } & ClientOp;

export type ErrorCode =
  | "NOT_LEADER" // ask `leader` instead
  | "NO_LEADER" // this node knows no leader: no quorum reachable from here (yet)
  | "LEADERSHIP_LOST" // the leader stepped down before the outcome was known; retry (same seq)
  | "TIMEOUT"
  | "BAD_REQUEST"
  | "TOO_BUSY"
  | "SHUTTING_DOWN"
  | "INTERNAL"
  // State-machine codes pass through: KEY_TOO_LARGE, VALUE_TOO_LARGE, TXN_TOO_LARGE, RESULT_TOO_LARGE
  // (a transaction's reads over MAX_RESULT_BYTES), SESSION_EXPIRED (not executed: register again),
  // COMPACTED / FUTURE_REVISION (a read at a revision outside the kept history), LEASE_NOT_FOUND, ...
  | string;

export interface LeaderHint {
  id: number;
  addr: string;
}

export type ResponseFrame =
  | { k: "res"; id: number; ok: true; result: unknown }
  | { k: "res"; id: number; ok: false; code: ErrorCode; message: string; leader?: LeaderHint };

/**
 * A watch's events (of one revision), or its end with an error; the client resumes elsewhere. A revision
 * whose events exceed MAX_RESULT_BYTES comes in several frames, all but the last with `more`.
 */
export interface EventFrame {
  k: "ev";
  id: number;
  revision?: number;
  events?: WatchEvent[];
  more?: boolean;
  error?: { code: string; message: string };
}

/** One lease as the leader sees it; `remainingMs` is measured on the leader's monotonic clock. */
export interface LeaseStatus {
  id: number;
  ttlMs: number;
  remainingMs: number;
  /** How many keys are attached. */
  keyCount: number;
}

/** What `status` returns for one node. */
export interface NodeStatus {
  id: number;
  addr: string;
  role: string;
  term: number;
  leader: number; // -1 when unknown
  leaderAddr: string | null;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  snapshotIndex: number;
  walBytes: number;
  keys: number;
  revision: number;
  uptimeMs: number;
  rssBytes: number;
  heapBytes: number;
  version: string;
  /** The configuration in effect on this node, and the index of the entry that set it. */
  voters?: number[];
  learners?: number[];
  configIndex?: number;
  /** Leader only: each other member's replication (match index, lag behind the commit index). */
  followers?: { id: number; match: number; lag: number; state: string }[];
}

/** What `snapshotSave` answers: the captured state's coordinates and checksum; its bytes follow in chunks. */
export interface SnapshotSaveHeader {
  /** Names this save in `snapshotChunk` requests (valid only on the connection that started it). */
  save: number;
  /** The node that captured it. */
  node: number;
  revision: number;
  /** The log index the state machine had applied (at or past the commit index the leader confirmed). */
  index: number;
  /** The term of the entry at `index`. */
  term: number;
  keys: number;
  /** Bytes of the state machine's snapshot encoding. */
  size: number;
  /** sha256 of those bytes, hex. */
  sha256: string;
  /** Bytes in every chunk but the last. */
  chunkBytes: number;
}

export const VERSION = "0.1.0";

/**
 * Requests one client connection may have in flight: a node answers TOO_BUSY past it and cuts off a
 * connection that keeps being refused; the client library queues beyond it instead.
 */
export const MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION = 128;
