// Checks that a value decoded from the network really is a Raft message before it reaches the core,
// so a confused or hostile peer can never trip an invariant assertion.

import type { Entry, Message } from "./types";

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
      break;
    }
    default:
      return `unknown message type ${JSON.stringify(m.type)}`;
  }
  return m as unknown as Message;
}
