// Every limit a node enforces on what clients and peers may make it hold, named once. Each is shown by
// `raftkv serve --help` and in the README's limits table. Over a limit the caller gets a clear error (or
// a logged disconnect) and the node keeps serving everyone else.

/** Requests (writes awaiting commit, linearizable reads awaiting confirmation) a node holds in total. */
export const MAX_PENDING_REQUESTS = 20_000;

/**
 * Requests one client connection may have in flight (received, not yet answered). Past it the request
 * is answered TOO_BUSY at once, so a client that pipelines without waiting cannot fill the log ahead of
 * everyone else's writes. 64 concurrent requests already reach a node's peak throughput (group commit),
 * so this limits no client's speed, only its share. Defined in protocol.ts: the client library queues
 * past the same number instead of being refused.
 */
import { MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION } from "../protocol";
export { MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION };

/**
 * Requests refused over the limits above (TOO_BUSY, TOO_MANY_WATCHES) within REFUSALS_WINDOW_MS after
 * which a connection is closed (logged): a client that waits for its replies, or backs off when refused,
 * never gets near it; one that never reads them cannot keep the node busy refusing it.
 */
export const MAX_REFUSALS_PER_CONNECTION = 1_000;

/** The window MAX_REFUSALS_PER_CONNECTION is counted over. */
export const REFUSALS_WINDOW_MS = 1_000;

/** Watches one connection may hold open; more are refused with TOO_MANY_WATCHES. */
export const MAX_WATCHES_PER_CONNECTION = 1_000;

/** Watches a node holds open over all its connections; more are refused with TOO_MANY_WATCHES. */
export const MAX_WATCHES_TOTAL = 10_000;

/**
 * How many bytes of events (keys and values, plus 64 bytes each; every event, watched or not) that are
 * no longer in the store's history a watch may still need. The history keeps the last 10,000 events or
 * 64 MiB by default, and a watch within it may replay all of it; past this, the watch is ended with
 * WATCHER_TOO_SLOW and the revision to watch again from. So the node keeps at most about this much beyond
 * its history for its slowest watchers.
 */
export const MAX_WATCH_BACKLOG_BYTES = 32 * 1024 * 1024;

/**
 * An incoming snapshot transfer (one at most per configured peer) is dropped when no chunk of it has
 * arrived for this long, as it is when its connection closes.
 */
export const SNAPSHOT_TRANSFER_IDLE_TIMEOUT_MS = 10_000;

/**
 * The largest snapshot a node accepts from its leader (the receiver holds it in one buffer, allocated
 * when the first chunk announces the size). A state machine whose snapshot outgrows it can no longer
 * catch a follower up: keep the state well below it.
 */
export const MAX_SNAPSHOT_TRANSFER_BYTES = 4 * 1024 * 1024 * 1024;

/**
 * `raftkv snapshot save` transfers a node serves at once. Each holds an encoded copy of the whole state
 * until its client has pulled it (or goes away), so more are refused with TOO_BUSY.
 */
export const MAX_SNAPSHOT_SAVES = 1;

/** Bytes of one `snapshotChunk` reply (well under the 16 MiB frame limit). */
export const SNAPSHOT_SAVE_CHUNK_BYTES = 1024 * 1024;

/** A snapshot save whose client asks for no chunk for this long is dropped (and its memory freed). */
export const SNAPSHOT_SAVE_IDLE_TIMEOUT_MS = 30_000;

/** The limits above as `raftkv serve --help` lists them. */
export const LIMITS_HELP: readonly [name: string, value: number, meaning: string][] = [
  ["requests pending per node", MAX_PENDING_REQUESTS, "writes awaiting commit, reads awaiting confirmation; then TOO_BUSY"],
  ["requests in flight per connection", MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION, "then TOO_BUSY"],
  ["refusals per connection", MAX_REFUSALS_PER_CONNECTION, `requests refused over a limit within ${REFUSALS_WINDOW_MS} ms; then the connection is closed (logged)`],
  ["watches per connection", MAX_WATCHES_PER_CONNECTION, "then TOO_MANY_WATCHES"],
  ["watches per node", MAX_WATCHES_TOTAL, "then TOO_MANY_WATCHES"],
  ["watch backlog (bytes)", MAX_WATCH_BACKLOG_BYTES, "events a watch has yet to get that are older than the node's history; then WATCHER_TOO_SLOW and the revision to resume from"],
  ["snapshot transfer idle timeout (ms)", SNAPSHOT_TRANSFER_IDLE_TIMEOUT_MS, "one incoming transfer per configured peer; dropped after this long without a chunk, or when its connection closes"],
  ["snapshot transfer size (bytes)", MAX_SNAPSHOT_TRANSFER_BYTES, "the largest snapshot a follower accepts from its leader (held in one buffer while it arrives)"],
  ["snapshot saves per node", MAX_SNAPSHOT_SAVES, "`raftkv snapshot save` transfers at once (each holds a copy of the state); then TOO_BUSY"],
  ["snapshot save idle timeout (ms)", SNAPSHOT_SAVE_IDLE_TIMEOUT_MS, "a save whose client pulls no chunk for this long is dropped, as when its connection closes"],
];

export function formatLimitsHelp(): string {
  const width = Math.max(...LIMITS_HELP.map(([name]) => name.length));
  const valueWidth = Math.max(...LIMITS_HELP.map(([, value]) => String(value).length));
  return ["Limits (each refusal says which limit it hit):", ...LIMITS_HELP.map(([name, value, meaning]) => `    ${name.padEnd(width)}  ${String(value).padStart(valueWidth)}  ${meaning}`)].join("\n");
}
