// raftkv lock and elect: client-side recipes on leases, revisions and watches.

import type { CAC } from "cac";
import { toText } from "../client/client";
import { contend, electionPrefix, holder, lockPrefix } from "../client/recipes";
import { client, clientOptions, isJson, parseTtlMs, printJson, run, UsageError, type ClientFlags } from "./common";

export function registerLock(cli: CAC): void {
  clientOptions(cli.command("lock <name> [...command]", "Hold the lock <name> while running COMMAND (raftkv lock NAME -- COMMAND ARGS...); exit with its code"))
    .option("--ttl <ttl>", "Lease TTL: if this process dies the lock frees itself after it", { default: "10s" })
    .example("raftkv lock backups -- ./backup.sh --full")
    .action((name: string, command: string[], flags: ClientFlags & { ttl: string; "--"?: string[] }) =>
      run(async () => {
        const argv = [...(command ?? []), ...(flags["--"] ?? [])];
        if (!argv.length) throw new UsageError("lock needs a command: raftkv lock NAME -- COMMAND ARGS...");
        const c = client(flags);
        const held = await contend(c, lockPrefix(String(name)), {
          ttlMs: parseTtlMs(flags.ttl),
          onWait: (h) => console.error(`waiting for lock ${name} (held by ${toText(h.value) || "another process"})`),
          value: `pid ${process.pid}`,
        });
        const child = Bun.spawn(argv, { stdin: "inherit", stdout: "inherit", stderr: "inherit" });
        const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
        process.on("SIGINT", forward("SIGINT"));
        process.on("SIGTERM", forward("SIGTERM"));
        const lost = held.lost.then((why) => {
          console.error(`error: lost lock ${name}: ${why}; stopping the command`);
          child.kill("SIGTERM");
          return true;
        });
        const code = await child.exited;
        const wasLost = await Promise.race([lost, Promise.resolve(false)]);
        await held.release().catch(() => {});
        c.close();
        return wasLost ? 1 : code;
      }),
    );

  clientOptions(cli.command("elect <name> [proposal]", "Campaign to lead <name> with [proposal]; prints when elected and holds until Ctrl-C. --listen prints who leads"))
    .option("--listen", "Do not campaign: print the current leader's proposal and every change")
    .option("--ttl <ttl>", "Lease TTL: if this process dies, leadership passes on after it", { default: "10s" })
    .example("raftkv elect scheduler host-a")
    .example("raftkv elect scheduler --listen")
    .action((name: string, proposal: string | undefined, flags: ClientFlags & { listen?: boolean; ttl: string }) =>
      run(async () => {
        const c = client(flags);
        const prefix = electionPrefix(String(name));
        if (flags.listen) {
          let current: string | null | undefined;
          const show = async () => {
            const h = await holder(c, prefix);
            const now = h ? toText(h.value) : null;
            if (now !== current) {
              current = now;
              if (isJson(flags)) printJson({ name, leader: now });
              else console.log(now === null ? `${name}: no leader` : `${name}: ${now}`);
            }
          };
          await show();
          const w = c.watch(prefix, { prefix: true });
          process.once("SIGINT", () => w.close());
          process.once("SIGTERM", () => w.close());
          for await (const _ev of w) await show();
          c.close();
          return;
        }
        if (proposal === undefined) throw new UsageError("elect needs a proposal (what to announce when elected), or --listen");
        const ac = new AbortController();
        let resign!: () => void;
        const resigned = new Promise<void>((r) => (resign = r));
        const onSignal = () => {
          ac.abort();
          resign();
        };
        process.once("SIGINT", onSignal);
        process.once("SIGTERM", onSignal);
        const held = await contend(c, prefix, { ttlMs: parseTtlMs(flags.ttl), value: String(proposal), signal: ac.signal });
        if (isJson(flags)) printJson({ name, elected: true, proposal });
        else console.log(`elected: ${name} = ${proposal}`);
        const lost = await Promise.race([held.lost, resigned.then(() => null)]);
        await held.release().catch(() => {});
        c.close();
        if (lost) {
          console.error(`error: lost leadership of ${name}: ${lost}`);
          return 1;
        }
      }),
    );
}
