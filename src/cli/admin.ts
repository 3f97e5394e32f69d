// raftkv compact | session-ttl: cluster-wide maintenance and settings, each applied through the log.

import type { CAC } from "cac";
import { client, clientOptions, isJson, parseTtlMs, positiveInt, printJson, run, type ClientFlags } from "./common";

export function registerAdmin(cli: CAC): void {
  clientOptions(cli.command("compact <revision>", "Forget the history through <revision>: reads (get --rev) and watches (--rev) at or before it then fail with COMPACTED"))
    .example("raftkv compact 1200")
    .action((revision: string, flags: ClientFlags) =>
      run(async () => {
        const c = client(flags);
        const r = await c.compact(positiveInt("revision", revision));
        c.close();
        if (isJson(flags)) printJson({ compacted: r.compacted, revision: r.revision });
        else console.log(`compacted through revision ${r.compacted} (current revision ${r.revision})`);
      }),
    );

  clientOptions(
    cli.command(
      "session-ttl <ttl>",
      "Set the cluster-wide client-session TTL: a client idle longer than this must register a new session (its retried write gets SESSION_EXPIRED); default 10m",
    ),
  )
    .example("raftkv session-ttl 30m")
    .action((ttl: string, flags: ClientFlags) =>
      run(async () => {
        const c = client(flags);
        const r = await c.setSessionTtl(parseTtlMs(String(ttl)));
        c.close();
        if (isJson(flags)) printJson({ sessionTtlMs: r.ttlMs });
        else console.log(`session TTL set to ${r.ttlMs / 1000}s on every node`);
      }),
    );
}
