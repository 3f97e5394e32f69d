// The node port's resource limits, each named once here, shown in `raftkv serve --help` and the README.
// Over a limit the other end gets a clear error (a `refused` frame) or a logged disconnect, and the
// memory it held is given back.

import { readFileSync } from "node:fs";
import { MAX_FRAME_BYTES } from "./framing";

const MiB = 1024 * 1024;

export interface NetLimits {
  /** Connections open at once, peers included; more are refused with TOO_MANY_CONNECTIONS. */
  maxConnections: number;
  /** Connections open at once from one remote address. */
  maxConnectionsPerAddress: number;
  /**
   * A connection that owes a frame (none yet, or one stalled halfway) or a TLS handshake this long is
   * closed; so is a slow reader whose reading has been paused this long without its replies draining.
   */
  frameTimeoutMs: number;
  /** Bytes of partially received frames from clients, all connections together (each is also capped by the frame limit). */
  maxPartialFrameBytes: number;
  /** Replies queued for one client that does not read them: over this, stop reading its requests. */
  slowReaderPauseBytes: number;
  /** ... and over this, disconnect it. */
  slowReaderDisconnectBytes: number;
  /** Replies queued for all clients together; a connection that would go over it is disconnected. */
  maxQueuedBytesTotal: number;
}

export const DEFAULT_NET_LIMITS: Readonly<NetLimits> = {
  maxConnections: 4096,
  maxConnectionsPerAddress: 512,
  frameTimeoutMs: 10_000,
  maxPartialFrameBytes: 64 * MiB,
  slowReaderPauseBytes: 4 * MiB,
  slowReaderDisconnectBytes: 32 * MiB,
  maxQueuedBytesTotal: 256 * MiB,
};

/** One line per limit, for `serve --help`. */
export function describeNetLimits(limits: NetLimits = DEFAULT_NET_LIMITS): string {
  const mib = (n: number) => `${n / MiB} MiB`;
  return [
    `  frame size                           ${mib(MAX_FRAME_BYTES)} (a larger frame closes the connection)`,
    `  connections, total                   ${limits.maxConnections} (--max-connections; capped below the open-files limit)`,
    `  connections per remote address       ${limits.maxConnectionsPerAddress} (--max-connections-per-address)`,
    `  frame timeout                        ${limits.frameTimeoutMs} ms to complete a frame or TLS handshake`,
    `  partially received frames, total     ${mib(limits.maxPartialFrameBytes)} (peers exempt)`,
    `  replies queued for a slow reader     stop reading its requests over ${mib(limits.slowReaderPauseBytes)}, disconnect over ${mib(limits.slowReaderDisconnectBytes)} or after the frame timeout without draining`,
    `  replies queued, all connections      ${mib(limits.maxQueuedBytesTotal)}`,
  ].join("\n");
}

/** File descriptors kept for the WAL, snapshots, HTTP and peers when connections are capped by the open-files limit. */
const RESERVED_FILE_DESCRIPTORS = 64;

/**
 * maxConnections lowered, when needed, below the process's open-files limit (Linux /proc/self/limits),
 * so that connections are refused with a clear error instead of the node running out of descriptors.
 */
export function connectionsWithinFileLimit(maxConnections: number): number {
  let text: string;
  try {
    text = readFileSync("/proc/self/limits", "utf8");
  } catch {
    return maxConnections;
  }
  const m = /^Max open files\s+(\d+)/m.exec(text);
  if (!m) return maxConnections;
  return Math.max(1, Math.min(maxConnections, Number(m[1]) - RESERVED_FILE_DESCRIPTORS));
}
