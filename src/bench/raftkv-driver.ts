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
  tls?: TlsMaterial;
}

export class RaftKvDriver implements KvDriver {
  readonly name = "raftkv";
  private readonly clients: (RaftKvClient | undefined)[] = [];

  constructor(private readonly opts: RaftKvDriverOptions) {}

  private newClient(): RaftKvClient {
    return new RaftKvClient({ endpoints: this.opts.endpoints, timeoutMs: this.opts.timeoutMs, tls: this.opts.tls });
  }

  client(slot: number): RaftKvClient {
    return (this.clients[slot % this.opts.connections] ??= this.newClient());
  }

  async put(slot: number, key: Uint8Array, value: Uint8Array): Promise<void> {
    await this.client(slot).put(key, value);
  }

  async get(slot: number, key: Uint8Array, serializable: boolean): Promise<{ modRevision: number } | null> {
    const kv = await this.client(slot).get(key, { serializable });
    return kv ? { modRevision: kv.modRevision } : null;
  }

  async casPut(slot: number, key: Uint8Array, modRevision: number, value: Uint8Array): Promise<boolean> {
    const r = await this.client(slot).txn({
      compare: [{ key, target: "mod", result: "equal", number: modRevision }],
      success: [{ op: "put", key, value }],
      failure: [],
    });
    return r.succeeded;
  }

  async txnPuts(slot: number, compareKey: Uint8Array, puts: [Uint8Array, Uint8Array][]): Promise<boolean> {
    const r = await this.client(slot).txn({
      compare: [{ key: compareKey, target: "version", result: "greater", number: -1 }],
      success: puts.map(([key, value]) => ({ op: "put" as const, key, value })),
      failure: [],
    });
    return r.succeeded;
  }

  async close(): Promise<void> {
    for (const c of this.clients) c?.close();
    this.clients.length = 0;
  }
}
