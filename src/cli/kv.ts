// raftkv put, get, del, cas, txn: reads and writes of keys.

import type { CAC } from "cac";
import { readFileSync } from "node:fs";
import { toBytes, toText } from "../client/client";
import type { DelResult, RangeResult } from "../kv/types";
import { parseTxn, TxnSyntaxError } from "./txn";
import { client, clientOptions, isJson, kvJson, positiveInt, printJson, run, UsageError, type ClientFlags } from "./common";

export function registerKv(cli: CAC): void {
  clientOptions(cli.command("put <key> <value>", "Store <value> under <key>; prints OK once a majority has it on disk"))
    .option("--lease <id>", "Attach the key to a lease: it is deleted when the lease expires or is revoked")
    .example("raftkv put 10 42")
    .example("raftkv put service/a 10.0.0.5 --lease 7")
    .action((key: string, value: string, flags: ClientFlags & { lease?: string }) =>
      run(async () => {
        const c = client(flags);
        const lease = flags.lease === undefined ? undefined : positiveInt("--lease", flags.lease);
        const r = await c.put(String(key), String(value), { lease });
        c.close();
        if (isJson(flags)) printJson({ ok: true, revision: r.revision });
        else console.log("OK");
      }),
    );

  clientOptions(cli.command("get <key> [rangeEnd]", "Print the value of <key>, or the keys in [key, rangeEnd); linearizable unless --serializable"))
    .option("--prefix", "Every key that starts with <key> (\"\" for all keys)")
    .option("--limit <n>", "At most n keys")
    .option("--keys-only", "Print keys without values")
    .option("--count-only", "Print only how many keys match")
    .option("--serializable", "Read the contacted node's local state: faster, possibly stale")
    .option("--rev <revision>", "Read the keys as they were at this revision (within the kept history, else COMPACTED)")
    .example("raftkv get 10")
    .example("raftkv get 10 --json                # value with create/mod revision and version")
    .example("raftkv get config/ --prefix --keys-only")
    .example("raftkv get a c                      # keys from a up to (not including) c")
    .example("raftkv get 10 --rev 5               # the value at revision 5")
    .example("raftkv get 10 --serializable --endpoints 127.0.0.1:7002")
    .action((key: string, rangeEnd: string | undefined, flags: ClientFlags & { serializable?: boolean; prefix?: boolean; limit?: string; keysOnly?: boolean; countOnly?: boolean; rev?: string }) =>
      run(async () => {
        if (flags.prefix && rangeEnd !== undefined) throw new UsageError("give either --prefix or a range end, not both");
        const single = !flags.prefix && rangeEnd === undefined;
        const c = client(flags);
        const r = await c.range(
          {
            key: toBytes(String(key)),
            ...(flags.prefix ? { prefix: true } : {}),
            ...(rangeEnd !== undefined ? { rangeEnd: toBytes(String(rangeEnd)) } : {}),
            ...(flags.limit !== undefined ? { limit: positiveInt("--limit", flags.limit) } : {}),
            ...(flags.keysOnly ? { keysOnly: true } : {}),
            ...(flags.countOnly ? { countOnly: true } : {}),
            ...(flags.rev !== undefined ? { revision: positiveInt("--rev", flags.rev) } : {}),
          },
          { serializable: !!flags.serializable },
        );
        c.close();
        if (single && !flags.countOnly) {
          const kv = r.kvs[0];
          if (!kv) {
            if (isJson(flags)) printJson({ key: String(key), found: false, revision: r.revision });
            console.error(`key not found: ${key}`);
            return 1;
          }
          if (isJson(flags)) printJson({ found: true, ...kvJson(kv), revision: r.revision });
          else console.log(flags.keysOnly ? toText(kv.key) : toText(kv.value));
          return;
        }
        if (isJson(flags)) {
          printJson({ revision: r.revision, count: r.count, more: r.more, kvs: r.kvs.map(kvJson) });
        } else if (flags.countOnly) {
          console.log(String(r.count));
        } else {
          for (const kv of r.kvs) {
            console.log(toText(kv.key));
            if (!flags.keysOnly) console.log(toText(kv.value));
          }
          if (r.more) console.error(`(${r.count - r.kvs.length} more keys not shown: raise --limit)`);
        }
      }),
    );

  clientOptions(cli.command("del <key> [rangeEnd]", "Delete <key> (or keys in [key, rangeEnd), or --prefix); prints how many were deleted"))
    .alias("delete")
    .option("--prefix", "Delete every key that starts with <key>")
    .example("raftkv del 10")
    .example("raftkv del config/ --prefix")
    .action((key: string, rangeEnd: string | undefined, flags: ClientFlags & { prefix?: boolean }) =>
      run(async () => {
        if (flags.prefix && rangeEnd !== undefined) throw new UsageError("give either --prefix or a range end, not both");
        const c = client(flags);
        const r = (await c.write({
          op: "del",
          key: toBytes(String(key)),
          ...(flags.prefix ? { prefix: true } : {}),
          ...(rangeEnd !== undefined ? { rangeEnd: toBytes(String(rangeEnd)) } : {}),
        })) as DelResult;
        c.close();
        if (isJson(flags)) printJson({ deleted: r.deleted, revision: r.revision });
        else console.log(`deleted ${r.deleted}`);
      }),
    );

  clientOptions(cli.command("cas <key> <expected> <value>", "Set <key> to <value> only if it is now <expected> (the word absent: only if it does not exist)"))
    .example("raftkv cas config/mode blue green")
    .example("raftkv cas config/owner absent me")
    .action((key: string, expected: string, value: string, flags: ClientFlags) =>
      run(async () => {
        const c = client(flags);
        const r = await c.cas(String(key), String(expected) === "absent" ? "absent" : String(expected), String(value));
        c.close();
        const current = r.succeeded ? undefined : (r.results[0] as RangeResult | undefined)?.kvs[0];
        if (isJson(flags)) {
          printJson({ succeeded: r.succeeded, revision: r.revision, ...(r.succeeded ? {} : { current: current ? kvJson(current) : null }) });
        } else if (r.succeeded) {
          console.log("OK");
        } else {
          console.error(`FAILED: ${key} is ${current ? JSON.stringify(toText(current.value)) : "absent"}, not ${expected === "absent" ? "absent" : JSON.stringify(expected)}`);
        }
        return r.succeeded ? 0 : 1;
      }),
    );

  clientOptions(cli.command("txn [file]", "Run a transaction read from [file] or stdin (format: raftkv txn --help)"))
    .example(`printf 'if\\n  value(mode) = "blue"\\nthen\\n  put mode green\\nelse\\n  get mode\\n' | raftkv txn`)
    .usage(`txn [file]

  Format: an "if" section of guards, a "then" section run when all hold, an "else" section otherwise.
    if
      value(KEY) = "text"        (value compares bytewise: = != > <)
      version(KEY) > 2           (version, create, mod, lease: = != > < a number)
      exists(KEY)  /  absent(KEY)
    then
      put KEY VALUE
      del KEY [--prefix]
      get KEY [--prefix]
    else
      ...
  Keys and values are bare words or "double-quoted" strings; # starts a comment.
  Prints SUCCESS or FAILURE (exit 0 either way) and each operation's result.`)
    .action((file: string | undefined, flags: ClientFlags) =>
      run(async () => {
        const source = file && file !== "-" ? readFileSync(String(file), "utf8") : await new Response(Bun.stdin.stream()).text();
        let txn;
        try {
          txn = parseTxn(source);
        } catch (err) {
          if (err instanceof TxnSyntaxError) throw new UsageError(`txn: ${err.message}`);
          throw err;
        }
        const c = client(flags);
        const r = await c.txn(txn);
        c.close();
        if (isJson(flags)) {
          printJson({ succeeded: r.succeeded, revision: r.revision, results: r.results.map((x) => (x.op === "range" ? { ...x, kvs: x.kvs.map(kvJson) } : x)) });
          return;
        }
        console.log(r.succeeded ? "SUCCESS" : "FAILURE");
        for (const x of r.results) {
          if (x.op === "put") console.log("OK");
          else if (x.op === "del") console.log(`deleted ${x.deleted}`);
          else for (const kv of x.kvs) console.log(`${toText(kv.key)}\n${toText(kv.value)}`);
        }
      }),
    );
}
