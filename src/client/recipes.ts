// Locks and leader election built from leases, revisions and watches (as in etcd's concurrency
// package and ZooKeeper's recipes): each contender creates a key under a shared prefix, attached to its
// own lease; the contender whose key has the lowest create revision holds the lock. Everyone else
// watches only the key just ahead of its own, so a release wakes exactly one waiter.

import type { KeyValue } from "../kv/types";
import { RaftKvError } from "./errors";
import { toBytes, toText, type RaftKvClient } from "./client";

export interface Held {
  /** The contender's key (under the prefix) and its lease. */
  key: string;
  leaseId: number;
  /**
   * The key's create revision: it grows with every new holder, so it serves as a fencing token (a
   * resource that remembers the highest token it has seen can refuse a holder that lost the lock).
   */
  revision: number;
  /** Resolves (with a reason) if the lease is lost: the lock is then no longer held. */
  lost: Promise<string>;
  /** Release: revoke the lease, which deletes the key. */
  release(): Promise<void>;
}

export interface ContendOptions {
  ttlMs?: number;
  value?: string;
  /** Called once while waiting, with the key of the current holder. */
  onWait?: (holder: KeyValue) => void;
  signal?: AbortSignal;
}

/** Keep a lease alive every ttl/3 until stopped; resolves `lost` if it cannot. */
function keepAlive(client: RaftKvClient, leaseId: number, ttlMs: number): { lost: Promise<string>; stop: () => void } {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let resolveLost!: (why: string) => void;
  const lost = new Promise<string>((r) => (resolveLost = r));
  const beat = async () => {
    if (stopped) return;
    try {
      await client.leaseKeepAlive(leaseId);
    } catch (err) {
      if (!stopped) {
        stopped = true;
        resolveLost(`lease ${leaseId} could not be renewed: ${(err as Error).message}`);
      }
      return;
    }
    if (!stopped) timer = setTimeout(beat, Math.max(50, ttlMs / 3));
  };
  timer = setTimeout(beat, Math.max(50, ttlMs / 3));
  return {
    lost,
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** Wait until this contender's key is the oldest under `prefix`. */
export async function contend(client: RaftKvClient, prefix: string, opts: ContendOptions = {}): Promise<Held> {
  const ttlMs = opts.ttlMs ?? 10_000;
  const lease = await client.leaseGrant(ttlMs);
  const ka = keepAlive(client, lease.id, ttlMs);
  const key = `${prefix}${lease.id.toString(16).padStart(12, "0")}`;
  const release = async () => {
    ka.stop();
    try {
      await client.leaseRevoke(lease.id);
    } catch (err) {
      if (!(err instanceof RaftKvError && err.code === "LEASE_NOT_FOUND")) throw err;
    }
  };
  try {
    await client.put(key, opts.value ?? "", { lease: lease.id });
    let told = false;
    for (;;) {
      if (opts.signal?.aborted) throw new RaftKvError("CANCELLED", "cancelled while waiting");
      const all = await client.range({ key: toBytes(prefix), prefix: true });
      const mine = all.kvs.find((kv) => toText(kv.key) === key);
      if (!mine) throw new RaftKvError("LEASE_NOT_FOUND", `lease ${lease.id} expired while waiting`);
      const ahead = all.kvs.filter((kv) => kv.createRevision < mine.createRevision).sort((a, b) => b.createRevision - a.createRevision);
      if (!ahead.length) return { key, leaseId: lease.id, revision: mine.createRevision, lost: ka.lost, release };
      const predecessor = ahead[0]!;
      if (!told) {
        opts.onWait?.(ahead[ahead.length - 1]!);
        told = true;
      }
      // Wait for the key just ahead of ours to go; watch from the revision we read at, so a delete that
      // lands in between is not missed.
      const w = client.watch(predecessor.key, { fromRevision: all.revision + 1 });
      const onAbort = () => w.close();
      opts.signal?.addEventListener("abort", onAbort);
      try {
        const gone = Promise.race([
          (async () => {
            for await (const ev of w) if (ev.type === "delete") return;
          })(),
          ka.lost.then((why) => {
            throw new RaftKvError("LEASE_NOT_FOUND", why);
          }),
        ]);
        await gone;
      } finally {
        opts.signal?.removeEventListener("abort", onAbort);
        w.close();
      }
    }
  } catch (err) {
    await release().catch(() => {});
    throw err;
  }
}

/** The current holder under `prefix` (oldest key), or null. */
export async function holder(client: RaftKvClient, prefix: string): Promise<KeyValue | null> {
  const all = await client.range({ key: toBytes(prefix), prefix: true });
  let best: KeyValue | null = null;
  for (const kv of all.kvs) if (!best || kv.createRevision < best.createRevision) best = kv;
  return best;
}

export const lockPrefix = (name: string) => `__lock/${name}/`;
export const electionPrefix = (name: string) => `__elect/${name}/`;
