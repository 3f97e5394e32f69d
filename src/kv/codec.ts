// Limits, validation and the CBOR wire form of commands and log entries.
//
// cbor-x is imported from its self-contained pure-JS bundle ("cbor-x/index-no-eval"): the package's
// main entry loads the optional native string extractor (cbor-extract), which under Bun misreads
// buffers and can crash the process. The bundle never loads it, whatever else the process imports.

import { Encoder } from "cbor-x/index-no-eval";
import { copyBytes } from "./bytes";
import { KvError } from "./errors";
import { MAX_SESSION_TTL_MS, MIN_SESSION_TTL_MS } from "./sessions";
import type {
  ApplyMeta,
  Command,
  Compare,
  CompareResult,
  DelCommand,
  KeySelector,
  LeaseExpireCommand,
  LeaseRefreshAllCommand,
  LogCommand,
  PutCommand,
  RangeOp,
  RangeRequest,
  TxnCommand,
  TxnOp,
} from "./types";

// ---- named limits -------------------------------------------------------------------------------

export const MAX_KEY_BYTES = 4096;
export const MAX_VALUE_BYTES = 1024 * 1024;
/** Most compares, and most ops in each branch, of one transaction. */
export const MAX_TXN_OPS = 128;
/** Longest lease TTL: one year. */
export const MAX_LEASE_TTL_MS = 365 * 24 * 3600 * 1000;
/** Most lease ids in one leaseExpire command. */
export const MAX_LEASES_PER_EXPIRE = 1000;
/** Longest client id, in characters. */
export const MAX_CLIENT_ID_LENGTH = 128;
/**
 * Most bytes of keys and values in one reply: a range returns pages of at most this much (`more` and
 * `nextKey` say where to continue), and a transaction whose reads would return more is refused with
 * RESULT_TOO_LARGE. Well under the 16 MiB frame limit (net/framing.ts), and above MAX_VALUE_BYTES +
 * MAX_KEY_BYTES, so a page always holds at least one key.
 */
export const MAX_RESULT_BYTES = 4 * 1024 * 1024;
/** Counted per key in a reply besides its key and value bytes (revisions, framing). */
export const RESULT_KEY_OVERHEAD_BYTES = 32;
/** Most bytes of keys and values written by one transaction (its log entry must fit a frame). */
export const MAX_TXN_BYTES = 8 * 1024 * 1024;

// ---- CBOR ---------------------------------------------------------------------------------------

const cbor = new Encoder({
  useRecords: false,
  mapsAsObjects: true,
  tagUint8Array: false,
  variableMapSize: true,
});

/**
 * Encode plain data (objects, arrays, numbers, strings, Uint8Array) as CBOR. The result is a copy of
 * exactly its size: cbor-x returns a view into a shared buffer, and a log entry that kept such a view
 * would keep the whole buffer alive.
 */
export function cborEncode(value: unknown): Uint8Array {
  return cbor.encode(value).slice();
}

/** Decode CBOR; throws whatever the decoder throws on malformed input. */
export function cborDecode(bytes: Uint8Array): unknown {
  return cbor.decode(bytes);
}

// ---- parsing helpers ----------------------------------------------------------------------------

function bad(path: string, problem: string): never {
  throw new KvError("BAD_COMMAND", `${path} ${problem}`);
}

function describe(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "an array";
  if (x instanceof Uint8Array) return "a byte string";
  return typeof x === "object" ? "an object" : `${typeof x} ${String(x).slice(0, 40)}`;
}

function record(x: unknown, path: string): Record<string, unknown> {
  if (typeof x !== "object" || x === null || Array.isArray(x) || x instanceof Uint8Array) {
    bad(path, `must be an object, got ${describe(x)}`);
  }
  return x as Record<string, unknown>;
}

function byteString(x: unknown, path: string): Uint8Array {
  if (!(x instanceof Uint8Array)) bad(path, `must be a byte string, got ${describe(x)}`);
  return x;
}

function keyField(x: unknown, path: string, allowEmpty: boolean): Uint8Array {
  const key = byteString(x, path);
  if (key.length > MAX_KEY_BYTES) {
    throw new KvError("KEY_TOO_LARGE", `${path} of ${key.length} bytes exceeds the ${MAX_KEY_BYTES}-byte limit`);
  }
  if (key.length === 0 && !allowEmpty) throw new KvError("EMPTY_KEY", `${path} must not be empty`);
  return copyBytes(key);
}

function valueField(x: unknown, path: string): Uint8Array {
  const value = byteString(x, path);
  if (value.length > MAX_VALUE_BYTES) {
    throw new KvError(
      "VALUE_TOO_LARGE",
      `${path} of ${value.length} bytes exceeds the ${MAX_VALUE_BYTES}-byte limit`,
    );
  }
  return copyBytes(value);
}

function optionalFlag(x: unknown, path: string): boolean {
  if (x === undefined || x === null) return false;
  if (typeof x !== "boolean") bad(path, `must be a boolean, got ${describe(x)}`);
  return x;
}

function integer(x: unknown, path: string, min: number, max: number = Number.MAX_SAFE_INTEGER): number {
  if (typeof x !== "number" || !Number.isSafeInteger(x)) bad(path, `must be an integer, got ${describe(x)}`);
  if (x < min || x > max) bad(path, `must be between ${min} and ${max}, got ${x}`);
  return x;
}

function timestamp(x: unknown, path: string): number {
  if (typeof x !== "number" || !Number.isFinite(x) || x < 0) {
    bad(path, `must be a non-negative finite number of ms, got ${describe(x)}`);
  }
  return x;
}

function list(x: unknown, path: string, max: number, what: string): unknown[] {
  if (!Array.isArray(x)) bad(path, `must be an array, got ${describe(x)}`);
  if (x.length > max) {
    throw new KvError("TXN_TOO_LARGE", `${path} has ${x.length} ${what}; the limit is ${max}`);
  }
  return x;
}

function child(path: string, field: string): string {
  return path === "" ? field : `${path}.${field}`;
}

// ---- command parsing ----------------------------------------------------------------------------

/** Validate and normalize a key selector. The empty key is allowed only with rangeEnd or prefix. */
function parseSelector(o: Record<string, unknown>, path: string): KeySelector {
  const prefix = optionalFlag(o.prefix, child(path, "prefix"));
  const hasRangeEnd = o.rangeEnd !== undefined && o.rangeEnd !== null;
  if (prefix && hasRangeEnd) bad(path === "" ? "command" : path, "must not have both rangeEnd and prefix");
  const key = keyField(o.key, child(path, "key"), prefix || hasRangeEnd);
  const selector: KeySelector = { key };
  if (hasRangeEnd) {
    const rangeEnd = keyField(o.rangeEnd, child(path, "rangeEnd"), true);
    if (rangeEnd.length === 0) bad(child(path, "rangeEnd"), "must not be empty (omit it to select one key)");
    selector.rangeEnd = rangeEnd;
  }
  if (prefix) selector.prefix = true;
  return selector;
}

function parsePut(o: Record<string, unknown>, path: string): PutCommand {
  const cmd: PutCommand = {
    op: "put",
    key: keyField(o.key, child(path, "key"), false),
    value: valueField(o.value, child(path, "value")),
  };
  if (o.lease !== undefined && o.lease !== null) {
    const lease = integer(o.lease, child(path, "lease"), 0);
    if (lease !== 0) cmd.lease = lease;
  }
  return cmd;
}

function parseDel(o: Record<string, unknown>, path: string): DelCommand {
  return { op: "del", ...parseSelector(o, path) };
}

function parseRangeFields(o: Record<string, unknown>, path: string): RangeRequest {
  const req: RangeRequest = parseSelector(o, path);
  if (o.limit !== undefined && o.limit !== null) {
    const limit = integer(o.limit, child(path, "limit"), 0);
    if (limit !== 0) req.limit = limit;
  }
  if (optionalFlag(o.keysOnly, child(path, "keysOnly"))) req.keysOnly = true;
  if (optionalFlag(o.countOnly, child(path, "countOnly"))) req.countOnly = true;
  return req;
}

const COMPARE_RESULTS: readonly string[] = ["equal", "greater", "less", "not_equal"];

function parseCompare(x: unknown, path: string): Compare {
  const o = record(x, path);
  const key = keyField(o.key, child(path, "key"), false);
  const target = o.target;
  if (target === "exists" || target === "absent") return { key, target };
  const result = o.result;
  if (typeof result !== "string" || !COMPARE_RESULTS.includes(result)) {
    bad(child(path, "result"), `must be one of ${COMPARE_RESULTS.join(", ")}, got ${describe(result)}`);
  }
  const compareResult = result as CompareResult;
  if (target === "value") {
    return { key, target, result: compareResult, value: valueField(o.value, child(path, "value")) };
  }
  if (target === "version" || target === "create" || target === "mod" || target === "lease") {
    return {
      key,
      target,
      result: compareResult,
      number: integer(o.number, child(path, "number"), Number.MIN_SAFE_INTEGER),
    };
  }
  return bad(
    child(path, "target"),
    `must be one of value, version, create, mod, lease, exists, absent; got ${describe(target)}`,
  );
}

function parseTxnOp(x: unknown, path: string): TxnOp {
  const o = record(x, path);
  switch (o.op) {
    case "put":
      return parsePut(o, path);
    case "del":
      return parseDel(o, path);
    case "range": {
      const op: RangeOp = { op: "range", ...parseRangeFields(o, path) };
      return op;
    }
    default:
      return bad(child(path, "op"), `must be put, del or range, got ${describe(o.op)}`);
  }
}

function writtenBytes(ops: TxnOp[]): number {
  let bytes = 0;
  for (const op of ops) if (op.op === "put") bytes += op.key.length + op.value.length;
  return bytes;
}

function parseTxn(o: Record<string, unknown>): TxnCommand {
  const compare = list(o.compare, "compare", MAX_TXN_OPS, "compares");
  const success = list(o.success, "success", MAX_TXN_OPS, "ops");
  const failure = list(o.failure, "failure", MAX_TXN_OPS, "ops");
  const txn: TxnCommand = {
    op: "txn",
    compare: compare.map((c, i) => parseCompare(c, `compare[${i}]`)),
    success: success.map((op, i) => parseTxnOp(op, `success[${i}]`)),
    failure: failure.map((op, i) => parseTxnOp(op, `failure[${i}]`)),
  };
  for (const branch of ["success", "failure"] as const) {
    const bytes = writtenBytes(txn[branch]);
    if (bytes > MAX_TXN_BYTES) {
      throw new KvError("TXN_TOO_LARGE", `${branch} puts ${bytes} bytes of keys and values; the limit is ${MAX_TXN_BYTES}`);
    }
  }
  return txn;
}

/**
 * Check that `x` is a well-formed command within every limit and return a normalized copy: byte
 * strings copied into fresh Uint8Arrays, absent/false/zero optional fields left out. Throws KvError
 * ('BAD_COMMAND' for shape problems, or the limit's own code).
 */
export function parseCommand(x: unknown): Command {
  const o = record(x, "command");
  switch (o.op) {
    case "put":
      return parsePut(o, "");
    case "del":
      return parseDel(o, "");
    case "txn":
      return parseTxn(o);
    case "leaseGrant":
      return {
        op: "leaseGrant",
        id: integer(o.id, "id", 0),
        ttlMs: integer(o.ttlMs, "ttlMs", 1, MAX_LEASE_TTL_MS),
        now: timestamp(o.now, "now"),
      };
    case "leaseRevoke":
      return { op: "leaseRevoke", id: integer(o.id, "id", 1) };
    case "leaseKeepAlive":
      return { op: "leaseKeepAlive", id: integer(o.id, "id", 1), now: timestamp(o.now, "now") };
    case "leaseExpire": {
      if (!Array.isArray(o.ids)) bad("ids", `must be an array, got ${describe(o.ids)}`);
      if (o.ids.length > MAX_LEASES_PER_EXPIRE) {
        bad("ids", `has ${o.ids.length} lease ids; the limit is ${MAX_LEASES_PER_EXPIRE}`);
      }
      return {
        op: "leaseExpire",
        ids: o.ids.map((id, i) => integer(id, `ids[${i}]`, 1)),
        now: timestamp(o.now, "now"),
      };
    }
    case "leaseRefreshAll":
      return { op: "leaseRefreshAll", now: timestamp(o.now, "now") };
    case "sessionRegister":
      return { op: "sessionRegister" };
    case "sessionTtl":
      return { op: "sessionTtl", ttlMs: integer(o.ttlMs, "ttlMs", MIN_SESSION_TTL_MS, MAX_SESSION_TTL_MS) };
    case "compact":
      return { op: "compact", revision: integer(o.revision, "revision", 1) };
    default:
      return bad("command.op", `is not a known operation: ${describe(o.op)}`);
  }
}

/**
 * Throw a KvError unless `cmd` is a well-formed command within every limit. Call before proposing,
 * so bad input is rejected without ever reaching the log.
 */
export function validateCommand(cmd: unknown): asserts cmd is Command {
  parseCommand(cmd);
}

/** Validate and normalize a read request (a range op of a transaction, plus `revision`). */
export function parseRangeRequest(x: unknown): RangeRequest {
  const o = record(x, "range request");
  const req = parseRangeFields(o, "");
  if (o.revision !== undefined && o.revision !== null) {
    const revision = integer(o.revision, "revision", 0);
    if (revision !== 0) req.revision = revision;
  }
  return req;
}

/** Validate the session/clock part of a log entry. */
export function parseMeta(x: Record<string, unknown>): ApplyMeta {
  const meta: ApplyMeta = { now: timestamp(x.now, "now") };
  const hasClient = x.clientId !== undefined && x.clientId !== null;
  const hasSeq = x.seq !== undefined && x.seq !== null;
  if (hasClient !== hasSeq) bad("clientId/seq", "must be given together");
  if (hasClient) {
    if (typeof x.clientId !== "string" || x.clientId.length === 0 || x.clientId.length > MAX_CLIENT_ID_LENGTH) {
      bad("clientId", `must be a string of 1 to ${MAX_CLIENT_ID_LENGTH} characters, got ${describe(x.clientId)}`);
    }
    meta.clientId = x.clientId;
    meta.seq = integer(x.seq, "seq", 1);
  }
  return meta;
}

// ---- wire form ----------------------------------------------------------------------------------

export function encodeCommand(cmd: Command): Uint8Array {
  return cborEncode(parseCommand(cmd));
}

/** Decode and validate a command. Throws KvError 'BAD_COMMAND' on junk (or a limit's code). */
export function decodeCommand(bytes: Uint8Array): Command {
  return parseCommand(decodeOrThrow(bytes, "command"));
}

function decodeOrThrow(bytes: Uint8Array, what: string): unknown {
  try {
    return cborDecode(bytes);
  } catch (error) {
    throw new KvError("BAD_COMMAND", `cannot decode ${what} (${bytes.length} bytes): ${String(error)}`);
  }
}

function parseLogCommand(x: unknown): LogCommand {
  const o = record(x, "log entry");
  const meta = parseMeta(o);
  const out: LogCommand = { cmd: parseCommand(o.cmd), now: meta.now };
  if (meta.clientId !== undefined) {
    out.clientId = meta.clientId;
    out.seq = meta.seq;
  }
  return out;
}

/** Encode one log entry (validated first: throws KvError on a bad command or meta). */
export function encodeLogCommand(entry: LogCommand): Uint8Array {
  return cborEncode(parseLogCommand(entry));
}

export function decodeLogCommand(bytes: Uint8Array): LogCommand {
  return parseLogCommand(decodeOrThrow(bytes, "log entry"));
}

// ---- command builders ---------------------------------------------------------------------------

/**
 * Compare-and-swap as a transaction: if the key's value equals `expected` (or the key is absent when
 * expected is 'absent'), put `newValue`; otherwise read the key (the failure result holds its value).
 */
export function casCommand(
  key: Uint8Array,
  expected: Uint8Array | "absent",
  newValue: Uint8Array,
  lease?: number,
): TxnCommand {
  const compare: Compare =
    expected === "absent"
      ? { key, target: "absent" }
      : { key, target: "value", result: "equal", value: expected };
  const put: PutCommand = { op: "put", key, value: newValue };
  if (lease !== undefined && lease !== 0) put.lease = lease;
  return { op: "txn", compare: [compare], success: [put], failure: [{ op: "range", key }] };
}

/** For a new leader: push every lease's expiry to now + ttl, so no lease expires early. */
export function extendAllLeasesCommand(now: number): LeaseRefreshAllCommand {
  return { op: "leaseRefreshAll", now };
}

/** For the leader: expire the leases store.expiredLeases(now) reported. */
export function leaseExpireCommand(ids: number[], now: number): LeaseExpireCommand {
  return { op: "leaseExpire", ids, now };
}
