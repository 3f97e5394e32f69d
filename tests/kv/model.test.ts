// Differential test: the store against a trivially correct Map-based model for put/del/range.

import { expect, test } from "bun:test";
import { KvStore, bytesToKey, keyToBytes, prefixEnd, type DelResult, type RangeRequest } from "../../src/kv";
import { rng, randInt } from "./helpers";

interface ModelEntry {
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
}

class Model {
  readonly keys = new Map<string, ModelEntry>();
  revision = 0;

  put(key: string, value: string): void {
    this.revision++;
    const old = this.keys.get(key);
    this.keys.set(key, {
      value,
      createRevision: old ? old.createRevision : this.revision,
      modRevision: this.revision,
      version: old ? old.version + 1 : 1,
    });
  }

  selected(key: string, rangeEnd: string | undefined, prefix: boolean): string[] {
    const out: string[] = [];
    for (const k of this.keys.keys()) {
      let hit: boolean;
      if (prefix) hit = k.startsWith(key);
      else if (rangeEnd !== undefined) hit = k >= key && (rangeEnd === "\u0000" || k < rangeEnd);
      else hit = k === key;
      if (hit) out.push(k);
    }
    return out.sort();
  }

  del(key: string, rangeEnd: string | undefined, prefix: boolean): number {
    const doomed = this.selected(key, rangeEnd, prefix);
    if (doomed.length > 0) this.revision++;
    for (const k of doomed) this.keys.delete(k);
    return doomed.length;
  }
}

// A tiny alphabet with the extreme bytes, so prefixes, 0x00 and 0xff edges collide often.
const ALPHABET = "\u0000ab\u007f\u0080\u00ff";

function randomKey(random: () => number, minLength: number): string {
  const length = minLength + randInt(random, 4 - minLength);
  let key = "";
  for (let i = 0; i < length; i++) key += ALPHABET[randInt(random, ALPHABET.length)];
  return key;
}

test("store matches a Map model over 20,000 random put/del/range operations", () => {
  const random = rng(99);
  const store = new KvStore({ historyMaxEvents: 100 });
  const model = new Model();
  let index = 0;
  let scanned = 0;
  for (let step = 0; step < 20_000; step++) {
    const roll = random();
    if (roll < 0.45) {
      const key = randomKey(random, 1);
      const value = `v${step}`;
      model.put(key, value);
      const result = store.apply(++index, { op: "put", key: keyToBytes(key), value: keyToBytes(value) });
      expect(result).toMatchObject({ ok: true, result: { revision: model.revision } });
    } else if (roll < 0.65) {
      const prefix = random() < 0.4;
      const useRangeEnd = !prefix && random() < 0.5;
      const key = randomKey(random, prefix || useRangeEnd ? 0 : 1);
      const rangeEnd = useRangeEnd ? (random() < 0.1 ? "\u0000" : randomKey(random, 1)) : undefined;
      const expected = model.del(key, rangeEnd, prefix);
      const cmd = { op: "del" as const, key: keyToBytes(key), ...(prefix ? { prefix } : {}) };
      const result = store.apply(++index, rangeEnd === undefined ? cmd : { ...cmd, rangeEnd: keyToBytes(rangeEnd) });
      expect(result!.ok).toBe(true);
      expect((result as { result: DelResult }).result.deleted).toBe(expected);
    } else {
      const prefix = random() < 0.5;
      const useRangeEnd = !prefix && random() < 0.7;
      const key = randomKey(random, prefix || useRangeEnd ? 0 : 1);
      const rangeEnd = useRangeEnd ? (random() < 0.1 ? "\u0000" : randomKey(random, 1)) : undefined;
      const limit = random() < 0.3 ? 1 + randInt(random, 5) : undefined;
      const request: RangeRequest = { key: keyToBytes(key) };
      if (prefix) request.prefix = true;
      if (rangeEnd !== undefined) request.rangeEnd = keyToBytes(rangeEnd);
      if (limit !== undefined) request.limit = limit;
      const expectedKeys = model.selected(key, rangeEnd, prefix);
      const got = store.range(request);
      const shown = limit === undefined ? expectedKeys : expectedKeys.slice(0, limit);
      expect(got.count).toBe(expectedKeys.length);
      expect(got.more).toBe(shown.length < expectedKeys.length);
      expect(got.kvs.map((kv) => bytesToKey(kv.key))).toEqual(shown);
      for (const kv of got.kvs) {
        const m = model.keys.get(bytesToKey(kv.key))!;
        expect(bytesToKey(kv.value)).toBe(m.value);
        expect([kv.createRevision, kv.modRevision, kv.version]).toEqual([m.createRevision, m.modRevision, m.version]);
      }
      scanned += got.kvs.length;
    }
    expect(store.revision).toBe(model.revision);
  }
  expect(store.stats().keys).toBe(model.keys.size);
  expect(scanned).toBeGreaterThan(1000);
  store.checkInvariants();
});

test("prefixEnd", () => {
  expect(prefixEnd("ab")).toBe("ac");
  expect(prefixEnd("a\u00ff")).toBe("b");
  expect(prefixEnd("\u00ff\u00ff")).toBeNull();
  expect(prefixEnd("")).toBeNull();
});
