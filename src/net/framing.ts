// Wire framing: every frame is a 4-byte big-endian payload length followed by exactly one CBOR value.
//
// cbor-x settings (both ends run this same code):
// - useRecords: false. The record extension makes the meaning of a frame depend on structures defined in
//   earlier frames (or shared out of band); a fresh decoder could not read an arbitrary frame, and state
//   shared across independent connections is unsafe. Plain objects travel as ordinary CBOR maps.
// - mapsAsObjects: true. CBOR maps decode to plain objects (a JS Map still round-trips, as tag 259).
// - tagUint8Array: false. A Uint8Array is written as a plain CBOR byte string (major type 2), which the
//   decoder returns as a Uint8Array; no tag 64 needed.
// - copyBuffers: true (decoder). Decoded byte strings own their memory. Without it they would be views
//   into the received chunk, so a 10-byte key kept in the state machine would pin a ~128 KiB socket chunk.
// - One Decoder per FrameDecoder (per connection): tags a peer sends (record definitions, tag 259) touch
//   decoder state, and a failed decode must not leave state behind that another connection would see.
//
// Import path: "cbor-x/index-no-eval", not "cbor-x". Under Bun the "cbor-x" entry loads the optional
// native addon cbor-extract (built for Node), and its string extractor is broken there: decoding an
// object with several strings throws "string.slice is not a function" or segfaults the process. The
// no-eval build is a self-contained copy of the same library (same version) that never loads the addon,
// so what other modules import cannot switch it on. "No eval" only affects the record extension, which
// is off here anyway.

import { Decoder, Encoder } from "cbor-x/index-no-eval";

/** Largest CBOR payload (bytes after the 4-byte header) that is sent or accepted. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** Size of the big-endian length header in front of every payload. */
export const FRAME_HEADER_BYTES = 4;

/** First allocation for a payload that arrives in pieces; grows by doubling up to the frame's length. */
const INITIAL_PAYLOAD_CAPACITY = 64 * 1024;

/**
 * A shared allowance of bytes, e.g. for partially received frames across every connection of a node.
 * take() refuses (returns false) what would go over the limit; give() returns bytes.
 */
export class ByteBudget {
  private usedBytes = 0;

  constructor(readonly limitBytes: number) {}

  get used(): number {
    return this.usedBytes;
  }

  take(bytes: number): boolean {
    if (this.usedBytes + bytes > this.limitBytes) return false;
    this.usedBytes += bytes;
    return true;
  }

  give(bytes: number): void {
    this.usedBytes = Math.max(0, this.usedBytes - bytes);
  }
}

/** Incoming bytes that cannot be a valid frame: oversized length header or malformed CBOR. */
export class FrameError extends Error {
  override name = "FrameError";
}

/** A value whose encoded form is larger than the frame limit; raised on the sending side. */
export class FrameTooLargeError extends Error {
  override name = "FrameTooLargeError";
  constructor(
    readonly payloadBytes: number,
    readonly maxFrameBytes: number,
  ) {
    super(`encoded frame of ${payloadBytes} bytes exceeds the ${maxFrameBytes}-byte limit`);
  }
}

const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

function newDecoder(): Decoder {
  return new Decoder({ useRecords: false, mapsAsObjects: true, copyBuffers: true });
}

/**
 * The CBOR encoding of `value` alone (a frame's payload, without its length header), in a buffer of its
 * own, with the settings every frame uses: for callers that build frames from parts encoded once.
 */
export function encodePayload(value: unknown): Uint8Array {
  const encoded = encoder.encode(value);
  const payload = new Uint8Array(encoded.length);
  payload.set(encoded);
  return payload;
}

/** Encodes `value` as one frame: 4-byte big-endian length + CBOR. Throws FrameTooLargeError over the limit. */
export function encodeFrame(value: unknown, maxFrameBytes: number = MAX_FRAME_BYTES): Uint8Array {
  // The encoder returns a view into its own reusable buffer: copy it out right away.
  const payload = encoder.encode(value);
  const payloadBytes = payload.length;
  if (payloadBytes > maxFrameBytes) throw new FrameTooLargeError(payloadBytes, maxFrameBytes);
  const frame = new Uint8Array(FRAME_HEADER_BYTES + payloadBytes);
  frame[0] = payloadBytes >>> 24;
  frame[1] = (payloadBytes >>> 16) & 0xff;
  frame[2] = (payloadBytes >>> 8) & 0xff;
  frame[3] = payloadBytes & 0xff;
  frame.set(payload, FRAME_HEADER_BYTES);
  return frame;
}

function readUint32BE(bytes: Uint8Array, offset: number): number {
  return (
    bytes[offset]! * 0x1000000 + ((bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!)
  );
}

function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/**
 * Reassembles frames from arbitrary chunks of a byte stream.
 *
 * Frames that lie wholly inside a chunk are decoded in place. Only a frame that straddles chunk
 * boundaries is copied, into a buffer of its own that grows by doubling (capped at the frame's length),
 * so every byte is copied a bounded number of times and memory stays within twice what was received.
 * The decoder keeps references to the chunks it is given only while decoding; it never mutates them.
 *
 * After push() throws, the decoder stays failed: every later push() throws the same FrameError.
 */
export class FrameDecoder {
  private readonly decoder = newDecoder();
  private readonly header = new Uint8Array(FRAME_HEADER_BYTES);
  private headerLength = 0;
  /** Payload length from the header of the pending frame; valid once headerLength is 4. */
  private pendingFrameBytes = 0;
  /** Buffer for the payload of a frame that straddles chunks; null until its header is complete. */
  private pendingPayload: Uint8Array | null = null;
  private pendingPayloadLength = 0;
  private failure: FrameError | null = null;
  /** Bytes of the pending payload buffer taken from the budget. */
  private budgetHeld = 0;
  /** performance.now() when the first byte of the pending (incomplete) frame arrived; 0 when none. */
  private pendingSince = 0;

  /**
   * budget: when given, buffers for frames that straddle chunks are allocated from it, and a frame
   * whose buffer it refuses fails the stream (FrameError).
   */
  constructor(
    readonly maxFrameBytes: number = MAX_FRAME_BYTES,
    private budget: ByteBudget | null = null,
  ) {}

  /** When the oldest byte of an incomplete frame arrived (performance.now()), or 0 if none is pending. */
  get partialFrameSince(): number {
    return this.pendingSince;
  }

  /** Stops charging the budget (a trusted peer); what the pending frame holds is given back. */
  leaveBudget(): void {
    this.releaseBudget();
    this.budget = null;
  }

  /** Gives back what the pending frame holds from the budget (call when the connection closes). */
  releaseBudget(): void {
    if (this.budgetHeld) this.budget?.give(this.budgetHeld);
    this.budgetHeld = 0;
  }

  /** Bytes received that belong to a frame not yet complete. */
  get bufferedBytes(): number {
    return this.headerLength + this.pendingPayloadLength;
  }

  /** Feeds one chunk; returns the values of all frames completed by it, in order. Throws FrameError. */
  push(chunk: Uint8Array): unknown[] {
    if (this.failure) throw this.failure;
    const values: unknown[] = [];
    try {
      let position = 0;
      if (this.headerLength > 0) {
        position = this.accumulate(chunk, 0);
        const payload = this.pendingPayload;
        if (payload === null || this.pendingPayloadLength < this.pendingFrameBytes) return values;
        const frameBytes = this.pendingFrameBytes;
        // Drop the buffer before decoding: a fresh one is allocated for the next straddling frame.
        this.headerLength = 0;
        this.pendingPayload = null;
        this.pendingPayloadLength = 0;
        this.pendingSince = 0;
        this.releaseBudget();
        values.push(this.decodePayload(payload.subarray(0, frameBytes)));
      }
      const end = chunk.length;
      while (end - position >= FRAME_HEADER_BYTES) {
        const frameBytes = readUint32BE(chunk, position);
        this.checkFrameBytes(frameBytes);
        const payloadStart = position + FRAME_HEADER_BYTES;
        if (end - payloadStart < frameBytes) break;
        values.push(this.decodePayload(chunk.subarray(payloadStart, payloadStart + frameBytes)));
        position = payloadStart + frameBytes;
      }
      if (position < end) this.accumulate(chunk, position);
    } catch (err) {
      this.failure = err instanceof FrameError ? err : new FrameError(describeError(err), { cause: err });
      this.pendingPayload = null;
      this.releaseBudget();
      throw this.failure;
    }
    return values;
  }

  /** Copies bytes of the pending (incomplete) frame out of chunk from position; returns the new position. */
  private accumulate(chunk: Uint8Array, position: number): number {
    if (this.pendingSince === 0 && position < chunk.length) this.pendingSince = performance.now();
    while (this.headerLength < FRAME_HEADER_BYTES && position < chunk.length) {
      this.header[this.headerLength++] = chunk[position++]!;
    }
    if (this.headerLength < FRAME_HEADER_BYTES) return position;
    if (this.pendingPayload === null) {
      const frameBytes = readUint32BE(this.header, 0);
      this.checkFrameBytes(frameBytes);
      this.pendingFrameBytes = frameBytes;
      this.pendingPayload = this.allocate(Math.min(frameBytes, INITIAL_PAYLOAD_CAPACITY));
      this.pendingPayloadLength = 0;
    }
    const take = Math.min(this.pendingFrameBytes - this.pendingPayloadLength, chunk.length - position);
    if (take > 0) {
      const needed = this.pendingPayloadLength + take;
      let payload = this.pendingPayload;
      if (needed > payload.length) {
        const grown = this.allocate(Math.min(this.pendingFrameBytes, Math.max(needed, payload.length * 2)));
        grown.set(payload.subarray(0, this.pendingPayloadLength));
        payload = this.pendingPayload = grown;
      }
      payload.set(chunk.subarray(position, position + take), this.pendingPayloadLength);
      this.pendingPayloadLength = needed;
    }
    return position + take;
  }

  /** A buffer for the pending payload, charged to the budget (the one it replaces is given back). */
  private allocate(bytes: number): Uint8Array {
    if (this.budget) {
      const old = this.budgetHeld;
      this.budget.give(old);
      this.budgetHeld = 0;
      if (!this.budget.take(bytes)) {
        throw new FrameError(
          `partially received frames would hold more than ${this.budget.limitBytes} bytes across all connections ` +
            `(this frame announces ${this.pendingFrameBytes} bytes); connection closed`,
        );
      }
      this.budgetHeld = bytes;
    }
    return new Uint8Array(bytes);
  }

  private checkFrameBytes(frameBytes: number): void {
    if (frameBytes > this.maxFrameBytes) {
      throw new FrameError(`frame of ${frameBytes} bytes exceeds the ${this.maxFrameBytes}-byte limit`);
    }
  }

  private decodePayload(payload: Uint8Array): unknown {
    try {
      return this.decoder.decode(payload);
    } catch (err) {
      throw new FrameError(`malformed CBOR in frame: ${describeError(err)} (payload of ${payload.length} bytes)`, {
        cause: err,
      });
    }
  }
}
