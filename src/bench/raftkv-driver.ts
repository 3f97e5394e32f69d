// The raftkv side of the benchmark: RaftKvClient instances behind the KvDriver interface.
//
// Requests of slot i go through client i % connections. A RaftKvClient gives each write in flight a
// server session ("lane") of its own, so one client may carry many concurrent writes exactly-once.

import { RaftKvClient } from "../client/client";
import type { TlsMaterial } from "../net/tls";
import type { KvDriver } from "./runner";

export interface RaftKvDriverOptions {
  endpoints: string[];
  timeoutMs: number;
  /** Clients the slots are spread over (slot % connections). */
  connections: number;
  /** Prepended to every key (the workload's keys are "00000042"); cleanup() deletes everything under it. */
  prefix?: string;
  tls?: TlsMaterial;
}

export class RaftKvDriver implements KvDriver {
  readonly name = "raftkv";
  private readonly clients: (RaftKvClient | undefined)[] = [];

  private readonly prefix: Uint8Array;

  constructor(private readonly opts: RaftKvDriverOptions) {
    this.prefix = new TextEncoder().encode(opts.prefix ?? "");
  }

  private key(k: Uint8Array): Uint8Array {
    if (!this.prefix.length) return k;
    const out = new Uint8Array(this.prefix.length + k.length);
    out.set(this.prefix);
    out.set(k, this.prefix.length);
    return out;
  }

  /** Deletes every key under the prefix; resolves with how many. */
  async cleanup(): Promise<number> {
    if (!this.prefix.length) return 0;
    return (await this.client(0).delete(this.prefix, { prefix: true })).deleted;
  }

  private newClient(): RaftKvClient {
    return new RaftKvClient({ endpoints: this.opts.endpoints, timeoutMs: this.opts.timeoutMs, tls: this.opts.tls });
  }

  client(slot: number): RaftKvClient {
    return (this.clients[slot % this.opts.connections] ??= this.newClient());
  }

  async put(slot: number, key: Uint8Array, value: Uint8Array): Promise<void> {
    await this.client(slot).put(this.key(key), value);
  }

  async get(slot: number, key: Uint8Array, serializable: boolean): Promise<{ modRevision: number } | null> {
    const kv = await this.client(slot).get(this.key(key), { serializable });
    return kv ? { modRevision: kv.modRevision } : null;
  }

  async casPut(slot: number, key: Uint8Array, modRevision: number, value: Uint8Array): Promise<boolean> {
    const r = await this.client(slot).txn({
      compare: [{ key: this.key(key), target: "mod", result: "equal", number: modRevision }],
      success: [{ op: "put", key: this.key(key), value }],
      failure: [],
    });
    return r.succeeded;
  }

  async txnPuts(slot: number, compareKey: Uint8Array, puts: [Uint8Array, Uint8Array][]): Promise<boolean> {
    const r = await this.client(slot).txn({
      compare: [{ key: this.key(compareKey), target: "version", result: "greater", number: -1 }],
      success: puts.map(([key, value]) => ({ op: "put" as const, key: this.key(key), value })),
      failure: [],
    });
    return r.succeeded;
  }

  async close(): Promise<void> {
    for (const c of this.clients) c?.close();
    this.clients.length = 0;
  }
}
