/**
 * Linearizability checker for key-value histories.
 *
 * Each key is an independent register, checked on its own. For one key the
 * check is a Wing & Gong / Lowe style depth-first search: call and return
 * events sit in a doubly linked list ordered by time; walking the list from the
 * front, any call seen before the first return is a candidate to linearize
 * next. Linearizing an op "lifts" its call and return out of the list; reaching
 * a return event means that op can no longer be postponed, so the search
 * backtracks. Visited (set of linearized ops, register value) pairs are
 * memoized so each configuration is explored at most once.
 *
 * Ops with an unknown outcome (complete === null) end at +Infinity and are
 * optional: the search may finish without linearizing them. They are kept in
 * a separate list and tried only after the required candidates, and pruned
 * hard, since each one otherwise doubles the search space:
 *  - a configuration with fewer optional ops linearized dominates one with
 *    more (same required set and value), so the memo keeps an antichain;
 *  - an optional write must be observed by the very next op (else it could
 *    be moved later or dropped), and is only tried if some remaining op could;
 *  - identical optional ops are linearized in invoke order (symmetry);
 *  - with no failed cas on the key, optional writes of never-read values are
 *    dropped up front.
 * Unique written values keep the search cheap; tiny value domains with many
 * unknown outcomes can still blow up, which ends with a "search limit" result.
 */

export type OpKind = "put" | "get" | "cas";

export interface HistoryOp {
  client: number;
  kind: OpKind;
  key: string;
  value?: string;
  expected?: string | null;
  invoke: number;
  complete: number | null;
  ok: boolean;
  output?: string | null;
}

export type CheckResult =
  | { ok: true }
  | { ok: false; key: string; message: string; ops: HistoryOp[] };

export interface CheckOptions {
  /** Register value before the history starts (default null = absent). */
  initial?: string | null;
  /** Cap on explored states per key (default 2,000,000). */
  maxStates?: number;
}

const DEFAULT_MAX_STATES = 2_000_000;

/** Message prefix used when the search is abandoned (not a violation). */
export const SEARCH_LIMIT_PREFIX = "search limit";

// Internal op step codes.
const K_PUT = 0; // always applies: state := a
const K_GET = 1; // requires state === a
const K_CAS_OK = 2; // requires state === a, then state := b
const K_CAS_FAIL = 3; // requires state !== a, no change

interface PrepOp {
  src: HistoryOp;
  code: number;
  a: number;
  b: number;
  invoke: number;
  complete: number; // +Infinity for unknown outcome
  optional: boolean;
  /** Index among required ops (by invoke order) or among optional ops. */
  slot: number;
}

export function checkLinearizable(history: HistoryOp[], opts: CheckOptions = {}): CheckResult {
  const initial = opts.initial === undefined ? null : opts.initial;
  const maxStates = opts.maxStates ?? DEFAULT_MAX_STATES;
  const byKey = new Map<string, HistoryOp[]>();
  for (const op of history) {
    let list = byKey.get(op.key);
    if (!list) byKey.set(op.key, (list = []));
    list.push(op);
  }
  for (const [key, ops] of byKey) {
    const res = checkKey(key, ops, initial, maxStates);
    if (!res.ok) return res;
  }
  return { ok: true };
}

function describeValue(v: string | null | undefined): string {
  return v === null || v === undefined ? "<absent>" : JSON.stringify(v);
}

/** Human-readable one-line rendering of an op. */
export function describeOp(op: HistoryOp): string {
  const end = op.complete === null ? "?" : op.complete.toFixed(3);
  const span = `[${op.invoke.toFixed(3)}, ${end}]`;
  const outcome = op.complete === null ? "unknown" : op.ok ? "ok" : "fail";
  let what: string;
  switch (op.kind) {
    case "put":
      what = `put(${describeValue(op.value)})`;
      break;
    case "get":
      what = `get() -> ${describeValue(op.output)}`;
      break;
    case "cas":
      what = `cas(${describeValue(op.expected)} => ${describeValue(op.value)})`;
      break;
  }
  return `client ${op.client} ${what} ${outcome} ${span}`;
}

function checkKey(key: string, raw: HistoryOp[], initial: string | null, maxStates: number): CheckResult {
  // ---- Value interning: null -> 0, strings -> 1.. ----
  const ids = new Map<string, number>();
  const names: (string | null)[] = [null];
  const intern = (v: string | null | undefined): number => {
    if (v === null || v === undefined) return 0;
    let id = ids.get(v);
    if (id === undefined) {
      id = names.length;
      ids.set(v, id);
      names.push(v);
    }
    return id;
  };

  // ---- Filter and translate ops ----
  let ops: PrepOp[] = [];
  for (const src of raw) {
    const unknown = src.complete === null;
    if (!unknown && !src.ok && src.kind !== "cas") continue; // definite failure: no effect
    if (unknown && src.kind === "get") continue; // reads without a response constrain nothing
    let code: number;
    let a = 0;
    let b = 0;
    if (src.kind === "put") {
      code = K_PUT;
      a = intern(src.value);
    } else if (src.kind === "get") {
      code = K_GET;
      a = intern(src.output);
    } else {
      a = intern(src.expected);
      b = intern(src.value);
      // An unknown-outcome cas that failed its guard is a no-op, equivalent to
      // never taking effect, so only its successful form needs exploring.
      code = unknown || src.ok ? K_CAS_OK : K_CAS_FAIL;
    }
    ops.push({
      src,
      code,
      a,
      b,
      invoke: src.invoke,
      complete: unknown ? Infinity : (src.complete as number),
      optional: unknown,
      slot: 0,
    });
  }

  // Optional writes whose value is never observed (no read returns it, no cas
  // expects it) can be dropped when the key has no failed cas: removing such a
  // write from any valid linearization leaves every other op still valid.
  if (!ops.some((o) => o.code === K_CAS_FAIL)) {
    const observed = new Set<number>();
    for (const o of ops) {
      if (o.code === K_GET || o.code === K_CAS_OK) observed.add(o.a);
    }
    ops = ops.filter((o) => {
      if (!o.optional) return true;
      return observed.has(o.code === K_PUT ? o.a : o.b);
    });
  }

  const n = ops.length;
  const req = ops.filter((o) => !o.optional);
  const opt = ops.filter((o) => o.optional);
  const nReq = req.length;
  const nOpt = opt.length;
  if (nReq === 0) return { ok: true }; // optional ops may all be skipped
  req.sort((x, y) => x.invoke - y.invoke || x.complete - y.complete);
  opt.sort((x, y) => x.invoke - y.invoke);
  req.forEach((o, i) => (o.slot = i));
  opt.forEach((o, i) => (o.slot = i));

  // ---- Required ops: event list (array-backed doubly linked list) ----
  // Node 0 = head sentinel, node 2*nReq+1 = tail sentinel.
  // Call node of required op i = 1 + 2i, return node = 2 + 2i.
  const HEAD = 0;
  const TAIL = 2 * nReq + 1;
  const next = new Int32Array(2 * nReq + 2);
  const prev = new Int32Array(2 * nReq + 2);
  {
    const nodes: number[] = [];
    for (let i = 0; i < nReq; i++) nodes.push(1 + 2 * i, 2 + 2 * i);
    const timeOf = (node: number) => {
      const o = req[(node - 1) >> 1];
      return node & 1 ? o.invoke : o.complete;
    };
    // Ties: calls before returns (touching intervals count as concurrent).
    nodes.sort((x, y) => timeOf(x) - timeOf(y) || (y & 1) - (x & 1) || x - y);
    let p = HEAD;
    for (const node of nodes) {
      next[p] = node;
      prev[node] = p;
      p = node;
    }
    next[p] = TAIL;
    prev[TAIL] = p;
  }
  const lift = (call: number) => {
    const ret = call + 1;
    next[prev[call]] = next[call];
    prev[next[call]] = prev[call];
    next[prev[ret]] = next[ret];
    prev[next[ret]] = prev[ret];
  };
  const unlift = (call: number) => {
    const ret = call + 1;
    next[prev[ret]] = ret;
    prev[next[ret]] = ret;
    next[prev[call]] = call;
    prev[next[call]] = call;
  };

  // ---- Optional ops: list of not-yet-linearized ones, by invoke time ----
  // Node j = optional op j; OHEAD = nOpt, OTAIL = nOpt + 1.
  const OHEAD = nOpt;
  const OTAIL = nOpt + 1;
  const onext = new Int32Array(nOpt + 2);
  const oprev = new Int32Array(nOpt + 2);
  for (let j = 0; j <= nOpt; j++) {
    const from = j === 0 ? OHEAD : j - 1;
    const to = j === nOpt ? OTAIL : j;
    onext[from] = to;
    oprev[to] = from;
  }
  const optLift = (j: number) => {
    onext[oprev[j]] = onext[j];
    oprev[onext[j]] = oprev[j];
  };
  const optUnlift = (j: number) => {
    onext[oprev[j]] = j;
    oprev[onext[j]] = j;
  };
  // Identical optional ops are interchangeable; only ever linearize the
  // earliest-invoked remaining one of a group (symmetry reduction).
  const twinPrev = new Int32Array(nOpt).fill(-1);
  {
    const last = new Map<string, number>();
    opt.forEach((o, j) => {
      const sig = `${o.code},${o.a},${o.b}`;
      const t = last.get(sig);
      if (t !== undefined) twinPrev[j] = t;
      last.set(sig, j);
    });
  }

  // ---- Linearized set: required-op bitset (windowed) + optional-op bitset ----
  const reqWords = new Int32Array(Math.max(1, (nReq + 31) >>> 5));
  const optWords = new Int32Array(Math.max(1, (nOpt + 31) >>> 5));
  let lowWord = 0; // invariant: all words below are full (-1)
  let highWord = -1; // invariant: all words above are zero
  const setBit = (o: PrepOp) => {
    const w = o.slot >>> 5;
    const m = 1 << (o.slot & 31);
    if (o.optional) optWords[w] |= m;
    else {
      reqWords[w] |= m;
      if (w > highWord) highWord = w;
    }
  };
  const clearBit = (o: PrepOp) => {
    const w = o.slot >>> 5;
    const m = 1 << (o.slot & 31);
    if (o.optional) optWords[w] &= ~m;
    else {
      reqWords[w] &= ~m;
      if (w < lowWord) lowWord = w;
    }
  };
  const optLinearized = (j: number) => (optWords[j >>> 5] & (1 << (j & 31))) !== 0;
  /** Canonical key of (required set, register value). */
  const reqKey = (state: number): string => {
    while (lowWord < reqWords.length && reqWords[lowWord] === -1) lowWord++;
    while (highWord >= lowWord && reqWords[highWord] === 0) highWord--;
    let s = state + "|" + lowWord;
    for (let w = lowWord; w <= highWord; w++) s += "," + reqWords[w];
    return s;
  };

  // ---- Memo of visited configurations ----
  // Without optional ops: a set of (required set, register) keys. With them,
  // a configuration that linearized a subset of the optional ops of another
  // (same required set, register value and fresh-flag) dominates it: it can still do
  // everything the other can. So per key we keep an antichain of
  // optional-op bitsets and prune configurations whose optional set is a
  // superset of a stored one.
  const seen = new Set<string>();
  const seenOpt = new Map<string, Int32Array[]>();
  let explored = 0;
  /**
   * Records a configuration; false if it was already covered. freshFrom is
   * the register value before the last op if that op was an optional write,
   * else -1 (see step()).
   */
  const visit = (state: number, freshFrom: number): boolean => {
    const k = (freshFrom >= 0 ? freshFrom + "*" : "") + reqKey(state);
    if (nOpt === 0) {
      if (seen.has(k)) return false;
      seen.add(k);
      explored++;
      return true;
    }
    let list = seenOpt.get(k);
    if (list) {
      for (const s of list) {
        let subset = true;
        for (let w = 0; w < s.length; w++) {
          if ((s[w] & ~optWords[w]) !== 0) {
            subset = false;
            break;
          }
        }
        if (subset) return false;
      }
      // Drop stored sets the new one dominates (its supersets).
      list = list.filter((s) => {
        for (let w = 0; w < s.length; w++) if ((optWords[w] & ~s[w]) !== 0) return true;
        return false;
      });
    } else list = [];
    list.push(optWords.slice());
    seenOpt.set(k, list);
    explored++;
    return true;
  };

  // Unlinearized ops that can tell register values apart: readers[v] counts
  // gets returning v and successful cas ops expecting v; failReaders[x] counts
  // failed cas ops expecting x. An optional write is only worth trying when
  // some remaining op could observe it (see step()).
  const readers = new Int32Array(names.length);
  const failReaders = new Int32Array(names.length);
  const countObserver = (op: PrepOp, d: number) => {
    if (op.code === K_GET || op.code === K_CAS_OK) readers[op.a] += d;
    else if (op.code === K_CAS_FAIL) failReaders[op.a] += d;
  };
  for (const o of ops) countObserver(o, 1);

  // ---- Search ----
  // Stack entries: required op as its call node (> 0), optional op j as ~j (< 0).
  const stackOp: number[] = [];
  const stackState: number[] = [];
  const stackBlock: number[] = []; // for optional ops: the blocking return node at push time
  const opOfEntry = (e: number): PrepOp => (e > 0 ? req[(e - 1) >> 1] : opt[~e]);
  let state = intern(initial);

  // Deepest stuck point, for error reporting.
  let bestDepth = -1;
  let bestBlocker: PrepOp | null = null;
  let bestPending: PrepOp[] = [];
  let bestLinearized: PrepOp[] = [];
  let bestState = 0;
  const recordStuck = (retNode: number) => {
    if (stackOp.length <= bestDepth) return;
    bestDepth = stackOp.length;
    bestBlocker = req[(retNode - 1) >> 1];
    bestState = state;
    bestPending = [];
    for (let e = next[HEAD]; e !== retNode; e = next[e]) if (e & 1) bestPending.push(req[(e - 1) >> 1]);
    bestPending.push(bestBlocker);
    bestLinearized = stackOp.map(opOfEntry);
  };

  /** Register value after op takes effect in register value `st`, or -1 if it cannot. */
  const apply = (op: PrepOp, st: number): number => {
    switch (op.code) {
      case K_PUT:
        return op.a;
      case K_GET:
        return st === op.a ? st : -1;
      case K_CAS_OK:
        return st === op.a ? op.b : -1;
      default:
        return st !== op.a ? st : -1;
    }
  };
  /**
   * Try to linearize op now; returns the new register value or -1.
   *
   * Pruning of optional writes: if an optional write w (taking the register
   * from p to the current value) was linearized last, the next op must be one
   * that is valid now but would NOT be valid in p. Otherwise w could be moved
   * after that op (or dropped, if that op is a put), which yields an
   * equivalent or dominating path. So every linearization has a normal form
   * in which each optional write is immediately "observed". The previous value
   * p is part of the memo key.
   */
  const step = (op: PrepOp, fresh: boolean, p: number): number => {
    const ns = apply(op, state);
    if (ns < 0 || !fresh) return ns;
    return apply(op, p) < 0 ? ns : -1;
  };

  const MAIN = 0;
  const OPT = 1;
  let phase = MAIN;
  let entry = next[HEAD]; // cursor in the required-op list (MAIN phase)
  let ocur = onext[OHEAD]; // cursor in the optional-op list (OPT phase)
  let block = -1; // OPT phase: first return node in the required list
  let limitHit = false;
  let success = false;

  search: for (;;) {
    const fresh = stackOp.length > 0 && stackOp[stackOp.length - 1] < 0;
    const prevState = fresh ? stackState[stackState.length - 1] : -1;
    if (phase === MAIN) {
      if (entry === TAIL) {
        success = true; // no return events left: every required op is linearized
        break;
      }
      if (entry & 1) {
        const op = req[(entry - 1) >> 1];
        const ns = step(op, fresh, prevState);
        if (ns >= 0) {
          if (explored >= maxStates) {
            limitHit = true;
            break;
          }
          setBit(op);
          if (visit(ns, -1)) {
            countObserver(op, -1);
            stackOp.push(entry);
            stackState.push(state);
            stackBlock.push(-1);
            state = ns;
            lift(entry);
            entry = next[HEAD];
            continue;
          }
          clearBit(op);
        }
        entry = next[entry];
        continue;
      }
      // First return event: that op cannot be postponed past here. Before
      // backtracking, try the optional ops invoked by then.
      phase = OPT;
      block = entry;
      ocur = onext[OHEAD];
    }

    // OPT phase.
    const limit = req[(block - 1) >> 1].complete;
    while (ocur !== OTAIL && opt[ocur].invoke <= limit) {
      const j = ocur;
      ocur = onext[j];
      if (twinPrev[j] >= 0 && !optLinearized(twinPrev[j])) continue;
      const op = opt[j];
      const ns = step(op, fresh, prevState);
      if (ns < 0 || ns === state) continue; // a write of the current value changes nothing
      // The next op must observe this write (see step()): something reading
      // the new value, or a failed cas that the old value would satisfy.
      if (readers[ns] === 0 && failReaders[state] === 0) continue;
      if (explored >= maxStates) {
        limitHit = true;
        break search;
      }
      setBit(op);
      if (visit(ns, state)) {
        countObserver(op, -1);
        stackOp.push(~j);
        stackState.push(state);
        stackBlock.push(block);
        state = ns;
        optLift(j);
        phase = MAIN;
        entry = next[HEAD];
        continue search;
      }
      clearBit(op);
    }

    // Dead end: backtrack.
    recordStuck(block);
    if (stackOp.length === 0) break;
    const top = stackOp.pop() as number;
    state = stackState.pop() as number;
    const blk = stackBlock.pop() as number;
    const topOp = opOfEntry(top);
    clearBit(topOp);
    countObserver(topOp, 1);
    if (top > 0) {
      unlift(top);
      phase = MAIN;
      entry = next[top];
    } else {
      optUnlift(~top);
      phase = OPT;
      block = blk;
      ocur = onext[~top];
    }
  }
  if (success) return { ok: true };

  // ---- Failure report ----
  const windowOps = buildWindow(bestPending, bestLinearized, bestState).map((o) => o.src);
  const listing = windowOps.map((o) => "  " + describeOp(o)).join("\n");
  if (limitHit) {
    return {
      ok: false,
      key,
      message:
        `${SEARCH_LIMIT_PREFIX}: gave up on key ${JSON.stringify(key)} after exploring ${explored} states ` +
        `(maxStates=${maxStates}); linearizability undecided. Deepest progress: ${Math.max(bestDepth, 0)}/${n} ops.` +
        (listing ? `\nOps near the deepest point reached:\n${listing}` : ""),
      ops: windowOps,
    };
  }
  return {
    ok: false,
    key,
    message:
      `not linearizable: key ${JSON.stringify(key)}: after linearizing ${bestDepth} of ${n} ops ` +
      `(register = ${describeValue(names[bestState])}), no pending op can take effect before ` +
      `${describeOp((bestBlocker as PrepOp | null)!.src)} must have completed.\nOps involved:\n${listing}`,
    ops: windowOps,
  };
}

/**
 * The ops around the stuck point: the pending required ops that could have
 * gone next, the linearized ops overlapping them in time, and the last
 * linearized op that set the register to its value at that point.
 */
function buildWindow(pending: PrepOp[], linearized: PrepOp[], state: number): PrepOp[] {
  if (pending.length === 0) return [];
  let from = Infinity;
  for (const o of pending) from = Math.min(from, o.invoke);
  const out = new Set<PrepOp>(pending);
  for (const o of linearized) if (o.complete >= from) out.add(o);
  for (let j = linearized.length - 1; j >= 0; j--) {
    const o = linearized[j];
    if ((o.code === K_PUT && o.a === state) || (o.code === K_CAS_OK && o.b === state)) {
      out.add(o);
      break;
    }
  }
  return [...out].sort((x, y) => x.invoke - y.invoke);
}
