// TTL leases (etcd's lease/): each lease has a TTL, an expiry time and the keys attached to it. Times
// come inside commands (the proposing leader's clock), so every node decides the same.

import { keyToBytes } from "./bytes";
import { MAX_LEASES_PER_EXPIRE } from "./codec";
import type { LeaseInfo } from "./types";
import type { LeaseOwnership } from "./mvcc";

export interface Lease {
  readonly id: number;
  readonly ttlMs: number;
  expiresAt: number;
  readonly keys: Set<string>;
}

export class LeaseTable implements LeaseOwnership {
  leases = new Map<number, Lease>();
  nextLeaseId = 1;

  get size(): number {
    return this.leases.size;
  }

  get(id: number): Lease | undefined {
    return this.leases.get(id);
  }

  has(id: number): boolean {
    return this.leases.has(id);
  }

  /** Create a lease; `id` 0 picks the next free id. Returns null if the id is taken. */
  grant(id: number, ttlMs: number, now: number): Lease | null {
    const leaseId = id === 0 ? this.nextLeaseId : id;
    if (this.leases.has(leaseId)) return null;
    const lease: Lease = { id: leaseId, ttlMs, expiresAt: now + ttlMs, keys: new Set() };
    this.leases.set(leaseId, lease);
    if (leaseId >= this.nextLeaseId) this.nextLeaseId = leaseId + 1;
    return lease;
  }

  /** Forget a lease; returns its keys in key order (the caller deletes them). */
  remove(lease: Lease): string[] {
    this.leases.delete(lease.id);
    return [...lease.keys].sort();
  }

  refreshAll(now: number): void {
    for (const lease of this.leases.values()) lease.expiresAt = now + lease.ttlMs;
  }

  attach(lease: number, key: string): void {
    if (lease !== 0) this.leases.get(lease)?.keys.add(key);
  }

  detach(lease: number, key: string): void {
    if (lease !== 0) this.leases.get(lease)?.keys.delete(key);
  }

  info(id: number): LeaseInfo | null {
    const lease = this.leases.get(id);
    if (lease === undefined) return null;
    const keys = [...lease.keys].sort().map(keyToBytes);
    return { id: lease.id, ttlMs: lease.ttlMs, expiresAt: lease.expiresAt, keys };
  }

  /** Every lease (without its keys), by id. */
  list(): { id: number; ttlMs: number; expiresAt: number; keys: number }[] {
    return this.sorted().map((l) => ({ id: l.id, ttlMs: l.ttlMs, expiresAt: l.expiresAt, keys: l.keys.size }));
  }

  /** Ids (ascending) of leases with expiresAt <= now. */
  expired(now: number, limit: number = MAX_LEASES_PER_EXPIRE): number[] {
    const ids: number[] = [];
    for (const lease of this.leases.values()) if (lease.expiresAt <= now) ids.push(lease.id);
    ids.sort((a, b) => a - b);
    return ids.length > limit ? ids.slice(0, limit) : ids;
  }

  /** Leases in id order, for snapshots. */
  sorted(): Lease[] {
    return [...this.leases.values()].sort((a, b) => a.id - b.id);
  }

  load(leases: Map<number, Lease>, nextLeaseId: number): void {
    this.leases = leases;
    this.nextLeaseId = nextLeaseId;
  }
}
