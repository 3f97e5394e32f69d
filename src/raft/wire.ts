// Checks that a value decoded from the network really is a Raft message before it reaches the core,
// so a confused or hostile peer can never trip an invariant assertion.

import { checkConfig, decodeConfig } from "./confchange";
import { ENTRY_CONFIG, ENTRY_NORMAL, type Entry, type Message } from "./types";

const isIndex = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
const isNodeId = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
const isBytes = (x: unknown): x is Uint8Array => x instanceof Uint8Array;

function checkEntries(x: unknown, prevIndex: number): string | null {
  if (!Array.isArray(x)) return "entries is not an array";
  for (let i = 0; i < x.length; i++) {
    const e = x[i] as Partial<Entry> | null;
    if (!e || typeof e !== "object") return `entry ${i} is not an object`;
    if (!isIndex(e.index) || e.index !== prevIndex + 1 + i) return `entry ${i} has index ${String(e.index)}, expected ${prevIndex + 1 + i}`;
    if (!isIndex(e.term)) return `entry ${i} has a bad term`;
    if (!isBytes(e.data)) return `entry ${i} data is not bytes`;
    if (e.type !== undefined && e.type !== ENTRY_NORMAL && e.type !== ENTRY_CONFIG) return `entry ${i} has unknown type ${String(e.type)}`;
    if (e.type === ENTRY_CONFIG) {
      const cfg = decodeConfig(e.data);
      if (typeof cfg === "string") return `entry ${i}: ${cfg}`;
    }
  }
  return null;
}

/** Returns the message, or a string saying what is wrong with it. */
export function parseMessage(x: unknown): Message | string {
  if (!x || typeof x !== "object") return "not an object";
  const m = x as Record<string, unknown>;
  if (!isNodeId(m.from) || !isNodeId(m.to) || !isIndex(m.term)) return "bad from/to/term";
  switch (m.type) {
    case "vote":
      if (typeof m.preVote !== "boolean" || !isIndex(m.lastLogIndex) || !isIndex(m.lastLogTerm)) return "bad vote";
      if (m.transfer !== undefined && typeof m.transfer !== "boolean") return "bad vote: transfer is not a boolean";
      break;
    case "voteResp":
      if (typeof m.preVote !== "boolean" || typeof m.granted !== "boolean") return "bad voteResp";
      break;
    case "app": {
      if (!isIndex(m.prevIndex) || !isIndex(m.prevTerm) || !isIndex(m.commit) || !isIndex(m.readRound)) return "bad app";
      const bad = checkEntries(m.entries, m.prevIndex);
      if (bad) return `bad app: ${bad}`;
      for (const e of m.entries as Entry[]) if (e.term > m.term) return "bad app: entry term above message term";
      break;
    }
    case "appResp":
      if (typeof m.success !== "boolean" || !isIndex(m.matchIndex) || !isIndex(m.hintIndex) || !isIndex(m.hintTerm) || !isIndex(m.readRound)) {
        return "bad appResp";
      }
      break;
    case "snap": {
      const s = m.snapshot as Record<string, unknown> | undefined;
      if (!s || !isIndex(s.index) || !isIndex(s.term) || (s.data !== undefined && !isBytes(s.data))) return "bad snap";
      if (s.config !== undefined) {
        const cfg = checkConfig(s.config);
        if (typeof cfg === "string") return `bad snap: ${cfg}`;
      }
      break;
    }
    case "timeoutNow":
      break;
    case "hb":
    case "hbResp":
      if (!isIndex(m.readRound)) return `bad ${m.type}`;
      break;
    default:
      return `unknown message type ${JSON.stringify(m.type)}`;
  }
  return m as unknown as Message;
}

/**
 * The form an append takes on the wire: entries as [term, data] pairs ([term, data, type] for a
 * configuration entry), their indexes implied by prevIndex (they are contiguous), so no property names
 * are encoded per entry.
 */
export function toWire(m: Message): unknown {
  if (m.type !== "app" || m.entries.length === 0) return m;
  const packed: unknown[] = new Array(m.entries.length);
  for (let i = 0; i < m.entries.length; i++) {
    const e = m.entries[i]!;
    packed[i] = e.type ? [e.term, e.data, e.type] : [e.term, e.data];
  }
  return { ...m, entries: packed };
}

/** Undo toWire on a decoded value; anything malformed is left for parseMessage to refuse. */
export function fromWire(x: unknown): unknown {
  const m = x as { type?: unknown; prevIndex?: unknown; entries?: unknown };
  if (!m || m.type !== "app" || !Array.isArray(m.entries) || typeof m.prevIndex !== "number") return x;
  const entries = new Array<unknown>(m.entries.length);
  for (let i = 0; i < m.entries.length; i++) {
    const e = m.entries[i] as unknown;
    if (Array.isArray(e) && e.length === 2) entries[i] = { index: m.prevIndex + 1 + i, term: e[0], data: e[1] };
    else if (Array.isArray(e) && e.length === 3) entries[i] = { index: m.prevIndex + 1 + i, term: e[0], data: e[1], type: e[2] };
    else entries[i] = e;
  }
  return { ...m, entries };
}
