// The key-value state machine: public surface. kv/ knows nothing of Raft, sockets or files.

export * from "./types";
export { KvError, isKvError, type KvErrorCode } from "./errors";
export { bytesToKey, keyToBytes, compareBytes, bytesEqual, prefixEnd } from "./bytes";
export {
  MAX_KEY_BYTES,
  MAX_VALUE_BYTES,
  MAX_TXN_OPS,
  MAX_LEASE_TTL_MS,
  MAX_LEASES_PER_EXPIRE,
  MAX_CLIENT_ID_LENGTH,
  MAX_RESULT_BYTES,
  MAX_TXN_BYTES,
  validateCommand,
  parseCommand,
  parseRangeRequest,
  encodeCommand,
  decodeCommand,
  encodeLogCommand,
  decodeLogCommand,
  casCommand,
  extendAllLeasesCommand,
  leaseExpireCommand,
} from "./codec";
export {
  KvStore,
  keyMatcher,
  DEFAULT_SESSION_TTL_MS,
  DEFAULT_HISTORY_MAX_EVENTS,
  DEFAULT_HISTORY_MAX_BYTES,
} from "./store";
