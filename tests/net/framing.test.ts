import { describe, expect, test } from "bun:test";
// Loads cbor-x's main entry, which under Bun switches on the (broken) native string extractor for every
// user of that entry; framing must be unaffected.
import { isNativeAccelerationEnabled } from "cbor-x";
import { FrameDecoder, FrameError, FrameTooLargeError, MAX_FRAME_BYTES, encodeFrame } from "../../src/net";

function concat(parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

const sample = {
  k: "append",
  term: 7,
  from: 3,
  entries: [
    { index: 41, term: 7, data: new Uint8Array([1, 2, 3, 255]) },
    { index: 42, term: 7, data: new Uint8Array(0) },
  ],
  nested: { deeper: { list: [1, -1, 2 ** 40, -(2 ** 40), 1.5, "x", null, true, false] } },
  text: "héllo wörld ✓",
  none: null,
};

describe("framing", () => {
  test("MAX_FRAME_BYTES is 16 MiB", () => {
    expect(MAX_FRAME_BYTES).toBe(16 * 1024 * 1024);
  });

  test("round trip keeps nested objects, Uint8Array, numbers, strings, arrays, null", () => {
    const frame = encodeFrame(sample);
    const length = new DataView(frame.buffer, frame.byteOffset).getUint32(0, false);
    expect(length).toBe(frame.length - 4);
    const values = new FrameDecoder().push(frame);
    expect(values).toHaveLength(1);
    const value = values[0] as typeof sample;
    expect(value).toEqual(sample);
    expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
    expect(Object.getPrototypeOf(value.nested)).toBe(Object.prototype);
    expect(value.entries[0]!.data).toBeInstanceOf(Uint8Array);
    expect([...value.entries[0]!.data]).toEqual([1, 2, 3, 255]);
    expect(value.entries[1]!.data).toBeInstanceOf(Uint8Array);
    expect(value.entries[1]!.data.length).toBe(0);
  });

  test("decoded byte strings own their memory", () => {
    const frame = encodeFrame({ data: new Uint8Array([9, 9, 9]) });
    const value = new FrameDecoder().push(frame)[0] as { data: Uint8Array };
    frame.fill(0);
    expect([...value.data]).toEqual([9, 9, 9]);
    expect(value.data.buffer.byteLength).toBe(3);
  });

  test("a stream split at every byte boundary decodes the same", () => {
    const values = [sample, { k: "small" }, [1, 2, 3], "str", 42, null];
    const stream = concat(values.map((v) => encodeFrame(v)));
    for (let cut = 0; cut <= stream.length; cut++) {
      const decoder = new FrameDecoder();
      const got = [...decoder.push(stream.subarray(0, cut)), ...decoder.push(stream.subarray(cut))];
      expect(got).toEqual(values);
      expect(decoder.bufferedBytes).toBe(0);
    }
  });

  test("a stream fed one byte at a time decodes the same", () => {
    const values = [sample, { k: "small" }, new Uint8Array([1, 2])];
    const stream = concat(values.map((v) => encodeFrame(v)));
    const decoder = new FrameDecoder();
    const got: unknown[] = [];
    for (let i = 0; i < stream.length; i++) got.push(...decoder.push(stream.subarray(i, i + 1)));
    expect(got).toEqual(values);
  });

  test("100 frames in one chunk", () => {
    const values = Array.from({ length: 100 }, (_, i) => ({ seq: i, body: new Uint8Array([i, i + 1]) }));
    const decoder = new FrameDecoder();
    const got = decoder.push(concat(values.map((v) => encodeFrame(v))));
    expect(got).toEqual(values);
  });

  test("a large frame in many uneven chunks", () => {
    const big = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 31) & 0xff);
    const stream = concat([encodeFrame({ a: 1 }), encodeFrame({ big }), encodeFrame({ b: 2 })]);
    const decoder = new FrameDecoder();
    const got: unknown[] = [];
    let offset = 0;
    let step = 1;
    while (offset < stream.length) {
      got.push(...decoder.push(stream.subarray(offset, offset + step)));
      offset += step;
      step = (step * 7 + 3) % 100_003;
    }
    expect(got).toHaveLength(3);
    expect(got[0]).toEqual({ a: 1 });
    expect((got[1] as { big: Uint8Array }).big).toEqual(big);
    expect(got[2]).toEqual({ b: 2 });
  });

  test("oversized length header is a FrameError, before the payload arrives", () => {
    const decoder = new FrameDecoder();
    const header = new Uint8Array([0x07, 0x5b, 0xcd, 0x15]); // 123456789
    expect(() => decoder.push(header)).toThrow(FrameError);
    expect(() => decoder.push(header)).toThrow("frame of 123456789 bytes exceeds the 16777216-byte limit");
  });

  test("oversized length header split across chunks is a FrameError", () => {
    const decoder = new FrameDecoder(1024);
    expect(decoder.push(new Uint8Array([0, 0]))).toEqual([]);
    expect(() => decoder.push(new Uint8Array([0x04, 0x01, 0xa0]))).toThrow(
      "frame of 1025 bytes exceeds the 1024-byte limit",
    );
  });

  test("garbage CBOR is a FrameError and the decoder stays failed", () => {
    const garbage = new Uint8Array([0, 0, 0, 3, 0x1c, 0xff, 0xff]);
    const decoder = new FrameDecoder();
    let caught: unknown;
    try {
      decoder.push(garbage);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(FrameError);
    expect((caught as Error).message).toStartWith("malformed CBOR in frame: ");
    expect(() => decoder.push(encodeFrame({ ok: true }))).toThrow(FrameError);
  });

  test("trailing bytes after the CBOR value, an empty payload and deep nesting are FrameErrors", () => {
    expect(() => new FrameDecoder().push(new Uint8Array([0, 0, 0, 2, 0x01, 0x01]))).toThrow(FrameError);
    expect(() => new FrameDecoder().push(new Uint8Array([0, 0, 0, 0]))).toThrow(FrameError);
    const deep = new Uint8Array(4 + 200_000).fill(0x81);
    deep.set([0, 0x03, 0x0d, 0x40]);
    expect(() => new FrameDecoder().push(deep)).toThrow(FrameError);
  });

  test("objects with many strings decode even with cbor-x's native addon loaded", () => {
    const value = {
      k: "append",
      text: "héllo",
      n: null,
      keys: Array.from({ length: 50 }, (_, i) => `key-${i}-${"x".repeat(i)}`),
      nested: [{ a: "one", b: "two" }, { a: "three", b: "four" }],
    };
    const decoder = new FrameDecoder();
    for (let i = 0; i < 20; i++) expect(decoder.push(encodeFrame(value))).toEqual([value]);
    expect(typeof isNativeAccelerationEnabled).toBe("boolean");
  });

  test("encodeFrame refuses a value over the limit", () => {
    expect(() => encodeFrame({ data: new Uint8Array(2048) }, 1024)).toThrow(FrameTooLargeError);
    expect(() => encodeFrame(new Uint8Array(MAX_FRAME_BYTES + 1))).toThrow(FrameTooLargeError);
    expect(encodeFrame(new Uint8Array(MAX_FRAME_BYTES - 5)).length).toBe(MAX_FRAME_BYTES + 4);
  });
});
