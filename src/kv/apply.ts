// The apply layer: what each LogCommand does to the keys, leases and sessions. Deterministic: the
// same commands in the same order give the same state and results on every node.

import { MAX_RESULT_BYTES, RESULT_KEY_OVERHEAD_BYTES } from "./codec";
import { KvError, type KvErrorCode } from "./errors";
import type { LeaseTable } from "./leases";
import { bytesToKey } from "./bytes";
import { inSpan, spanOf, type Mvcc } from "./mvcc";
import type { SessionTable } from "./sessions";
import type { ApplyMeta, ApplyResult, Command, CommandResult, TxnCommand, TxnOpResult } from "./types";

function ok(result: CommandResult): ApplyResult {
  return { ok: true, result };
}

function fail(code: KvErrorCode, message: string): ApplyResult {
  return { ok: false, error: { code, message } };
}

export function failWith(error: unknown): ApplyResult {
  if (error instanceof KvError) return fail(error.code, error.message);
  return fail("INTERNAL", `internal error: ${error instanceof Error ? error.message : String(error)}`);
}

export class Applier {
  constructor(
    private readonly mvcc: Mvcc,
    private readonly leases: LeaseTable,
    private readonly sessions: SessionTable,
  ) {}

  /**
   * Apply a validated command of log entry `index` with its (validated) session and clock data.
   * Never throws.
   */
  apply(index: number, cmd: Command, meta: ApplyMeta | undefined): ApplyResult {
    this.mvcc.discardEvents();
    let result: ApplyResult;
    try {
      if (meta !== undefined) this.sessions.advanceClock(meta.now);
      const clientId = meta?.clientId;
      const seq = meta?.seq;
      if (clientId !== undefined && seq !== undefined) {
        const session = this.sessions.get(clientId);
        if (session === undefined) {
          // Maybe a retry of a write applied before the session expired: executing it again could
          // apply it twice, so it is refused and the caller learns that its outcome is unknown.
          return fail(
            "SESSION_EXPIRED",
            `session ${clientId} is not registered or has expired (sessions idle over ${this.sessions.ttlMs} ms are ` +
              "forgotten); the request was not executed. Register a new session; if this request was a retry, " +
              "its earlier attempt may or may not have been applied",
          );
        }
        if (seq <= session.seq) {
          this.sessions.touch(clientId, session);
          if (seq === session.seq) return session.result!;
          return fail(
            "STALE_SEQUENCE",
            `client ${clientId} sent sequence ${seq}, but sequence ${session.seq} was already applied`,
          );
        }
        result = this.execute(index, cmd);
        this.sessions.record(clientId, seq, result);
      } else {
        result = this.execute(index, cmd);
      }
    } catch (error) {
      this.mvcc.discardEvents();
      return failWith(error);
    }
    this.mvcc.flushEvents();
    return result;
  }

  private execute(index: number, cmd: Command): ApplyResult {
    const mvcc = this.mvcc;
    switch (cmd.op) {
      case "put": {
        const lease = cmd.lease ?? 0;
        if (lease !== 0 && !this.leases.has(lease)) {
          return fail("LEASE_NOT_FOUND", `lease ${lease} does not exist`);
        }
        const revision = mvcc.revision + 1;
        const prev = mvcc.putKey(cmd.key, cmd.value, lease, revision);
        mvcc.revision = revision;
        return ok(prev === undefined ? { op: "put", revision } : { op: "put", revision, prev });
      }
      case "del": {
        const deleted = mvcc.deleteSpan(spanOf(cmd), mvcc.revision + 1);
        if (deleted > 0) mvcc.revision++;
        return ok({ op: "del", revision: mvcc.revision, deleted });
      }
      case "txn":
        return this.executeTxn(cmd);
      case "leaseGrant": {
        const lease = this.leases.grant(cmd.id, cmd.ttlMs, cmd.now);
        if (lease === null) return fail("LEASE_EXISTS", `lease ${cmd.id} already exists`);
        return ok({ op: "leaseGrant", id: lease.id, ttlMs: lease.ttlMs, expiresAt: lease.expiresAt });
      }
      case "leaseKeepAlive": {
        const lease = this.leases.get(cmd.id);
        if (lease === undefined) return fail("LEASE_NOT_FOUND", `lease ${cmd.id} does not exist`);
        lease.expiresAt = cmd.now + lease.ttlMs;
        return ok({ op: "leaseKeepAlive", id: lease.id, ttlMs: lease.ttlMs, expiresAt: lease.expiresAt });
      }
      case "leaseRevoke": {
        const lease = this.leases.get(cmd.id);
        if (lease === undefined) return fail("LEASE_NOT_FOUND", `lease ${cmd.id} does not exist`);
        const deleted = mvcc.deleteKeys(this.leases.remove(lease), mvcc.revision + 1);
        if (deleted > 0) mvcc.revision++;
        return ok({ op: "leaseRevoke", revision: mvcc.revision, deleted });
      }
      case "leaseExpire": {
        const revision = mvcc.revision + 1;
        const expired: number[] = [];
        let deleted = 0;
        for (const id of cmd.ids) {
          const lease = this.leases.get(id);
          if (lease === undefined || lease.expiresAt > cmd.now) continue;
          deleted += mvcc.deleteKeys(this.leases.remove(lease), revision);
          expired.push(id);
        }
        if (deleted > 0) mvcc.revision = revision;
        return ok({ op: "leaseExpire", revision: mvcc.revision, expired, deleted });
      }
      case "leaseRefreshAll": {
        this.leases.refreshAll(cmd.now);
        return ok({ op: "leaseRefreshAll", leases: this.leases.size });
      }
      case "sessionRegister": {
        const sessionId = `s${index}`;
        this.sessions.register(sessionId);
        return ok({ op: "sessionRegister", sessionId, ttlMs: this.sessions.ttlMs });
      }
      case "sessionTtl":
        this.sessions.setTtl(cmd.ttlMs);
        return ok({ op: "sessionTtl", ttlMs: cmd.ttlMs });
      case "compact":
        mvcc.compact(cmd.revision);
        return ok({ op: "compact", compacted: cmd.revision, revision: mvcc.revision });
    }
  }

  private executeTxn(cmd: TxnCommand): ApplyResult {
    const mvcc = this.mvcc;
    const succeeded = cmd.compare.every((c) => mvcc.evaluate(c));
    const ops = succeeded ? cmd.success : cmd.failure;
    const branch = succeeded ? "success" : "failure";
    // Check everything that can fail before changing anything: a transaction is all or nothing.
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      if (op.op === "put" && op.lease !== undefined && op.lease !== 0 && !this.leases.has(op.lease)) {
        return fail("LEASE_NOT_FOUND", `${branch}[${i}].lease ${op.lease} does not exist`);
      }
    }
    // A reply must fit a frame. The reads' size is bounded before anything is written: each read as
    // the state is now, plus every key and value the branch puts into its range before it (an upper
    // bound, the same on every node).
    let resultBytes = 0;
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      if (op.op === "range" && !op.countOnly) {
        const span = spanOf(op);
        let putBytes = 0;
        for (let j = 0; j < i; j++) {
          const earlier = ops[j]!;
          if (earlier.op === "put" && inSpan(bytesToKey(earlier.key), span)) {
            putBytes += earlier.key.length + earlier.value.length + RESULT_KEY_OVERHEAD_BYTES;
          }
        }
        resultBytes += mvcc.rangeBytes(op, MAX_RESULT_BYTES) + putBytes;
        if (resultBytes > MAX_RESULT_BYTES) {
          return fail(
            "RESULT_TOO_LARGE",
            `the reads of this transaction's ${branch} branch would return over ${MAX_RESULT_BYTES} bytes; ` +
              "nothing was written. Read large ranges outside a transaction (get pages them), or narrow them with a limit",
          );
        }
      }
    }
    const revision = mvcc.revision + 1;
    let changed = false;
    const results: TxnOpResult[] = [];
    for (const op of ops) {
      switch (op.op) {
        case "put":
          // The replaced value is not returned: the reply stays within the size checked above.
          mvcc.putKey(op.key, op.value, op.lease ?? 0, revision);
          changed = true;
          results.push({ op: "put", revision });
          break;
        case "del": {
          const deleted = mvcc.deleteSpan(spanOf(op), revision);
          if (deleted > 0) changed = true;
          results.push({ op: "del", revision, deleted });
          break;
        }
        case "range":
          results.push(mvcc.rangeOf(op, true));
          break;
      }
    }
    if (changed) mvcc.revision = revision;
    for (const result of results) result.revision = mvcc.revision;
    return ok({ op: "txn", succeeded, revision: mvcc.revision, results });
  }
}
