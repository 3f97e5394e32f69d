// A persistent outbound connection to one peer, re-established with exponential backoff.

import { DEFAULT_MAX_QUEUED_BYTES, type FramedConn } from "./conn";
import { dialFrames } from "./dial";
import type { TlsMaterial } from "./tls";

export const PEER_MIN_BACKOFF_MS = 50;
export const PEER_MAX_BACKOFF_MS = 1000;
export const PEER_DIAL_TIMEOUT_MS = 2000;

export interface PeerLinkOptions {
  host: string;
  port: number;
  /** Sent as the first frame on every (re)connect, e.g. `{ k: "hello", from: 3 }`. */
  hello: unknown;
  /** A frame the peer sent back on this connection. */
  onFrame?: (link: PeerLink, value: unknown) => void;
  /** The connection is up and the hello has been handed to the socket. */
  onConnect?: (link: PeerLink) => void;
  /** The connection went down (not called for close()); `reason` says why. */
  onDisconnect?: (link: PeerLink, reason: string) => void;
  /** Bad frame from the peer or a throw from onFrame; the link reconnects. */
  onError?: (link: PeerLink, err: Error) => void;
  /** Send-queue cap per connection. Default DEFAULT_MAX_QUEUED_BYTES. */
  maxQueuedBytes?: number;
  maxFrameBytes?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  dialTimeoutMs?: number;
  /** Mutual TLS with this node's certificate (see dialFrames); replace it with setTls(). */
  tls?: TlsMaterial;
}

/**
 * Keeps one outbound connection to host:port alive. Connecting starts in the constructor. After a failed
 * dial or a lost connection the next attempt waits minBackoffMs, doubling per consecutive failure up to
 * maxBackoffMs; an established connection resets the delay. Nothing is queued while the peer is down:
 * send() then returns false and the frame is gone (Raft retransmits).
 */
export class PeerLink {
  readonly host: string;
  readonly port: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private backoffMs: number;
  private conn: FramedConn | undefined;
  private dialing = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private isClosed = false;
  private connectCount = 0;
  private tls: TlsMaterial | undefined;
  /** Bytes sent on the connections closed so far. */
  private bytesSentBefore = 0;

  constructor(private readonly options: PeerLinkOptions) {
    this.host = options.host;
    this.port = options.port;
    this.minBackoffMs = options.minBackoffMs ?? PEER_MIN_BACKOFF_MS;
    this.maxBackoffMs = options.maxBackoffMs ?? PEER_MAX_BACKOFF_MS;
    this.backoffMs = this.minBackoffMs;
    this.tls = options.tls;
    this.dial();
  }

  /** True while a connection is established (the hello has been sent on it). */
  get connected(): boolean {
    return this.conn !== undefined && !this.conn.closed;
  }

  /** Number of connections established so far (1 after the first connect, 2 after a reconnect, ...). */
  get connects(): number {
    return this.connectCount;
  }

  /** Bytes sent to the peer on every connection of this link. */
  get bytesSent(): number {
    return this.bytesSentBefore + (this.conn?.bytesSent ?? 0);
  }

  get queuedBytes(): number {
    return this.conn?.queuedBytes ?? 0;
  }

  /** Delay before the next reconnect attempt (for status output). */
  get currentBackoffMs(): number {
    return this.backoffMs;
  }

  /**
   * Sends one frame on the current connection. Returns false (frame dropped) when not connected or the
   * connection's send queue is over its cap. Throws FrameTooLargeError for a value over the frame limit.
   */
  send(value: unknown): boolean {
    const conn = this.conn;
    if (conn === undefined || conn.closed) return false;
    return conn.send(value);
  }

  /** TLS material for the next connections (certificate rotation); the current one is kept. */
  setTls(tls: TlsMaterial): void {
    this.tls = tls;
  }

  /** Closes the connection and stops reconnecting; clears every timer. Idempotent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    if (this.retryTimer !== undefined) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    const conn = this.conn;
    this.conn = undefined;
    conn?.close("peer link closed");
  }

  private dial(): void {
    if (this.isClosed || this.dialing) return;
    this.dialing = true;
    dialFrames(
      this.host,
      this.port,
      {
        onOpen: (conn) => this.connectionOpened(conn),
        onFrame: (conn, value) => {
          if (conn === this.conn) this.options.onFrame?.(this, value);
        },
        onClose: (conn) => this.connectionClosed(conn),
        onError: (conn, err) => {
          if (conn === this.conn) this.options.onError?.(this, err);
        },
        maxQueuedBytes: this.options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES,
        maxFrameBytes: this.options.maxFrameBytes,
        tls: this.tls,
      },
      this.options.dialTimeoutMs ?? PEER_DIAL_TIMEOUT_MS,
    ).then(
      () => {
        // adopted (or refused) in connectionOpened
      },
      () => {
        this.dialing = false;
        this.scheduleRetry();
      },
    );
  }

  /** Runs in the socket's open handler: adopt the connection and greet before anything else. */
  private connectionOpened(conn: FramedConn): void {
    this.dialing = false;
    if (this.isClosed) {
      conn.close("peer link closed");
      return;
    }
    this.conn = conn;
    this.backoffMs = this.minBackoffMs;
    this.connectCount++;
    conn.send(this.options.hello);
    this.options.onConnect?.(this);
  }

  private connectionClosed(conn: FramedConn): void {
    if (conn !== this.conn) return; // a connection we never adopted, or close() already let go of it
    this.bytesSentBefore += conn.bytesSent;
    this.conn = undefined;
    if (this.isClosed) return;
    this.options.onDisconnect?.(this, conn.closeReason ?? "closed");
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.isClosed || this.retryTimer !== undefined) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.maxBackoffMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.dial();
    }, delay);
  }
}
