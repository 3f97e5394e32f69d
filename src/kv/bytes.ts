// Byte-string helpers. Keys are kept internally as "binary strings": one char (code 0..255) per byte,
// so that JavaScript string comparison orders keys exactly like unsigned byte-wise comparison.

const FROM_CHAR_CODE_CHUNK = 8192;

/** Byte string -> binary string (one char per byte). */
export function bytesToKey(bytes: Uint8Array): string {
  if (bytes.length <= FROM_CHAR_CODE_CHUNK) {
    return String.fromCharCode.apply(null, bytes as unknown as number[]);
  }
  let out = "";
  for (let start = 0; start < bytes.length; start += FROM_CHAR_CODE_CHUNK) {
    const part = bytes.subarray(start, start + FROM_CHAR_CODE_CHUNK);
    out += String.fromCharCode.apply(null, part as unknown as number[]);
  }
  return out;
}

/** Binary string -> byte string. Every char must be in 0..255 (true for strings made by bytesToKey). */
export function keyToBytes(key: string): Uint8Array {
  const out = new Uint8Array(key.length);
  for (let i = 0; i < key.length; i++) out[i] = key.charCodeAt(i);
  return out;
}

/** A fresh plain Uint8Array copy (never a Buffer, never a view into someone else's memory). */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length);
  out.set(bytes);
  return out;
}

/** Unsigned lexicographic comparison: negative, zero or positive. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The smallest binary string greater than every string that starts with `prefix`,
 * or null when there is none (empty prefix, or a prefix made only of 0xff bytes).
 */
export function prefixEnd(prefix: string): string | null {
  let end = prefix.length;
  while (end > 0 && prefix.charCodeAt(end - 1) === 0xff) end--;
  if (end === 0) return null;
  return prefix.slice(0, end - 1) + String.fromCharCode(prefix.charCodeAt(end - 1) + 1);
}
