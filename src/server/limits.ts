// Every limit a node enforces on what clients and peers may make it hold, named once. Each is shown by
// `raftkv serve --help` and in the README's limits table. Over a limit the caller gets a clear error (or
// a logged disconnect) and the node keeps serving everyone else.

/** Requests (writes awaiting commit, linearizable reads awaiting confirmation) a node holds in total. */
export const MAX_PENDING_REQUESTS = 20_000;

/**
 * Requests one client connection may have in flight (received, not yet answered). Past it the request
 * is answered TOO_BUSY at once, so a client that pipelines without waiting cannot crowd out the others.
 */
export const MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION = 1_000;

/** Watches one connection may hold open; more are refused with TOO_MANY_WATCHES. */
export const MAX_WATCHES_PER_CONNECTION = 1_000;

/** Watches a node holds open over all its connections; more are refused with TOO_MANY_WATCHES. */
export const MAX_WATCHES_TOTAL = 10_000;

/**
 * An incoming snapshot transfer (one at most per configured peer) is dropped when no chunk of it has
 * arrived for this long, as it is when its connection closes.
 */
export const SNAPSHOT_TRANSFER_IDLE_TIMEOUT_MS = 10_000;
