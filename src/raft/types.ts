// Types shared by the Raft core, its runtime and storage. No I/O here.

export type NodeId = number;

/** NONE marks "no vote" / "no known leader". */
export const NONE = -1;

/**
 * One log entry. `data` is opaque to Raft: an encoded state-machine command.
 * An empty `data` (length 0) is the no-op a leader appends on election.
 */
export interface Entry {
  index: number;
  term: number;
  data: Uint8Array;
  type?: number; // 0 or absent = normal entry, 1 = configuration change
}

/** Entry.type of an ordinary entry (a state-machine command, or the leader's no-op); absent means this. */
export const ENTRY_NORMAL = 0;
/** Entry.type of a configuration entry: `data` is the whole new configuration (raft/confchange.ts). */
export const ENTRY_CONFIG = 1;

/**
 * The members of the cluster. Voters elect the leader and count toward every majority; learners
 * receive the log but neither vote nor count. `context` holds opaque per-member data for the
 * runtime (the member's address), keyed by node id.
 */
export interface ClusterConfig {
  voters: NodeId[];
  learners: NodeId[];
  context?: Record<string, string>;
}

/** What must be on disk before any message that depends on it is sent. */
export interface HardState {
  term: number;
  vote: NodeId; // NONE when no vote cast in `term`
  commit: number;
}

/** Metadata of a snapshot: the state machine after applying every entry up to `index`. */
export interface SnapshotMeta {
  index: number;
  term: number;
  /** The configuration in effect at `index` (absent: the one the node was started with). */
  config?: ClusterConfig;
}

export interface Snapshot extends SnapshotMeta {
  data: Uint8Array;
}

export type Role = "follower" | "precandidate" | "candidate" | "leader";

// ---- messages between peers -------------------------------------------------------------

interface MessageBase {
  from: NodeId;
  to: NodeId;
  term: number;
}

export interface VoteRequest extends MessageBase {
  type: "vote";
  preVote: boolean;
  lastLogIndex: number;
  lastLogTerm: number;
  /** Sent after TimeoutNow (leadership transfer): voters grant it even while they hear from a leader. */
  transfer?: boolean;
}

export interface VoteResponse extends MessageBase {
  type: "voteResp";
  preVote: boolean;
  granted: boolean;
}

export interface AppendRequest extends MessageBase {
  type: "app";
  prevIndex: number;
  prevTerm: number;
  entries: Entry[];
  commit: number;
  /** Heartbeat round for ReadIndex confirmation; echoed in the response. 0 when not a heartbeat round. */
  readRound: number;
}

export interface AppendResponse extends MessageBase {
  type: "appResp";
  success: boolean;
  /**
   * On success: the index of the last entry the follower now holds that matches the leader.
   * On reject: the prevIndex that was rejected (lets the leader ignore stale rejections).
   */
  matchIndex: number;
  /** On reject: where the leader should retry (first index of the conflicting term, or follower's last+1). */
  hintIndex: number;
  /** On reject: the term of the follower's entry at prevIndex, or 0 if it has none there. */
  hintTerm: number;
  readRound: number;
}

/**
 * Sent by a leader when a follower needs entries that were compacted away. The core puts only the
 * metadata in; the runtime attaches the snapshot bytes (and may ship them in chunks).
 */
export interface SnapshotRequest extends MessageBase {
  type: "snap";
  snapshot: SnapshotMeta & { data?: Uint8Array };
}

/**
 * A heartbeat that depends on nothing in the log: it keeps a follower's election timer reset and
 * confirms ReadIndex rounds while the follower cannot take appends (it is being sent a snapshot, or
 * the entry it last acknowledged was compacted away). It carries no commit index.
 */
export interface HeartbeatRequest extends MessageBase {
  type: "hb";
  readRound: number;
}

export interface HeartbeatResponse extends MessageBase {
  type: "hbResp";
  readRound: number;
}

/** Leadership transfer (Raft thesis 3.10): the leader tells an up-to-date voter to campaign at once. */
export interface TimeoutNow extends MessageBase {
  type: "timeoutNow";
}

export type Message =
  | VoteRequest
  | VoteResponse
  | AppendRequest
  | AppendResponse
  | SnapshotRequest
  | HeartbeatRequest
  | HeartbeatResponse
  | TimeoutNow;

/** A confirmed linearizable read: the caller may serve `ctx` once applied >= index. */
export interface ReadState {
  index: number;
  ctx: number;
}

/** A read that could not be confirmed (leadership lost). */
export interface ReadFailure {
  ctx: number;
  reason: string;
}

/**
 * Everything the runtime must do after the core changed: persist entries, then the hard state, and
 * the snapshot; send messages (those that depend on what this Ready persists only once it is durable);
 * apply committed entries. Then core.reportApplied(ready), and core.reportPersisted(ready) once it is
 * durable (core.advance(ready) does both).
 */
export interface Ready {
  hardState: HardState | null; // non-null when changed since last Ready
  /** Entries to append to stable storage; if entries[0].index <= last stored index, truncate from there first. */
  entries: Entry[];
  /** A snapshot received from the leader that must be persisted and installed in the state machine. */
  snapshot: Snapshot | null;
  messages: Message[];
  committed: Entry[];
  readStates: ReadState[];
  readFailures: ReadFailure[];
}
