// raftkv lease grant | keepalive | revoke.

import type { CAC } from "cac";
import { client, clientOptions, isJson, parseTtlMs, positiveInt, printJson, run, UsageError, writeOut, type ClientFlags } from "./common";

export function registerLease(cli: CAC): void {
  clientOptions(cli.command("lease <action> [arg]", "Leases: grant TTL | keepalive ID | revoke ID (keys put --lease ID vanish when it expires)"))
    .option("--once", "keepalive: renew once and exit instead of every TTL/3 until Ctrl-C")
    .example("raftkv lease grant 10s            # prints the lease id")
    .example("raftkv lease keepalive 7          # renews until Ctrl-C")
    .example("raftkv lease revoke 7             # deletes the lease and its keys")
    .action((action: string, arg: string | undefined, flags: ClientFlags & { once?: boolean }) =>
      run(async () => {
        /** The action's argument: only the actions that take one ask for it. */
        const need = (what: string): string => {
          if (arg === undefined) throw new UsageError(`lease ${action} needs ${what}; see raftkv lease --help`);
          return arg;
        };
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
            default:
              throw new UsageError(`unknown lease action ${JSON.stringify(action)}: grant, keepalive or revoke`);
          }
        } finally {
          c.close();
        }
      }),
    );
}
