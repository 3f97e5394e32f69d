// raftkv watch: stream changes to a key, a prefix or a range.

import type { CAC } from "cac";
import { bytesJson, client, clientOptions, isJson, positiveInt, printJson, run, writeOut, type ClientFlags } from "./common";

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
              ...bytesJson("key", ev.key),
              ...(ev.value ? bytesJson("value", ev.value) : {}),
              modRevision: ev.modRevision,
              createRevision: ev.createRevision,
              version: ev.version,
              ...(flags.prevKv ? (ev.prevValue ? bytesJson("prevValue", ev.prevValue) : { prevValue: null }) : {}),
            });
          } else {
            const was: (string | Uint8Array)[] = flags.prevKv ? (ev.prevValue ? [", was ", ev.prevValue] : [", new"]) : [];
            if (ev.type === "put") writeOut("PUT ", ev.key, " ", ev.value!, ` (rev ${ev.modRevision}`, ...was, ")\n");
            else writeOut("DELETE ", ev.key, ` (rev ${ev.modRevision}`, ...was, ")\n");
          }
        }
        c.close();
      }),
    );
}
