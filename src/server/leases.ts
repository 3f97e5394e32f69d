// Lease expiry on the leader, and the time stamped into log commands. Lease commands carry the leader's
// clock; the leader checks for expired leases every LEASE_CHECK_MS and proposes one leaseExpire through
// the log. A new leader first proposes leaseRefreshAll(now) (leases were timed by the previous leader's
// clock) and expires nothing until that is applied.
//
// The clock is the log's own, never the wall clock: when a node becomes leader it takes the largest time
// stamped into the log so far (KvStore.logClock) and carries it on with its monotonic clock. A wall-clock
// step (NTP, an operator, a VM resumed) changes no lease and no session expiry.

import { encodeLogCommand, extendAllLeasesCommand, leaseExpireCommand } from "../kv/codec";
import type { Logger } from "./log";
import type { Clock, NodeRuntime } from "./runtime";

/** How often a leader looks for expired leases. */
export const LEASE_CHECK_MS = 100;

export class LeaseKeeper {
  /** Log time when this node last became leader, and its monotonic clock then. */
  private base = 0;
  private baseAt = 0;
  /** Leader only: index of this term's lease refresh; lease expiry waits until it is applied. */
  private refreshIndex = 0;
  /** Leader only: index of a proposed lease expiry not yet applied. */
  private expireIndex = 0;

  constructor(
    private readonly runtime: NodeRuntime,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {
    runtime.onBecameLeader.push(() => this.becameLeader());
  }

  /** The time to stamp into a log command (leader only): the log's clock, carried on monotonically. */
  now(): number {
    return this.base + (this.clock.now() - this.baseAt);
  }

  private becameLeader(): void {
    this.base = this.runtime.kv.logClock;
    this.baseAt = this.clock.now();
    // Give every lease a full TTL from now, so a leader change never expires a lease early.
    this.expireIndex = 0;
    const now = this.now();
    this.refreshIndex = this.runtime.propose(encodeLogCommand({ cmd: extendAllLeasesCommand(now), now }))?.index ?? 0;
  }

  /** Propose the expiry of leases past their TTL (leader only, called every LEASE_CHECK_MS). */
  expire(): void {
    const rt = this.runtime;
    if (rt.role !== "leader" || rt.isStopped) return;
    const applied = rt.applied;
    if (this.refreshIndex === 0 || applied < this.refreshIndex || applied < this.expireIndex) return;
    const now = this.now();
    const ids = rt.kv.expiredLeases(now);
    if (!ids.length) return;
    const at = rt.propose(encodeLogCommand({ cmd: leaseExpireCommand(ids, now), now }));
    if (at) {
      this.expireIndex = at.index;
      this.log.info("expiring leases", { ids: ids.length <= 10 ? ids : `${ids.length} leases` });
    }
  }
}
