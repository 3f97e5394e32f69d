// One framed connection over one Bun socket, server- or client-side.
//
// Bun's socket.write() does not buffer: it returns how many bytes the kernel took (-1 once the socket is
// closed). What it did not take is kept here, in order, and written from the socket's drain handler.

import { ByteBudget, FrameDecoder, FrameError, MAX_FRAME_BYTES, encodeFrame } from "./framing";
import { looksLikeTls, TlsError, type CertIdentity } from "./tls";

/** Default cap on bytes waiting in a connection's send queue; over it send() drops the frame. */
export const DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024;

/** Queued frames smaller than this are merged into one write when the socket drains. */
const COALESCE_WRITE_BYTES = 64 * 1024;

/** Placeholder for written queue slots, so sent frames are not kept alive by the queue array. */
const WRITTEN = new Uint8Array(0);

/** The part of a Bun socket that FramedConn uses; Bun's Socket satisfies it. */
export interface FrameSocket {
  write(data: Uint8Array): number;
  end(): void;
  terminate(): void;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Stop and restart reading (Bun sockets have both); used to hold off a slow reader's requests. */
  pause?(): void;
  resume?(): void;
}

export interface FramedConnHandlers {
  /** One decoded frame. A throw here closes the connection and is reported to onError. */
  onFrame: (conn: FramedConn, value: unknown) => void;
  /** Called exactly once, whichever side closed the connection and for whatever reason. */
  onClose?: (conn: FramedConn) => void;
  /** A FrameError from the incoming stream, or a throw from onFrame; the connection is already closed. */
  onError?: (conn: FramedConn, err: Error) => void;
}

export interface FramedConnOptions {
  /** Largest payload accepted from and sent to the peer. Default MAX_FRAME_BYTES. */
  maxFrameBytes?: number;
  /** Send-queue cap. Default DEFAULT_MAX_QUEUED_BYTES. */
  maxQueuedBytes?: number;
  /**
   * Treat the other end as a client that may not read its replies (server side). Over pauseAtBytes
   * queued, stop reading its requests until the queue drains to half of that; when a frame would take
   * the queue over disconnectAtBytes, or take `total` (shared by all connections) over its limit,
   * disconnect (onError gets a SlowReaderError). Replaces maxQueuedBytes.
   */
  slowReader?: { pauseAtBytes: number; disconnectAtBytes: number; total?: ByteBudget };
  /** Buffers for partially received frames are charged to this shared budget (see FrameDecoder). */
  partialFrames?: ByteBudget;
  /** The verified certificate of the other end (mutual TLS), if any. */
  certificate?: CertIdentity;
}

/** The other end does not read what it is sent; it was disconnected. */
export class SlowReaderError extends Error {
  override name = "SlowReaderError";
}

function reportHandlerFailure(what: string, err: unknown): void {
  // A broken callback must not take the process down; nothing better to do than say so.
  console.error(`error net: ${what} threw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
}

export class FramedConn {
  readonly maxFrameBytes: number;
  readonly maxQueuedBytes: number;
  /** Address of the other end as seen when the connection was set up. */
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** The verified certificate of the other end (mutual TLS); undefined in plaintext. */
  readonly certificate: CertIdentity | undefined;
  /** performance.now() when the connection was set up. */
  readonly openedAt = performance.now();
  /** Set by the node once a hello identified the other end as this peer. */
  peerId: number | null = null;

  private readonly decoder: FrameDecoder;
  private readonly slowReader: FramedConnOptions["slowReader"];
  private framesReceived = 0;
  /** performance.now() when reading was paused for a slow reader; 0 while reading. */
  private readingPausedAt = 0;
  private readonly sendQueue: Uint8Array[] = [];
  private sendQueueHead = 0;
  private sendQueueBytes = 0;
  private isClosed = false;
  private reasonClosed: string | undefined;
  /** Bytes of the frames accepted by send() and of the chunks received, for metrics. */
  bytesSent = 0;
  bytesReceived = 0;

  constructor(
    private readonly socket: FrameSocket,
    private readonly handlers: FramedConnHandlers,
    options: FramedConnOptions = {},
  ) {
    this.maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES;
    this.maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.decoder = new FrameDecoder(this.maxFrameBytes, options.partialFrames ?? null);
    this.slowReader = options.slowReader;
    this.certificate = options.certificate;
    this.remoteAddress = socket.remoteAddress;
    this.remotePort = socket.remotePort;
  }

  /**
   * Since when (performance.now()) this connection has owed a complete frame: its opening while no
   * frame has arrived yet, or the first byte of a frame still incomplete. 0 when it owes none.
   */
  get awaitingFrameSince(): number {
    return this.framesReceived === 0 ? this.openedAt : this.decoder.partialFrameSince;
  }

  /** Bytes of the frame being received that are buffered here. */
  get partialFrameBytes(): number {
    return this.decoder.bufferedBytes;
  }

  /** Frames of this connection no longer count against the shared partial-frame budget (a peer). */
  exemptFromPartialFrameBudget(): void {
    this.decoder.leaveBudget();
  }

  /** "address:port" of the other end. */
  get remote(): string {
    return this.describePeer();
  }

  /** Bytes accepted by send() that the socket has not taken yet. */
  get queuedBytes(): number {
    return this.sendQueueBytes;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Why the connection closed (undefined while open). */
  get closeReason(): string | undefined {
    return this.reasonClosed;
  }

  /**
   * Encodes value as one frame and writes it; what the socket does not take now is queued and written
   * from the drain handler, in order. Returns false, dropping the frame, when the connection is closed or
   * the frame would take the queue over maxQueuedBytes (an empty queue always accepts one frame, so a
   * frame larger than the cap can still be sent). Throws FrameTooLargeError for a value over the frame
   * limit: that is the caller's bug, not a network condition.
   */
  send(value: unknown): boolean {
    if (this.isClosed) return false;
    return this.sendEncoded(encodeFrame(value, this.maxFrameBytes));
  }

  /**
   * Writes bytes that are already whole frames (one or several, each a length header and its payload,
   * none over maxFrameBytes: the caller checked), queued like send()'s. Returns false as send() does.
   */
  sendEncoded(frame: Uint8Array): boolean {
    if (this.isClosed) return false;
    if (this.sendQueueBytes > 0) {
      if (!this.slowReader && this.sendQueueBytes + frame.length > this.maxQueuedBytes) return false;
      if (!this.enqueue(frame)) return false;
      this.bytesSent += frame.length;
      return true;
    }
    const written = this.socket.write(frame);
    if (written < 0) {
      this.shutDown("socket closed", false);
      return false;
    }
    this.bytesSent += frame.length;
    if (written < frame.length) return this.enqueue(written === 0 ? frame : frame.subarray(written));
    return true;
  }

  /** Closes the connection (FIN); queued frames are dropped. onClose runs before this returns. Idempotent. */
  close(reason: string = "closed locally"): void {
    this.shutDown(reason, false);
  }

  /** Closes the connection at once because of err, which onError receives. Idempotent. */
  abort(err: Error): void {
    this.fail(err, err.message);
  }

  /** @internal Socket data handler: raw chunk from the peer. */
  receive(chunk: Uint8Array): void {
    if (this.isClosed) return;
    this.bytesReceived += chunk.length;
    let values: unknown[];
    try {
      if (this.framesReceived === 0 && this.decoder.bufferedBytes === 0 && looksLikeTls(chunk)) {
        throw new TlsError(
          chunk[0] === 0x16
            ? `${this.describePeer()} speaks TLS but this end does not (give both ends the same TLS settings: --certs)`
            : `${this.describePeer()} requires TLS and certificates (this connection was plaintext): use --certs DIR, or --ca/--cert/--key, or RAFTKV_CERTS`,
        );
      }
      values = this.decoder.push(chunk);
      this.framesReceived += values.length;
    } catch (err) {
      const error = err instanceof Error ? err : new FrameError(String(err));
      this.fail(error, `bad frame from ${this.describePeer()}: ${error.message}`);
      return;
    }
    for (const value of values) {
      if (this.isClosed) return; // onFrame closed the connection; the rest of the batch is dropped
      try {
        this.handlers.onFrame(this, value);
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        this.fail(error, `frame handler failed: ${error.message}`);
        return;
      }
    }
  }

  /** @internal Socket drain handler: the socket can take more bytes. */
  drain(): void {
    if (this.isClosed) return;
    const queue = this.sendQueue;
    while (this.sendQueueHead < queue.length) {
      let chunk = queue[this.sendQueueHead]!;
      if (chunk.length < COALESCE_WRITE_BYTES && queue.length - this.sendQueueHead > 1) {
        chunk = this.coalesceHead();
      }
      const written = this.socket.write(chunk);
      if (written < 0) {
        this.shutDown("socket closed", false);
        return;
      }
      this.sendQueueBytes -= written;
      this.slowReader?.total?.give(written);
      if (written < chunk.length) {
        if (written > 0) queue[this.sendQueueHead] = chunk.subarray(written);
        this.compactQueue();
        this.resumeReadingIfDrained();
        return;
      }
      queue[this.sendQueueHead++] = WRITTEN;
    }
    queue.length = 0;
    this.sendQueueHead = 0;
    this.resumeReadingIfDrained();
  }

  /** @internal Socket close handler: the socket is gone (peer closed, reset, or our own close). */
  socketClosed(error?: Error): void {
    this.shutDown(error ? `connection lost: ${error.message}` : "closed by peer", false, true);
  }

  private describePeer(): string {
    return `${this.remoteAddress}:${this.remotePort}`;
  }

  /** Queues bytes the socket did not take; false when a slow reader was disconnected instead. */
  private enqueue(bytes: Uint8Array): boolean {
    const limits = this.slowReader;
    if (limits) {
      let refusal = "";
      if (this.sendQueueBytes + bytes.length > limits.disconnectAtBytes) {
        refusal = `it does not read its replies: ${this.sendQueueBytes + bytes.length} bytes would be queued, over the ${limits.disconnectAtBytes}-byte limit per connection`;
      } else if (limits.total && !limits.total.take(bytes.length)) {
        refusal = `bytes queued for slow readers would exceed the node's ${limits.total.limitBytes}-byte limit`;
      }
      if (refusal) {
        this.fail(new SlowReaderError(`disconnected ${this.describePeer()}: ${refusal}`), `slow reader: ${refusal}`);
        return false;
      }
    }
    this.sendQueue.push(bytes);
    this.sendQueueBytes += bytes.length;
    if (limits && !this.readingPausedAt && this.sendQueueBytes > limits.pauseAtBytes && this.socket.pause) {
      this.readingPausedAt = performance.now();
      this.socket.pause();
    }
    return true;
  }

  private resumeReadingIfDrained(): void {
    if (this.readingPausedAt && this.sendQueueBytes <= this.slowReader!.pauseAtBytes / 2) {
      this.readingPausedAt = 0;
      this.socket.resume?.();
    }
  }

  /** Disconnects a slow reader whose reading has been paused since before `since` (it is not draining). */
  dropIfPausedSince(since: number): boolean {
    if (!this.readingPausedAt || this.readingPausedAt > since) return false;
    const why = `it has not read its replies for ${Math.round(performance.now() - this.readingPausedAt)} ms (${this.sendQueueBytes} bytes queued)`;
    this.fail(new SlowReaderError(`disconnected ${this.describePeer()}: ${why}`), `slow reader: ${why}`);
    return true;
  }

  /** Merges the small frames at the head of the queue into one buffer of up to COALESCE_WRITE_BYTES. */
  private coalesceHead(): Uint8Array {
    const queue = this.sendQueue;
    const start = this.sendQueueHead;
    let end = start;
    let size = 0;
    while (end < queue.length && size + queue[end]!.length <= COALESCE_WRITE_BYTES) {
      size += queue[end]!.length;
      end++;
    }
    if (end - start < 2) return queue[start]!;
    const merged = new Uint8Array(size);
    let offset = 0;
    for (let i = start; i < end; i++) {
      merged.set(queue[i]!, offset);
      offset += queue[i]!.length;
      queue[i] = WRITTEN;
    }
    this.sendQueueHead = end - 1;
    queue[this.sendQueueHead] = merged;
    return merged;
  }

  /** Drops written entries from the front once they are most of the array, keeping it from growing. */
  private compactQueue(): void {
    if (this.sendQueueHead > 1024 && this.sendQueueHead * 2 > this.sendQueue.length) {
      this.sendQueue.splice(0, this.sendQueueHead);
      this.sendQueueHead = 0;
    }
  }

  private fail(error: Error, reason: string): void {
    this.shutDown(reason, true, false, error);
  }

  private shutDown(reason: string, abortive: boolean, socketAlreadyClosed = false, error?: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.reasonClosed = reason;
    this.slowReader?.total?.give(this.sendQueueBytes);
    this.decoder.releaseBudget();
    this.sendQueue.length = 0;
    this.sendQueueHead = 0;
    this.sendQueueBytes = 0;
    if (!socketAlreadyClosed) {
      try {
        if (abortive) this.socket.terminate();
        else this.socket.end();
      } catch {
        // already closed underneath us; nothing to release
      }
    }
    if (error && this.handlers.onError) {
      try {
        this.handlers.onError(this, error);
      } catch (err) {
        reportHandlerFailure("onError handler", err);
      }
    }
    if (this.handlers.onClose) {
      try {
        this.handlers.onClose(this);
      } catch (err) {
        reportHandlerFailure("onClose handler", err);
      }
    }
  }
}
