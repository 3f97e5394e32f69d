// raftkv watch: stream changes to a key, a prefix or a range.

import type { CAC } from "cac";
import { toText } from "../client/client";
import { client, clientOptions, isJson, positiveInt, printJson, run, type ClientFlags } from "./common";

export function registerWatch(cli: CAC): void {
  clientOptions(cli.command("watch <key> [rangeEnd]", "Print every change to <key> (or --prefix / a range) as it happens, until Ctrl-C"))
    .option("--prefix", "Watch every key that starts with <key>")
    .option("--rev <revision>", "First replay the changes since this revision (while the cluster still keeps them)")
    .option("--prev-kv", "Show each change's previous value (was ...; prevValue in --json)")
    .example("raftkv watch config/ --prefix")
    .example("raftkv watch config/mode --rev 1 --json")
    .example("raftkv watch config/ --prefix --prev-kv")
    .action((key: string, rangeEnd: string | undefined, flags: ClientFlags & { prefix?: boolean; rev?: string; prevKv?: boolean }) =>
      run(async () => {
        const c = client(flags);
        const w = c.watch(String(key), {
          ...(flags.prefix ? { prefix: true } : {}),
          ...(rangeEnd !== undefined ? { rangeEnd: String(rangeEnd) } : {}),
          ...(flags.rev !== undefined ? { fromRevision: positiveInt("--rev", flags.rev) } : {}),
          ...(flags.prevKv ? { prevKv: true } : {}),
        });
        const stop = () => w.close();
        process.once("SIGINT", stop);
        process.once("SIGTERM", stop);
        for await (const ev of w) {
          if (isJson(flags)) {
            printJson({
              type: ev.type,
              key: toText(ev.key),
              value: ev.value ? toText(ev.value) : undefined,
              modRevision: ev.modRevision,
              createRevision: ev.createRevision,
              version: ev.version,
              ...(flags.prevKv ? { prevValue: ev.prevValue ? toText(ev.prevValue) : null } : {}),
            });
          } else {
            const was = flags.prevKv ? (ev.prevValue ? `, was ${toText(ev.prevValue)}` : ", new") : "";
            if (ev.type === "put") console.log(`PUT ${toText(ev.key)} ${toText(ev.value!)} (rev ${ev.modRevision}${was})`);
            else console.log(`DELETE ${toText(ev.key)} (rev ${ev.modRevision}${was})`);
          }
        }
        c.close();
      }),
    );
}
