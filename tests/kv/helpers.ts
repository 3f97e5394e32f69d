// Shared helpers for the kv tests: byte/string conversion and a seeded random generator.

import { KvStore, type ApplyMeta, type ApplyResult, type Command, type CommandResult } from "../../src/kv";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a string. */
export function b(text: string): Uint8Array {
  return encoder.encode(text);
}

/** String of UTF-8 bytes. */
export function str(bytes: Uint8Array | undefined): string | undefined {
  return bytes === undefined ? undefined : decoder.decode(bytes);
}

export { mulberry32 as rng } from "../rng";

export function randInt(random: () => number, n: number): number {
  return Math.floor(random() * n);
}

/** A store driver that numbers log entries itself. */
export class Driver {
  index = 0;
  constructor(readonly store: KvStore = new KvStore()) {}

  apply(cmd: Command, meta?: ApplyMeta): ApplyResult {
    const result = this.store.apply(++this.index, cmd, meta);
    if (result === null) throw new Error("entry unexpectedly ignored");
    return result;
  }

  /** Apply and return the result, failing the test if the command failed. */
  ok(cmd: Command, meta?: ApplyMeta): CommandResult {
    const result = this.apply(cmd, meta);
    if (!result.ok) throw new Error(`command failed: ${result.error.code}: ${result.error.message}`);
    return result.result;
  }

  /** Apply and return the error code, failing the test if the command succeeded. */
  err(cmd: Command, meta?: ApplyMeta): string {
    const result = this.apply(cmd, meta);
    if (result.ok) throw new Error(`command unexpectedly succeeded: ${JSON.stringify(result.result)}`);
    return result.error.code;
  }
}
