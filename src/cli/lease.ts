// raftkv lease grant | keepalive | revoke.

import type { CAC } from "cac";
import { bytesJson, client, clientOptions, isJson, parseTtlMs, positiveInt, printJson, run, UsageError, writeOut, type ClientFlags } from "./common";

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
        /** The action's argument: only the actions that take one ask for it. */
        const need = (what: string): string => {
          if (arg === undefined) throw new UsageError(`lease ${action} needs ${what}; see raftkv lease --help`);
          return arg;
        };
        if (arg !== undefined && action === "list") throw new UsageError("lease list takes no argument");
        const c = client(flags);
        try {
          switch (action) {
            case "grant": {
              const r = await c.leaseGrant(parseTtlMs(need("a TTL")));
              if (isJson(flags)) printJson({ id: r.id, ttlMs: r.ttlMs });
              else writeOut(`lease ${r.id} granted with TTL ${r.ttlMs / 1000}s\n`);
              return;
            }
            case "keepalive": {
              const id = positiveInt("lease id", need("a lease id"));
              let stopped = false;
              process.once("SIGINT", () => (stopped = true));
              process.once("SIGTERM", () => (stopped = true));
              for (;;) {
                const r = await c.leaseKeepAlive(id);
                if (isJson(flags)) printJson({ id: r.id, ttlMs: r.ttlMs });
                else writeOut(`lease ${r.id} kept alive with TTL ${r.ttlMs / 1000}s\n`);
                if (flags.once) return;
                const until = Date.now() + Math.max(100, r.ttlMs / 3);
                while (!stopped && Date.now() < until) await Bun.sleep(50);
                if (stopped) return;
              }
            }
            case "revoke": {
              const r = await c.leaseRevoke(positiveInt("lease id", need("a lease id")));
              if (isJson(flags)) printJson({ revoked: true, deleted: r.deleted, revision: r.revision });
              else writeOut(`lease revoked; deleted ${r.deleted} key(s)\n`);
              return;
            }
            case "list": {
              const { leases, more } = await c.leaseList();
              if (isJson(flags)) printJson({ leases, more });
              else if (!leases.length) writeOut("no leases\n");
              else for (const l of leases) writeOut(`lease ${l.id}: TTL ${l.ttlMs / 1000}s, ${(l.remainingMs / 1000).toFixed(1)}s left, ${l.keyCount} key(s)\n`);
              if (more && !isJson(flags)) console.error(`(only the first ${leases.length} leases are shown)`);
              return;
            }
            case "timetolive": {
              const l = await c.leaseTimeToLive(positiveInt("lease id", need("a lease id")));
              if (isJson(flags)) printJson({ id: l.id, ttlMs: l.ttlMs, remainingMs: l.remainingMs, keyCount: l.keyCount, keys: l.keys.map((k) => bytesJson("key", k)) });
              else {
                writeOut(`lease ${l.id}: granted TTL ${l.ttlMs / 1000}s, ${(l.remainingMs / 1000).toFixed(1)}s left, ${l.keyCount} key(s)\n`);
                for (const k of l.keys) writeOut("  ", k, "\n");
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
