// One framed connection over one Bun socket, server- or client-side.
//
// Bun's socket.write() does not buffer: it returns how many bytes the kernel took (-1 once the socket is
// closed). What it did not take is kept here, in order, and written from the socket's drain handler.

import { FrameDecoder, FrameError, MAX_FRAME_BYTES, encodeFrame } from "./framing";

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

  private readonly decoder: FrameDecoder;
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
    this.decoder = new FrameDecoder(this.maxFrameBytes);
    this.remoteAddress = socket.remoteAddress;
    this.remotePort = socket.remotePort;
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
    const frame = encodeFrame(value, this.maxFrameBytes);
    if (this.sendQueueBytes > 0) {
      if (this.sendQueueBytes + frame.length > this.maxQueuedBytes) return false;
      this.enqueue(frame);
      this.bytesSent += frame.length;
      return true;
    }
    const written = this.socket.write(frame);
    if (written < 0) {
      this.shutDown("socket closed", false);
      return false;
    }
    this.bytesSent += frame.length;
    if (written < frame.length) this.enqueue(written === 0 ? frame : frame.subarray(written));
    return true;
  }

  /** Closes the connection (FIN); queued frames are dropped. onClose runs before this returns. Idempotent. */
  close(reason: string = "closed locally"): void {
    this.shutDown(reason, false);
  }

  /** @internal Socket data handler: raw chunk from the peer. */
  receive(chunk: Uint8Array): void {
    if (this.isClosed) return;
    this.bytesReceived += chunk.length;
    let values: unknown[];
    try {
      values = this.decoder.push(chunk);
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
      if (written < chunk.length) {
        if (written > 0) queue[this.sendQueueHead] = chunk.subarray(written);
        this.compactQueue();
        return;
      }
      queue[this.sendQueueHead++] = WRITTEN;
    }
    queue.length = 0;
    this.sendQueueHead = 0;
  }

  /** @internal Socket close handler: the socket is gone (peer closed, reset, or our own close). */
  socketClosed(error?: Error): void {
    this.shutDown(error ? `connection lost: ${error.message}` : "closed by peer", false, true);
  }

  private describePeer(): string {
    return `${this.remoteAddress}:${this.remotePort}`;
  }

  private enqueue(bytes: Uint8Array): void {
    this.sendQueue.push(bytes);
    this.sendQueueBytes += bytes.length;
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
