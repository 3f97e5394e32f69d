// Small helpers shared by the WAL and the snapshot files.

const TWO_POW_32 = 0x1_0000_0000;

/** Writes a non-negative safe integer as a little-endian u64. */
export function setU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value >>> 0, true);
  view.setUint32(offset + 4, Math.floor(value / TWO_POW_32), true);
}

/** Reads a little-endian u64; returns NaN when it does not fit a safe integer. */
export function getU64(view: DataView, offset: number): number {
  const low = view.getUint32(offset, true);
  const high = view.getUint32(offset + 4, true);
  if (high >= 0x20_0000) return Number.NaN; // >= 2^53
  return high * TWO_POW_32 + low;
}

/** Writes a safe integer (possibly negative) as a little-endian two's-complement i64. */
export function setI64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value >>> 0, true);
  view.setInt32(offset + 4, Math.floor(value / TWO_POW_32), true);
}

/** Reads a little-endian i64; returns NaN when it does not fit a safe integer. */
export function getI64(view: DataView, offset: number): number {
  const low = view.getUint32(offset, true);
  const high = view.getInt32(offset + 4, true);
  if (high >= 0x20_0000 || high < -0x20_0000) return Number.NaN;
  return high * TWO_POW_32 + low;
}

/** crc32 of `bytes`; pass the crc of what came before as `seed` to continue it (crc32(a ++ b) = crc32(b, crc32(a))). */
export function crc32(bytes: Uint8Array, seed = 0): number {
  return Bun.hash.crc32(bytes, seed) >>> 0;
}

export function errorCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === "string" ? code : undefined;
  }
  return undefined;
}

export function isSafeIndex(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}
