// Membership at the runtime's edges: the configuration stored with a snapshot (in its file and on the
// wire), and members' addresses, which travel in the configuration (ClusterConfig.context).

import { formatAddr, parseEndpoint, type NodeAddr } from "../config";
import { checkConfig, isMember, members, type ConfChange } from "../raft/confchange";
import type { ClusterConfig, Snapshot } from "../raft/types";
import type { ErrorCode, MemberInfo, MemberList } from "../protocol";
import type { NodeRuntime } from "./runtime";

/** Snapshot bytes that start with this carry the configuration ahead of the state machine's bytes. */
const CONFIG_MAGIC = new TextEncoder().encode("RKVCONF1");

/** The snapshot's bytes as stored and sent: the configuration (if any), then the state machine. */
export function wrapSnapshotData(snap: Snapshot): Uint8Array {
  if (!snap.config) return snap.data;
  const json = new TextEncoder().encode(JSON.stringify(snap.config));
  const out = new Uint8Array(CONFIG_MAGIC.length + 4 + json.length + snap.data.length);
  out.set(CONFIG_MAGIC, 0);
  new DataView(out.buffer).setUint32(CONFIG_MAGIC.length, json.length);
  out.set(json, CONFIG_MAGIC.length + 4);
  out.set(snap.data, CONFIG_MAGIC.length + 4 + json.length);
  return out;
}

/** Undo wrapSnapshotData: the state machine's bytes and the configuration. Throws on a damaged header. */
export function unwrapSnapshotData(data: Uint8Array): { data: Uint8Array; config?: ClusterConfig } {
  const m = CONFIG_MAGIC;
  if (data.length < m.length + 4 || m.some((b, i) => data[i] !== b)) return { data };
  const len = new DataView(data.buffer, data.byteOffset).getUint32(m.length);
  const start = m.length + 4;
  if (start + len > data.length) throw new Error("snapshot configuration header runs past the end of the snapshot");
  let cfg: ClusterConfig | string;
  try {
    cfg = checkConfig(JSON.parse(new TextDecoder().decode(data.subarray(start, start + len))));
  } catch {
    cfg = "not JSON";
  }
  if (typeof cfg === "string") throw new Error(`snapshot configuration is damaged: ${cfg}`);
  return { data: data.subarray(start + len), config: cfg };
}

/**
 * A snapshot as the runtime hands it to storage and transport: without its configuration when that is
 * still the bootstrap one (every nodes.conf node a voter, no addresses), so a cluster that never changed
 * membership stores and sends the state machine's bytes as they are, without a copy.
 */
export function dropBootstrapConfig(snap: Snapshot, bootstrap: readonly NodeAddr[]): Snapshot {
  const c = snap.config;
  if (!c) return snap;
  const ids = bootstrap.map((n) => n.id).sort((a, b) => a - b);
  const same = c.learners.length === 0 && Object.keys(c.context ?? {}).length === 0 && c.voters.length === ids.length && c.voters.every((v, i) => v === ids[i]);
  if (!same) return snap;
  return { index: snap.index, term: snap.term, data: snap.data };
}

export function unwrapSnapshot(snap: Snapshot): Snapshot {
  const { data, config } = unwrapSnapshotData(snap.data);
  return { index: snap.index, term: snap.term, data, ...(config ? { config } : {}) };
}

/**
 * Every member's address: from the configuration's context, else from nodes.conf (the bootstrap
 * members). An empty configuration (a node joining, not yet told the configuration) keeps nodes.conf.
 */
export function memberAddrs(config: ClusterConfig, bootstrap: readonly NodeAddr[]): NodeAddr[] {
  const ids = members(config);
  if (ids.length === 0) return [...bootstrap];
  const out: NodeAddr[] = [];
  for (const id of ids) {
    const ctx = config.context?.[id];
    if (ctx !== undefined) {
      try {
        out.push({ id, ...parseEndpoint(ctx) });
        continue;
      } catch {
        // fall through to nodes.conf
      }
    }
    const known = bootstrap.find((n) => n.id === id);
    if (known) out.push(known);
  }
  return out;
}

/** Contexts (addresses) of the given nodes, to fill in what the configuration does not hold yet. */
export function addrContext(addrs: readonly NodeAddr[]): Record<string, string> {
  const ctx: Record<string, string> = {};
  for (const a of addrs) ctx[a.id] = formatAddr(a);
  return ctx;
}

// ---- client requests: member list/add/promote/remove, leader transfer ------------------------------

export interface AdminReplies {
  ok(result: unknown): void;
  fail(code: ErrorCode, message: string): void;
  notLeader(): void;
}

/** The members as the leader sees them. */
export function memberList(runtime: NodeRuntime, addrs: readonly NodeAddr[]): MemberList {
  const s = runtime.core.status();
  const addrOf = (id: number) => {
    const a = addrs.find((n) => n.id === id);
    return a ? formatAddr(a) : null;
  };
  const info = (id: number, role: "voter" | "learner"): MemberInfo => {
    const pr = s.progress?.[id];
    return {
      id,
      addr: addrOf(id),
      role,
      leader: id === s.id,
      match: id === s.id ? s.lastIndex : (pr?.match ?? null),
      lag: id === s.id ? 0 : pr ? Math.max(0, s.commitIndex - pr.match) : null,
      state: id === s.id ? "leader" : (pr?.state ?? null),
    };
  };
  return {
    leader: s.leader,
    term: s.term,
    commitIndex: s.commitIndex,
    configIndex: s.configIndex,
    members: [...s.config.voters.map((id) => info(id, "voter")), ...s.config.learners.map((id) => info(id, "learner"))],
  };
}

const isId = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;

export function handleMemberRequest(runtime: NodeRuntime, addrs: readonly NodeAddr[], req: { action?: unknown; node?: unknown; addr?: unknown }, r: AdminReplies): void {
  if (runtime.role !== "leader") return r.notLeader();
  if (req.action === "list") return r.ok(memberList(runtime, addrs));
  if (!isId(req.node)) return r.fail("BAD_REQUEST", `member ${String(req.action)}: node id must be a non-negative integer, got ${JSON.stringify(req.node)}`);
  // Retries are idempotent: a client whose first attempt committed but whose answer was lost (the
  // leader stepped down, as a removed leader does) retries, and finds the change already made.
  const cfg = runtime.core.membership.config;
  const already =
    (req.action === "remove" && !isMember(cfg, req.node)) ||
    (req.action === "promote" && cfg.voters.includes(req.node)) ||
    (req.action === "add" && cfg.learners.includes(req.node) && typeof req.addr === "string" && memberAddrs(cfg, addrs).some((a) => a.id === req.node && formatAddr(a) === req.addr));
  if (already) return r.ok(memberList(runtime, addrs));
  let ch: ConfChange;
  switch (req.action) {
    case "add": {
      if (typeof req.addr !== "string") return r.fail("BAD_REQUEST", "member add: the new node's address (host:port) is missing");
      let addr: { host: string; port: number };
      try {
        addr = parseEndpoint(req.addr);
      } catch (err) {
        return r.fail("BAD_REQUEST", `member add: ${(err as Error).message}`);
      }
      const taken = addrs.find((a) => a.host === addr.host && a.port === addr.port && a.id !== req.node);
      if (taken && isMember(runtime.core.membership.config, taken.id)) return r.fail("BAD_REQUEST", `member add: ${req.addr} is already node ${taken.id}'s address`);
      // Bootstrap members' addresses (nodes.conf) join the configuration with the first change.
      const current = memberAddrs(runtime.core.membership.config, addrs);
      ch = { op: "addLearner", id: req.node, context: formatAddr(addr), knownContext: addrContext(current) };
      break;
    }
    case "promote":
      ch = { op: "promote", id: req.node };
      break;
    case "remove":
      ch = { op: "remove", id: req.node };
      break;
    default:
      return r.fail("BAD_REQUEST", `unknown member action ${JSON.stringify(req.action)} (list, add, promote or remove)`);
  }
  const refused = runtime.proposeConfChange(ch, {
    applied: () => r.ok(memberList(runtime, addrs)),
    failed: (f) => r.fail(f.code, f.message),
  });
  if (refused) r.fail("MEMBER_CHANGE_REFUSED", refused);
}

/** How often a transfer's outcome is checked, and for how many election timeouts at most. */
const TRANSFER_POLL_MS = 5;
const TRANSFER_WAIT_ELECTIONS = 3;

/** Start a leadership transfer to `req.node`; answer once the target leads (or why it did not). */
export function handleLeaderTransfer(runtime: NodeRuntime, req: { node?: unknown }, electionMs: number, r: AdminReplies): void {
  if (runtime.role !== "leader") return r.notLeader();
  if (!isId(req.node)) return r.fail("BAD_REQUEST", `leader transfer: node id must be a non-negative integer, got ${JSON.stringify(req.node)}`);
  const target = req.node;
  const refused = runtime.transferLeadership(target);
  if (refused) return r.fail("TRANSFER_REFUSED", refused);
  const deadline = performance.now() + TRANSFER_WAIT_ELECTIONS * electionMs;
  const check = () => {
    if (runtime.leader === target) return r.ok({ leader: target, term: runtime.core.term });
    if (runtime.role === "leader" && !runtime.core.transferring) {
      return r.fail("TRANSFER_FAILED", `node ${target} did not take over within an election timeout; node ${runtime.id} leads on`);
    }
    if (performance.now() > deadline) return r.fail("TRANSFER_FAILED", `no leader seen within ${TRANSFER_WAIT_ELECTIONS * electionMs} ms after handing over to node ${target}`);
    setTimeout(check, TRANSFER_POLL_MS);
  };
  setTimeout(check, TRANSFER_POLL_MS);
}

/** The voter best placed to take over from this leader (most of the log), or null. */
export function bestTransferTarget(runtime: NodeRuntime): number | null {
  const s = runtime.core.status();
  let best: number | null = null;
  let bestMatch = -1;
  for (const id of s.config.voters) {
    const pr = s.progress?.[id];
    if (id !== s.id && pr && pr.match > bestMatch) [best, bestMatch] = [id, pr.match];
  }
  return best;
}
