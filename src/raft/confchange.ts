// Membership: the configuration of a cluster, one-server-at-a-time changes to it, and how a
// configuration travels in a log entry (Entry.type ENTRY_CONFIG, data = the whole new configuration).
// The rules (Raft thesis, chapter 4): a server uses the latest configuration in its log, committed or
// not; a leader appends a change only when no other is pending; a change adds or removes one voter.

import { ENTRY_CONFIG, type ClusterConfig, type Entry, type NodeId } from "./types";

/** Most members a configuration may hold (voters and learners). */
export const MAX_MEMBERS = 64;
/** Longest per-member context (the runtime keeps the member's address there). */
export const MAX_CONTEXT_CHARS = 512;

export type ConfChange =
  /** Add a member that replicates but neither votes nor counts toward a majority. */
  /** `knownContext`: contexts of existing members that the configuration does not hold yet (bootstrap members' addresses). */
  | { op: "addLearner"; id: NodeId; context?: string; knownContext?: Record<string, string> }
  /** Make a learner a voter. */
  | { op: "promote"; id: NodeId }
  /** Remove a voter or a learner. */
  | { op: "remove"; id: NodeId };

export function isVoter(cfg: ClusterConfig, id: NodeId): boolean {
  return cfg.voters.includes(id);
}

export function isMember(cfg: ClusterConfig, id: NodeId): boolean {
  return cfg.voters.includes(id) || cfg.learners.includes(id);
}

/** Every member, voters first. */
export function members(cfg: ClusterConfig): NodeId[] {
  return [...cfg.voters, ...cfg.learners];
}

export function describeChange(ch: ConfChange): string {
  return ch.op === "addLearner" ? `add node ${ch.id} as a learner` : ch.op === "promote" ? `promote node ${ch.id} to voter` : `remove node ${ch.id}`;
}

/** The configuration after `ch`, or a message saying why the change is refused. */
export function applyConfChange(cfg: ClusterConfig, ch: ConfChange): ClusterConfig | string {
  if (!Number.isSafeInteger(ch.id) || ch.id < 0) return `bad node id ${String(ch.id)}`;
  const sorted = (ids: NodeId[]) => [...ids].sort((a, b) => a - b);
  const context = { ...(cfg.context ?? {}) };
  switch (ch.op) {
    case "addLearner": {
      if (isMember(cfg, ch.id)) return `node ${ch.id} is already a ${isVoter(cfg, ch.id) ? "voter" : "learner"}`;
      if (cfg.voters.length + cfg.learners.length >= MAX_MEMBERS) return `the cluster already has ${MAX_MEMBERS} members (the limit)`;
      if (ch.context !== undefined) {
        if (typeof ch.context !== "string" || ch.context.length > MAX_CONTEXT_CHARS) return `context of node ${ch.id} is longer than ${MAX_CONTEXT_CHARS} characters`;
        context[ch.id] = ch.context;
      }
      for (const [id, c] of Object.entries(ch.knownContext ?? {})) {
        if (isMember(cfg, Number(id)) && context[id] === undefined && typeof c === "string" && c.length <= MAX_CONTEXT_CHARS) context[id] = c;
      }
      return { voters: cfg.voters, learners: sorted([...cfg.learners, ch.id]), context };
    }
    case "promote":
      if (isVoter(cfg, ch.id)) return `node ${ch.id} is already a voter`;
      if (!cfg.learners.includes(ch.id)) return `node ${ch.id} is not a member; add it as a learner first`;
      return { voters: sorted([...cfg.voters, ch.id]), learners: cfg.learners.filter((l) => l !== ch.id), context };
    case "remove":
      if (!isMember(cfg, ch.id)) return `node ${ch.id} is not a member`;
      if (cfg.voters.length === 1 && cfg.voters[0] === ch.id) return `node ${ch.id} is the last voter; a cluster cannot remove it`;
      delete context[ch.id];
      return { voters: cfg.voters.filter((v) => v !== ch.id), learners: cfg.learners.filter((l) => l !== ch.id), context };
    default:
      return `unknown configuration change ${JSON.stringify((ch as { op?: unknown }).op)}`;
  }
}

export function encodeConfig(cfg: ClusterConfig): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ voters: cfg.voters, learners: cfg.learners, context: cfg.context ?? {} }));
}

/** Check a configuration received from a peer or read from disk; returns it, or what is wrong. */
export function checkConfig(x: unknown): ClusterConfig | string {
  if (!x || typeof x !== "object") return "configuration is not an object";
  const c = x as Record<string, unknown>;
  const ids = (v: unknown) => Array.isArray(v) && v.length <= MAX_MEMBERS && v.every((id) => Number.isSafeInteger(id) && (id as number) >= 0);
  if (!ids(c.voters) || !ids(c.learners)) return "configuration voters/learners are not lists of node ids";
  const all = [...(c.voters as number[]), ...(c.learners as number[])];
  if (new Set(all).size !== all.length) return "configuration lists a node twice";
  const context = c.context ?? {};
  if (typeof context !== "object" || context === null || Object.values(context).some((v) => typeof v !== "string" || v.length > MAX_CONTEXT_CHARS)) {
    return "configuration context is not a map of short strings";
  }
  return { voters: c.voters as number[], learners: c.learners as number[], context: context as Record<string, string> };
}

/** Decode the data of a configuration entry; returns the configuration or what is wrong with it. */
export function decodeConfig(data: Uint8Array): ClusterConfig | string {
  let x: unknown;
  try {
    x = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch {
    return "configuration entry is not JSON";
  }
  return checkConfig(x);
}

/** The configuration an entry sets, or null for an ordinary entry. Throws on a malformed one. */
export function configOf(e: Entry): ClusterConfig | null {
  if (e.type !== ENTRY_CONFIG) return null;
  const cfg = decodeConfig(e.data);
  if (typeof cfg === "string") throw new Error(`entry ${e.index}: ${cfg}`);
  return cfg;
}
