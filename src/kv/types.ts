// Shapes of the key-value state machine: commands (what goes through the Raft log), their results,
// reads, watch events. All are plain data (objects, arrays, numbers, strings, Uint8Array) so they
// encode as CBOR without any custom tags.

import type { KvErrorCode } from "./errors";

/** One key with its metadata. `lease` 0 means no lease. Treat `key`/`value` as read-only. */
export interface KeyValue {
  key: Uint8Array;
  value: Uint8Array;
  /** Revision at which the key was created (since it last did not exist). */
  createRevision: number;
  /** Revision of the last change to the key. */
  modRevision: number;
  /** Number of puts since creation: 1 after the creating put. */
  version: number;
  lease: number;
}

// ---- key ranges ---------------------------------------------------------------------------------

/**
 * Which keys an operation covers:
 * - neither rangeEnd nor prefix: exactly `key`;
 * - rangeEnd: keys in [key, rangeEnd) (byte order); a rangeEnd of one zero byte means "every key >= key";
 * - prefix: every key that starts with `key` (an empty key with prefix = every key).
 * rangeEnd and prefix together are rejected.
 */
export interface KeySelector {
  key: Uint8Array;
  rangeEnd?: Uint8Array;
  prefix?: boolean;
}

export interface RangeRequest extends KeySelector {
  /** At most this many kvs are returned; 0 or absent = no limit. */
  limit?: number;
  /** Return kvs with empty values. */
  keysOnly?: boolean;
  /** Return no kvs, only the count. */
  countOnly?: boolean;
  /**
   * Read the range as it was at this revision (0 or absent: the current one). It must be within the
   * kept history: at least compactRevision - 1 (else COMPACTED) and at most the current revision (else
   * FUTURE_REVISION). Not allowed in a transaction.
   */
  revision?: number;
}

// ---- commands -----------------------------------------------------------------------------------

export interface PutCommand {
  op: "put";
  key: Uint8Array;
  value: Uint8Array;
  /** Lease to attach the key to; 0 or absent = none (a put without lease detaches the key). */
  lease?: number;
}

export interface DelCommand extends KeySelector {
  op: "del";
}

export interface RangeOp extends RangeRequest {
  op: "range";
}

export type TxnOp = PutCommand | DelCommand | RangeOp;

export type CompareResult = "equal" | "greater" | "less" | "not_equal";

/** Compare the key's value bytewise. Always false when the key does not exist (use target 'absent'). */
export interface ValueCompare {
  key: Uint8Array;
  target: "value";
  result: CompareResult;
  value: Uint8Array;
}

/** Compare a numeric field; an absent key has version, create, mod and lease all equal to 0. */
export interface NumberCompare {
  key: Uint8Array;
  target: "version" | "create" | "mod" | "lease";
  result: CompareResult;
  number: number;
}

/** True iff the key exists ('exists') or does not ('absent'). */
export interface ExistenceCompare {
  key: Uint8Array;
  target: "exists" | "absent";
}

export type Compare = ValueCompare | NumberCompare | ExistenceCompare;

/** All compares true -> run `success`, else `failure`. Ops run in order and see earlier ops' effects. */
export interface TxnCommand {
  op: "txn";
  compare: Compare[];
  success: TxnOp[];
  failure: TxnOp[];
}

/** Create lease `id` (0 = let the state machine pick the next free id); expiresAt = now + ttlMs. */
export interface LeaseGrantCommand {
  op: "leaseGrant";
  id: number;
  ttlMs: number;
  /** The proposing leader's clock, in ms. */
  now: number;
}

/** Delete the lease and every key attached to it. */
export interface LeaseRevokeCommand {
  op: "leaseRevoke";
  id: number;
}

/** expiresAt = now + ttlMs. */
export interface LeaseKeepAliveCommand {
  op: "leaseKeepAlive";
  id: number;
  now: number;
}

/**
 * Leader-proposed: delete each listed lease that exists and has expiresAt <= now, with its keys
 * (a lease kept alive after the leader looked is skipped).
 */
export interface LeaseExpireCommand {
  op: "leaseExpire";
  ids: number[];
  now: number;
}

/** Proposed by a new leader: every lease's expiresAt = now + ttlMs, so no lease expires early. */
export interface LeaseRefreshAllCommand {
  op: "leaseRefreshAll";
  now: number;
}

/** Register a client session; its id is the index of this log entry (unique cluster-wide). */
export interface SessionRegisterCommand {
  op: "sessionRegister";
}

/** Set the cluster-wide session TTL (sessions idle longer than this, by the log's clock, expire). */
export interface SessionTtlCommand {
  op: "sessionTtl";
  ttlMs: number;
}

/** Forget the history of changes up to and including `revision`: reads and watches before it fail. */
export interface CompactCommand {
  op: "compact";
  revision: number;
}

export type Command =
  | PutCommand
  | DelCommand
  | TxnCommand
  | LeaseGrantCommand
  | LeaseRevokeCommand
  | LeaseKeepAliveCommand
  | LeaseExpireCommand
  | LeaseRefreshAllCommand
  | SessionRegisterCommand
  | SessionTtlCommand
  | CompactCommand;

/** What one Raft log entry carries. `now` is the proposing leader's clock (ms). */
export interface LogCommand {
  cmd: Command;
  clientId?: string;
  seq?: number;
  now: number;
}

/** Session and clock data given with a command. clientId and seq come together or not at all. */
export interface ApplyMeta {
  now: number;
  clientId?: string;
  seq?: number;
}

// ---- results ------------------------------------------------------------------------------------

export interface PutResult {
  op: "put";
  revision: number;
  prev?: KeyValue;
}

export interface DelResult {
  op: "del";
  revision: number;
  deleted: number;
}

export interface RangeResult {
  op: "range";
  /** Current revision of the store when the range was read. */
  revision: number;
  kvs: KeyValue[];
  /** Number of keys in the range, regardless of limit. */
  count: number;
  /** True when more keys of the range follow: cut short by `limit` or by the reply size limit. */
  more: boolean;
  /** With `more`: the first key not returned; ask again from it (at `revision`) for the next page. */
  nextKey?: Uint8Array;
}

export type TxnOpResult = PutResult | DelResult | RangeResult;

export interface TxnResult {
  op: "txn";
  succeeded: boolean;
  revision: number;
  results: TxnOpResult[];
}

export interface LeaseGrantResult {
  op: "leaseGrant";
  id: number;
  ttlMs: number;
  expiresAt: number;
}

export interface LeaseKeepAliveResult {
  op: "leaseKeepAlive";
  id: number;
  ttlMs: number;
  expiresAt: number;
}

export interface LeaseRevokeResult {
  op: "leaseRevoke";
  revision: number;
  deleted: number;
}

export interface LeaseExpireResult {
  op: "leaseExpire";
  revision: number;
  /** Ids actually expired (listed ones that no longer existed or were kept alive are left out). */
  expired: number[];
  deleted: number;
}

export interface LeaseRefreshAllResult {
  op: "leaseRefreshAll";
  leases: number;
}

export interface SessionRegisterResult {
  op: "sessionRegister";
  sessionId: string;
  ttlMs: number;
}

export interface SessionTtlResult {
  op: "sessionTtl";
  ttlMs: number;
}

export interface CompactResult {
  op: "compact";
  /** The revision compacted up to. */
  compacted: number;
  revision: number;
}

export type CommandResult =
  | PutResult
  | DelResult
  | TxnResult
  | LeaseGrantResult
  | LeaseKeepAliveResult
  | LeaseRevokeResult
  | LeaseExpireResult
  | LeaseRefreshAllResult
  | SessionRegisterResult
  | SessionTtlResult
  | CompactResult;

export interface ErrorInfo {
  code: KvErrorCode;
  message: string;
}

/** Outcome of applying one command. Never thrown: a command that fails is an `ok: false` result. */
export type ApplyResult = { ok: true; result: CommandResult } | { ok: false; error: ErrorInfo };

// ---- leases, watches, stats ---------------------------------------------------------------------

export interface LeaseInfo {
  id: number;
  ttlMs: number;
  expiresAt: number;
  keys: Uint8Array[];
}

export interface WatchEvent {
  type: "put" | "delete";
  key: Uint8Array;
  /** The new value (put only). */
  value?: Uint8Array;
  /** Revision of this change. */
  modRevision: number;
  /** For a put the key's createRevision; 0 for a delete. */
  createRevision: number;
  /** For a put the key's version; 0 for a delete. */
  version: number;
  /** For a put the key's lease (0 = none); 0 for a delete. */
  lease: number;
  /** The value before this change, if the key existed. */
  prevValue?: Uint8Array;
}

export type WatchFilter = KeySelector;

export type EventListener = (events: readonly WatchEvent[], revision: number) => void;

export interface KvStats {
  keys: number;
  revision: number;
  leases: number;
  sessions: number;
  /** Rough memory held by keys and values (bytes + a fixed per-key overhead). */
  approxBytes: number;
  appliedIndex: number;
  compactRevision: number;
  historyEvents: number;
}

export interface KvStoreOptions {
  /** Most watch events kept in history. Default 10,000. */
  historyMaxEvents?: number;
  /** Most bytes (keys + values) kept in watch history. Default 64 MiB. */
  historyMaxBytes?: number;
}
