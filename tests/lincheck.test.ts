import { mulberry32 } from "./rng";
import { describe, expect, test } from "bun:test";
import { checkLinearizable, SEARCH_LIMIT_PREFIX, type HistoryOp } from "./lincheck";

// ---- helpers ----

function put(client: number, value: string, invoke: number, complete: number | null, key = "k", ok = true): HistoryOp {
  return { client, kind: "put", key, value, invoke, complete, ok };
}
function get(client: number, output: string | null, invoke: number, complete: number | null, key = "k", ok = true): HistoryOp {
  return { client, kind: "get", key, output, invoke, complete, ok };
}
function cas(
  client: number,
  expected: string | null,
  value: string,
  ok: boolean,
  invoke: number,
  complete: number | null,
  key = "k",
): HistoryOp {
  return { client, kind: "cas", key, expected, value, invoke, complete, ok };
}

const prng = mulberry32;

interface GenOpts {
  ops: number;
  clients: number;
  keys: string[];
  values: number; // size of the value pool (small pool = repeated values)
  unknownRate: number; // probability an op gets no response
}

/**
 * Generate a linearizable history by simulating real registers: every op takes
 * effect at a true linearization point, and its [invoke, complete] interval is
 * drawn randomly around that point. Ops of one client never overlap.
 */
function genHistory(seed: number, g: GenOpts): HistoryOp[] {
  const rnd = prng(seed);
  const regs = new Map<string, string | null>();
  const freeAt = new Array<number>(g.clients).fill(0);
  const out: HistoryOp[] = [];
  let t = 0;
  let seq = 0;
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)];
  const randValue = () => `v${Math.floor(rnd() * g.values)}`;
  while (out.length < g.ops) {
    t += rnd() * 1.0;
    const free = [...freeAt.keys()].filter((c) => freeAt[c] < t);
    if (free.length === 0) continue;
    const client = pick(free);
    const key = pick(g.keys);
    const invoke = freeAt[client] + (t - freeAt[client]) * rnd(); // in (freeAt, t]
    const complete = t + rnd() * 3;
    const unknown = rnd() < g.unknownRate;
    const cur = regs.get(key) ?? null;
    const r = rnd();
    let op: HistoryOp;
    if (r < 0.4) {
      const value = `${randValue()}#${seq++ % 7}`;
      // Unknown-outcome writes take effect or not, at random.
      if (!unknown || rnd() < 0.5) regs.set(key, value);
      op = put(client, value, invoke, unknown ? null : complete, key);
    } else if (r < 0.8) {
      op = get(client, cur, invoke, unknown ? null : complete, key);
    } else {
      const expected = rnd() < 0.6 ? cur : rnd() < 0.3 ? null : randValue();
      const value = `${randValue()}#c${seq++ % 5}`;
      const swapped = cur === expected;
      const applied = swapped && (!unknown || rnd() < 0.5);
      if (applied) regs.set(key, value);
      op = cas(client, expected, value, swapped, invoke, unknown ? null : complete, key);
    }
    out.push(op);
    // A client that got no response moves on after a timeout.
    freeAt[client] = unknown ? complete + 5 : complete;
  }
  return out;
}

/** Shuffle so the checker cannot rely on input order. */
function shuffled<T>(xs: T[], rnd: () => number): T[] {
  const a = xs.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function expectOk(h: HistoryOp[], opts?: { initial?: string | null; maxStates?: number }) {
  const res = checkLinearizable(h, opts);
  if (!res.ok) throw new Error(`expected linearizable, got: ${res.message}`);
}
function expectViolation(h: HistoryOp[], opts?: { initial?: string | null; maxStates?: number }) {
  const res = checkLinearizable(h, opts);
  expect(res.ok).toBe(false);
  if (res.ok) return res as never;
  expect(res.message.startsWith(SEARCH_LIMIT_PREFIX)).toBe(false);
  expect(res.ops.length).toBeGreaterThan(0);
  return res;
}

// ---- tests ----

describe("lincheck basics", () => {
  test("empty history is linearizable", () => {
    expectOk([]);
  });

  test("sequential valid history passes", () => {
    expectOk([
      get(1, null, 0, 1),
      put(1, "a", 2, 3),
      get(2, "a", 4, 5),
      put(2, "b", 6, 7),
      get(1, "b", 8, 9),
      cas(1, "b", "c", true, 10, 11),
      get(2, "c", 12, 13),
    ]);
  });

  test("stale read after a later put completed fails", () => {
    const h = [put(1, "a", 0, 1), put(1, "b", 2, 3), get(2, "a", 4, 5)];
    const res = expectViolation(h);
    expect(res.key).toBe("k");
    expect(res.ops).toContain(h[2]);
    expect(res.message).toContain("not linearizable");
  });

  test("read of initial value after a completed put fails", () => {
    expectViolation([put(1, "a", 0, 1), get(2, null, 2, 3)]);
  });

  test("initial option is honoured", () => {
    expectOk([get(1, "x", 0, 1)], { initial: "x" });
    expectViolation([get(1, "x", 0, 1)]);
  });

  test("concurrent put/get where either order is valid passes", () => {
    // get overlaps put: it may see the old or the new value.
    expectOk([put(1, "a", 0, 1), put(1, "b", 2, 6), get(2, "a", 3, 5)]);
    expectOk([put(1, "a", 0, 1), put(1, "b", 2, 6), get(2, "b", 3, 5)]);
    // Two overlapping reads disagreeing in an order consistent with the put.
    expectOk([put(1, "b", 0, 10), get(2, null, 1, 4), get(3, "b", 2, 5), get(2, "b", 6, 7)]);
  });

  test("reads going backwards in time fail even with a concurrent put", () => {
    // Once a read saw "b", a later non-overlapping read cannot see the older value.
    expectViolation([put(1, "a", 0, 1), put(1, "b", 2, 20), get(2, "b", 3, 4), get(2, "a", 5, 6)]);
  });

  test("read of a value never written fails", () => {
    const h = [put(1, "a", 0, 1), get(2, "zzz", 2, 3)];
    const res = expectViolation(h);
    expect(res.ops).toContain(h[1]);
  });

  test("failed put/get are dropped", () => {
    // A put that definitely failed must not be observed...
    expectViolation([put(1, "a", 0, 1), put(1, "b", 2, 3, "k", false), get(2, "b", 4, 5)]);
    // ...and does not affect later reads.
    expectOk([put(1, "a", 0, 1), put(1, "b", 2, 3, "k", false), get(2, "a", 4, 5)]);
    // A failed get's output is irrelevant.
    expectOk([put(1, "a", 0, 1), get(2, "garbage", 2, 3, "k", false)]);
  });
});

describe("lincheck cas", () => {
  test("successful cas changes the value, failed cas does not", () => {
    expectOk([put(1, "a", 0, 1), cas(1, "a", "b", true, 2, 3), get(1, "b", 4, 5)]);
    expectOk([put(1, "a", 0, 1), cas(1, "x", "b", false, 2, 3), get(1, "a", 4, 5)]);
    expectOk([cas(1, null, "a", true, 0, 1), get(1, "a", 2, 3)]);
  });

  test("cas reporting success with wrong expected value fails", () => {
    expectViolation([put(1, "a", 0, 1), cas(1, "x", "b", true, 2, 3)]);
  });

  test("cas reporting failure although guard held fails", () => {
    expectViolation([put(1, "a", 0, 1), cas(1, "a", "b", false, 2, 3)]);
  });

  test("failed cas must not take effect", () => {
    expectViolation([put(1, "a", 0, 1), cas(1, "x", "b", false, 2, 3), get(1, "b", 4, 5)]);
  });

  test("two concurrent cas with same expected value cannot both succeed", () => {
    expectViolation([put(1, "a", 0, 1), cas(1, "a", "b", true, 2, 5), cas(2, "a", "c", true, 3, 6)]);
  });

  test("two concurrent cas, one wins one loses, passes", () => {
    expectOk([
      put(1, "a", 0, 1),
      cas(1, "a", "b", true, 2, 5),
      cas(2, "a", "c", false, 3, 6),
      get(3, "b", 7, 8),
    ]);
    // Wrong winner according to the final read.
    expectViolation([
      put(1, "a", 0, 1),
      cas(1, "a", "b", true, 2, 5),
      cas(2, "a", "c", false, 3, 6),
      get(3, "c", 7, 8),
    ]);
  });

  test("unknown-outcome cas may or may not take effect", () => {
    expectOk([put(1, "a", 0, 1), cas(1, "a", "b", false, 2, null), get(2, "b", 10, 11)]);
    expectOk([put(1, "a", 0, 1), cas(1, "a", "b", false, 2, null), get(2, "a", 10, 11)]);
    // ...but it cannot swap when the guard cannot hold.
    expectViolation([put(1, "a", 0, 1), cas(1, "x", "b", true, 2, null), get(2, "b", 10, 11)]);
  });
});

describe("lincheck unknown outcomes", () => {
  test("unknown-outcome put whose value is later read passes", () => {
    expectOk([put(1, "a", 0, 1), put(1, "b", 2, null), get(2, "b", 100, 101)]);
  });

  test("unknown-outcome put never read passes", () => {
    expectOk([put(1, "a", 0, 1), put(1, "b", 2, null), get(2, "a", 100, 101)]);
  });

  test("unknown-outcome put cannot take effect before its invoke", () => {
    expectViolation([put(1, "a", 0, 1), get(2, "b", 2, 3), put(1, "b", 4, null)]);
  });

  test("unknown-outcome put takes effect at a single point", () => {
    // Read sees b, then a later read sees a again: b cannot be undone.
    expectViolation([put(1, "a", 0, 1), put(1, "b", 2, null), get(2, "b", 10, 11), get(2, "a", 12, 13)]);
  });

  test("unknown-outcome put never read stays correct with failed cas present", () => {
    // The failed cas(a) needs the register != a, which only the unknown put of c provides.
    expectOk([put(1, "a", 0, 1), put(1, "c", 2, null), cas(2, "a", "b", false, 10, 11)]);
    expectViolation([put(1, "a", 0, 1), cas(2, "a", "b", false, 10, 11)]);
  });

  test("unknown-outcome get is ignored", () => {
    expectOk([put(1, "a", 0, 1), get(2, "nonsense", 2, null)]);
  });
});

describe("lincheck multi-key", () => {
  test("keys are independent registers", () => {
    expectOk([
      put(1, "a", 0, 1, "x"),
      put(2, "b", 0, 1, "y"),
      get(1, "b", 2, 3, "y"),
      get(2, "a", 2, 3, "x"),
      get(3, null, 2, 3, "z"),
    ]);
  });

  test("violation reported on the right key", () => {
    const res = expectViolation([
      put(1, "a", 0, 1, "x"),
      put(2, "a", 0, 1, "y"),
      get(1, "a", 2, 3, "x"),
      get(2, null, 2, 3, "y"), // stale on y
    ]);
    expect(res.key).toBe("y");
    for (const op of res.ops) expect(op.key).toBe("y");
  });

  test("a value written to another key is not visible", () => {
    const res = expectViolation([put(1, "a", 0, 1, "x"), get(2, "a", 2, 3, "y")]);
    expect(res.key).toBe("y");
  });
});

describe("lincheck search limit", () => {
  test("giving up is distinguishable from a violation", () => {
    const h = genHistory(7, { ops: 300, clients: 8, keys: ["k"], values: 2, unknownRate: 0 });
    const res = checkLinearizable(h, { maxStates: 10 });
    expect(res.ok).toBe(false);
    if (!res.ok) expect(res.message.startsWith(SEARCH_LIMIT_PREFIX)).toBe(true);
    expectOk(h);
  });
});

describe("lincheck randomized", () => {
  const configs: [string, GenOpts][] = [
    ["1 key, 3 clients", { ops: 200, clients: 3, keys: ["k"], values: 4, unknownRate: 0 }],
    ["1 key, 8 clients, unknowns", { ops: 300, clients: 8, keys: ["k"], values: 3, unknownRate: 0.05 }],
    ["3 keys, 5 clients, unknowns", { ops: 400, clients: 5, keys: ["a", "b", "c"], values: 3, unknownRate: 0.1 }],
  ];
  for (const [name, g] of configs) {
    test(`random linearizable histories pass, corrupted read fails (${name})`, () => {
      for (let i = 0; i < 25; i++) {
        const seed = 1000 * g.clients + i;
        const rnd = prng(seed ^ 0x5eed);
        const h = genHistory(seed, g);
        const good = checkLinearizable(shuffled(h, rnd));
        if (!good.ok) throw new Error(`seed ${seed}: valid history rejected: ${good.message}`);

        const reads = h.filter((o) => o.kind === "get" && o.complete !== null && o.ok);
        if (reads.length === 0) continue;
        const victim = reads[Math.floor(rnd() * reads.length)];
        const corrupted = h.map((o) => (o === victim ? { ...o, output: "never-written" } : o));
        const bad = checkLinearizable(shuffled(corrupted, rnd));
        if (bad.ok) throw new Error(`seed ${seed}: corrupted history accepted`);
        if (bad.message.startsWith(SEARCH_LIMIT_PREFIX)) throw new Error(`seed ${seed}: ${bad.message}`);
        expect(bad.key).toBe(victim.key);
        expect(bad.ops.some((o) => o.output === "never-written")).toBe(true);
      }
    });
  }

  test("random corruption to a stale value is caught when sequentially impossible", () => {
    // Strictly sequential history (no overlap): any changed read output is a violation.
    for (let i = 0; i < 20; i++) {
      const seed = 42_000 + i;
      const rnd = prng(seed);
      const h: HistoryOp[] = [];
      let cur: string | null = null;
      for (let t = 0; t < 100; t++) {
        if (rnd() < 0.5) {
          cur = `v${t}`;
          h.push(put(1 + (t % 3), cur, 2 * t, 2 * t + 1));
        } else h.push(get(1 + (t % 3), cur, 2 * t, 2 * t + 1));
      }
      expectOk(h);
      const reads = h.filter((o) => o.kind === "get");
      const victim = reads[Math.floor(rnd() * reads.length)];
      const other = h.find((o) => o.kind === "put" && o.value !== victim.output && o.invoke < victim.invoke);
      if (!other) continue;
      const res = checkLinearizable(h.map((o) => (o === victim ? { ...o, output: other.value } : o)));
      if (res.ok) throw new Error(`seed ${seed}: stale read accepted`);
    }
  });
});

/**
 * Reference oracle for tiny single-key histories: tries every order of the ops
 * (respecting real-time order) and every subset of unknown-outcome ops.
 */
function bruteForce(h: HistoryOp[], initial: string | null = null): boolean {
  const ops = h.filter((o) => (o.complete === null ? o.kind !== "get" : o.ok || o.kind === "cas"));
  const end = (o: HistoryOp) => (o.complete === null ? Infinity : o.complete);
  const placed = new Array<boolean>(ops.length).fill(false);
  const rec = (state: string | null): boolean => {
    if (ops.every((o, i) => placed[i] || o.complete === null)) return true;
    for (let i = 0; i < ops.length; i++) {
      if (placed[i]) continue;
      const x = ops[i];
      if (ops.some((y, j) => !placed[j] && j !== i && end(y) < x.invoke)) continue;
      let ns: string | null;
      const out = x.output ?? null;
      const exp = x.expected ?? null;
      const val = x.value ?? null;
      if (x.kind === "put") ns = val;
      else if (x.kind === "get") {
        if (state !== out) continue;
        ns = state;
      } else if (x.complete === null || x.ok) {
        if (state !== exp) continue;
        ns = val;
      } else {
        if (state === exp) continue;
        ns = state;
      }
      placed[i] = true;
      const ok = rec(ns);
      placed[i] = false;
      if (ok) return true;
    }
    return false;
  };
  return rec(initial);
}

describe("lincheck vs brute force", () => {
  test("agrees with an exhaustive oracle on small random histories", () => {
    let linearizable = 0;
    let violations = 0;
    for (let seed = 1; seed <= 4000; seed++) {
      const rnd = prng(seed);
      const n = 2 + Math.floor(rnd() * 6);
      const vals = [null, "a", "b", "c"];
      const val = () => vals[1 + Math.floor(rnd() * 3)] as string;
      const anyVal = () => vals[Math.floor(rnd() * 4)];
      const h: HistoryOp[] = [];
      for (let i = 0; i < n; i++) {
        const invoke = Math.floor(rnd() * 10); // integer times: plenty of ties
        const complete = rnd() < 0.25 ? null : invoke + Math.floor(rnd() * 5);
        const r = rnd();
        const ok = rnd() < 0.9;
        if (r < 0.35) h.push(put(i, val(), invoke, complete, "k", ok));
        else if (r < 0.7) h.push(get(i, anyVal(), invoke, complete, "k", ok));
        else h.push(cas(i, anyVal(), val(), rnd() < 0.5, invoke, complete));
      }
      const initial = rnd() < 0.2 ? "a" : null;
      const expected = bruteForce(h, initial);
      const got = checkLinearizable(h, { initial });
      if (got.ok !== expected) {
        throw new Error(
          `seed ${seed}: checker says ${got.ok}, oracle says ${expected}\n${JSON.stringify(h, null, 1)}`,
        );
      }
      if (!got.ok) expect(got.message.startsWith(SEARCH_LIMIT_PREFIX)).toBe(false);
      if (expected) linearizable++;
      else violations++;
    }
    // Both outcomes must be well represented for the comparison to mean anything.
    expect(linearizable).toBeGreaterThan(500);
    expect(violations).toBeGreaterThan(500);
  });
});

describe("lincheck performance", () => {
  test("2,000 ops, 5 clients, one key completes", () => {
    const h = genHistory(2024, { ops: 2000, clients: 5, keys: ["k"], values: 5, unknownRate: 0.02 });
    const t0 = performance.now();
    const res = checkLinearizable(h);
    const ms = performance.now() - t0;
    console.log(`lincheck: 2000 ops / 5 clients / 1 key checked in ${ms.toFixed(1)} ms`);
    if (!res.ok) throw new Error(res.message);

    const bad = h.slice();
    const idx = bad.findIndex((o, i) => i > 1500 && o.kind === "get" && o.complete !== null);
    bad[idx] = { ...bad[idx], output: "never-written" };
    const t1 = performance.now();
    const res2 = checkLinearizable(bad);
    console.log(`lincheck: corrupted 2000-op history rejected in ${(performance.now() - t1).toFixed(1)} ms`);
    expect(res2.ok).toBe(false);
  });
});
