// raftkv lock and elect: client-side recipes on leases, revisions and watches.

import type { CAC } from "cac";
import { existsSync } from "node:fs";
import { toText } from "../client/client";
import { contend, electionPrefix, holder, lockPrefix } from "../client/recipes";
import { client, clientOptions, isJson, parseTtlMs, printJson, run, UsageError, writeOut, type ClientFlags } from "./common";

/** After losing the lock: how long the command's process group has between SIGTERM and SIGKILL. */
export const LOCK_KILL_GRACE_MS = 5000;

export function registerLock(cli: CAC): void {
  clientOptions(cli.command("lock <name> [...command]", "Hold the lock <name> while running COMMAND (raftkv lock NAME -- COMMAND ARGS...); exit with its code"))
    .option("--ttl <ttl>", "Lease TTL: if this process dies the lock frees itself after it", { default: "10s" })
    .example("raftkv lock backups -- ./backup.sh --full")
    .example("raftkv lock backups -- sh -c 'echo token $RAFTKV_LOCK_REV of $RAFTKV_LOCK_KEY'")
    .usage(`lock <name> -- <command> [args...]

  Runs the command in a process group of its own while holding the lock, with the fencing token in its
  environment: RAFTKV_LOCK_KEY (the lock's key) and RAFTKV_LOCK_REV (its create revision, which grows
  with every new holder). If the lock is lost (its lease could not be renewed), the whole process group
  gets SIGTERM, then SIGKILL after ${LOCK_KILL_GRACE_MS / 1000}s, and raftkv exits 1. Processes the command leaves
  behind are stopped the same way when it exits, before the lock is released.`)
    .action((name: string, command: string[], flags: ClientFlags & { ttl: string }) =>
      run(async () => {
        if (!command.length) throw new UsageError("lock needs a command: raftkv lock NAME -- COMMAND ARGS...");
        const program = command[0]!;
        if (!(program.includes("/") ? existsSync(program) : Bun.which(program))) throw new UsageError(`lock: command not found: ${program}`);
        const ttlMs = parseTtlMs(flags.ttl, "--ttl");
        const c = client(flags);
        const held = await contend(c, lockPrefix(String(name)), {
          ttlMs,
          onWait: (h) => console.error(`waiting for lock ${name} (held by ${toText(h.value) || "another process"})`),
          value: `pid ${process.pid}`,
        });
        const child = Bun.spawn(command, {
          stdin: "inherit",
          stdout: "inherit",
          stderr: "inherit",
          detached: true, // its own process group, so signals reach everything it started
          env: { ...process.env, RAFTKV_LOCK_KEY: held.key, RAFTKV_LOCK_REV: String(held.revision) },
        });
        /** Signal the command's process group; false if no process of it is left. */
        const group = (sig: NodeJS.Signals | 0): boolean => {
          try {
            process.kill(-child.pid, sig);
            return true;
          } catch {
            return false; // the group is gone already
          }
        };
        process.on("SIGINT", () => group("SIGINT"));
        process.on("SIGTERM", () => group("SIGTERM"));
        let wasLost = false;
        void held.lost.then((why) => {
          wasLost = true;
          console.error(`error: lost lock ${name}: ${why}; stopping the command's process group`);
          group("SIGTERM");
          setTimeout(() => group("SIGKILL"), LOCK_KILL_GRACE_MS).unref();
        });
        const code = await child.exited;
        // Whatever it left running must not outlive the lock: SIGTERM, then SIGKILL after the grace.
        if (group("SIGTERM")) {
          const until = Date.now() + LOCK_KILL_GRACE_MS;
          while (group(0) && Date.now() < until) await Bun.sleep(50);
          group("SIGKILL");
        }
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
              else writeOut(now === null ? `${name}: no leader\n` : `${name}: ${now}\n`);
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
        else writeOut(`elected: ${name} = ${proposal}\n`);
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
