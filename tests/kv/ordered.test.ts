import { expect, test } from "bun:test";
import { OrderedIndex } from "../../src/kv/ordered";
import { rng, randInt } from "./helpers";

test("OrderedIndex matches a sorted array through inserts, removes, scans and counts", () => {
  const random = rng(5);
  const index = new OrderedIndex<{ key: string; n: number }>();
  const reference = new Set<string>();
  const randomKey = () => (randInt(random, 20_000) * 7919).toString(36);
  for (let step = 0; step < 30_000; step++) {
    const key = randomKey();
    if (random() < 0.6) {
      expect(index.insert({ key, n: step })).toBe(!reference.has(key));
      reference.add(key);
    } else {
      expect(index.remove(key) !== undefined).toBe(reference.has(key));
      reference.delete(key);
    }
    if (step % 3000 === 0) index.checkInvariants();
  }
  index.checkInvariants();
  const sorted = [...reference].sort();
  expect(index.size).toBe(sorted.length);
  const all: string[] = [];
  index.forEach((r) => all.push(r.key));
  expect(all).toEqual(sorted);
  for (let i = 0; i < 200; i++) {
    let start = randomKey();
    let end: string | null = random() < 0.2 ? null : randomKey();
    if (end !== null && end < start) [start, end] = [end, start];
    const expected = sorted.filter((k) => k >= start && (end === null || k < end));
    const got: string[] = [];
    index.scan(start, end, (r) => {
      got.push(r.key);
    });
    expect(got).toEqual(expected);
    expect(index.countRange(start, end)).toBe(expected.length);
    const limited: string[] = [];
    index.scan(start, end, (r) => {
      limited.push(r.key);
      return limited.length < 3;
    });
    expect(limited).toEqual(expected.slice(0, 3));
  }
  // remove everything: chunks merge and vanish
  for (const key of sorted) expect(index.remove(key)).toBeDefined();
  index.checkInvariants();
  expect(index.size).toBe(0);
  expect(index.countRange("", null)).toBe(0);
});

test("bulk load then mutate", () => {
  const index = new OrderedIndex<{ key: string }>();
  const keys = Array.from({ length: 5000 }, (_, i) => i.toString().padStart(5, "0"));
  index.load(keys.map((key) => ({ key })));
  index.checkInvariants();
  expect(index.get("01234")?.key).toBe("01234");
  expect(index.insert({ key: "01234x" })).toBe(true);
  expect(index.countRange("01234", "01235")).toBe(2);
  index.checkInvariants();
});

test("a frozen view keeps the records as they were while the index splits, shrinks and merges chunks", () => {
  const random = rng(11);
  const index = new OrderedIndex<{ key: string; n: number }>();
  const key = (i: number) => String(i).padStart(6, "0");
  for (let i = 0; i < 5000; i += 2) index.insert({ key: key(i), n: i });
  const before: string[] = [];
  index.forEach((r) => before.push(r.key));
  const view = index.freeze();
  for (let step = 0; step < 20_000; step++) {
    const i = randInt(random, 5000);
    if (random() < 0.5) index.insert({ key: key(i), n: -i });
    else index.remove(key(i));
  }
  index.checkInvariants();
  expect(view.flat().map((r) => r.key)).toEqual(before);
  // After thaw() changes no longer copy chunks: a new view shows them.
  index.thaw();
  const live: string[] = [];
  index.forEach((r) => live.push(r.key));
  expect(index.freeze().flat().map((r) => r.key)).toEqual(live);
  index.thaw();
});
