// raftkv lease grant | keepalive | revoke.

import type { CAC } from "cac";
import { toText } from "../client/client";
import { client, clientOptions, isJson, parseTtlMs, positiveInt, printJson, run, UsageError, type ClientFlags } from "./common";

export function registerLease(cli: CAC): void {
  clientOptions(cli.command("lease <action> [arg]", "Leases: grant TTL | keepalive ID | revoke ID | list | timetolive ID (keys put --lease ID vanish when it expires)"))
    .option("--once", "keepalive: renew once and exit instead of every TTL/3 until Ctrl-C")
    .example("raftkv lease grant 10s            # prints the lease id")
    .example("raftkv lease keepalive 7          # renews until Ctrl-C")
    .example("raftkv lease revoke 7             # deletes the lease and its keys")
    .example("raftkv lease list                 # every lease with its TTL and time left")
    .example("raftkv lease timetolive 7         # time left, granted TTL and keys of lease 7")
    .action((action: string, arg: string | undefined, flags: ClientFlags & { once?: boolean }) =>
      run(async () => {
        if (arg === undefined && action !== "list") throw new UsageError(`lease ${action} needs an argument; see raftkv lease --help`);
        if (arg !== undefined && action === "list") throw new UsageError("lease list takes no argument");
        const c = client(flags);
        try {
          switch (action) {
            case "grant": {
              const r = await c.leaseGrant(parseTtlMs(arg!));
              if (isJson(flags)) printJson({ id: r.id, ttlMs: r.ttlMs });
              else console.log(`lease ${r.id} granted with TTL ${r.ttlMs / 1000}s`);
              return;
            }
            case "keepalive": {
              const id = positiveInt("lease id", arg);
              let stopped = false;
              process.once("SIGINT", () => (stopped = true));
              process.once("SIGTERM", () => (stopped = true));
              for (;;) {
                const r = await c.leaseKeepAlive(id);
                if (isJson(flags)) printJson({ id: r.id, ttlMs: r.ttlMs });
                else console.log(`lease ${r.id} kept alive with TTL ${r.ttlMs / 1000}s`);
                if (flags.once) return;
                const until = Date.now() + Math.max(100, r.ttlMs / 3);
                while (!stopped && Date.now() < until) await Bun.sleep(50);
                if (stopped) return;
              }
            }
            case "revoke": {
              const r = await c.leaseRevoke(positiveInt("lease id", arg));
              if (isJson(flags)) printJson({ revoked: true, deleted: r.deleted, revision: r.revision });
              else console.log(`lease revoked; deleted ${r.deleted} key(s)`);
              return;
            }
            case "list": {
              const { leases, more } = await c.leaseList();
              if (isJson(flags)) printJson({ leases, more });
              else if (!leases.length) console.log("no leases");
              else for (const l of leases) console.log(`lease ${l.id}: TTL ${l.ttlMs / 1000}s, ${(l.remainingMs / 1000).toFixed(1)}s left, ${l.keyCount} key(s)`);
              if (more && !isJson(flags)) console.error(`(only the first ${leases.length} leases are shown)`);
              return;
            }
            case "timetolive": {
              const l = await c.leaseTimeToLive(positiveInt("lease id", arg));
              if (isJson(flags)) printJson({ id: l.id, ttlMs: l.ttlMs, remainingMs: l.remainingMs, keyCount: l.keyCount, keys: l.keys.map(toText) });
              else {
                console.log(`lease ${l.id}: granted TTL ${l.ttlMs / 1000}s, ${(l.remainingMs / 1000).toFixed(1)}s left, ${l.keyCount} key(s)`);
                for (const k of l.keys) console.log(`  ${toText(k)}`);
                if (l.keys.length < l.keyCount) console.error(`(only the first ${l.keys.length} keys are shown)`);
              }
              return;
            }
            default:
              throw new UsageError(`unknown lease action ${JSON.stringify(action)}: grant, keepalive, revoke, list or timetolive`);
          }
        } finally {
          c.close();
        }
      }),
    );
}
