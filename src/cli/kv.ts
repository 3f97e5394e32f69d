// raftkv put, get, del, cas, txn: reads and writes of keys.

import type { CAC } from "cac";
import { closeSync, openSync, readSync } from "node:fs";
import { RaftKvError, toBytes } from "../client/client";
import { MAX_VALUE_BYTES } from "../kv/codec";
import type { DelResult, RangeResult } from "../kv/types";
import { parseTxn, TxnSyntaxError } from "./txn";
import { bytesJson, client, clientOptions, isJson, kvJson, openInput, positiveInt, printJson, readInput, run, UsageError, writeOut, type ClientFlags } from "./common";

/** The value of put: from argv (UTF-8), or the exact bytes of stdin ("-") or of --file, up to MAX_VALUE_BYTES. */
function putValue(value: string | undefined, file: string | undefined): Uint8Array {
  if (file !== undefined && value !== undefined) throw new UsageError("give the value or --file, not both");
  if (file !== undefined) return readLimited(file);
  if (value === undefined) throw new UsageError("put needs a value: raftkv put KEY VALUE, raftkv put KEY - (from stdin) or --file FILE");
  return value === "-" ? readLimited("-") : toBytes(value);
}

/** Reads a file ("-": stdin) whole, refusing it once it passes MAX_VALUE_BYTES (without reading the rest). */
function readLimited(path: string): Uint8Array {
  const what = path === "-" ? "stdin" : path;
  const fd = path === "-" ? 0 : openInput(path, "--file");
  try {
    const buf = new Uint8Array(MAX_VALUE_BYTES + 1);
    let n = 0;
    for (;;) {
      let got: number;
      try {
        got = readSync(fd, buf, n, buf.length - n, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EAGAIN") {
          Bun.sleepSync(1); // a non-blocking stdin with nothing yet
          continue;
        }
        throw err;
      }
      if (got === 0) break;
      n += got;
      if (n > MAX_VALUE_BYTES) throw new RaftKvError("VALUE_TOO_LARGE", `the value from ${what} is over the ${MAX_VALUE_BYTES}-byte limit`);
    }
    return buf.slice(0, n);
  } finally {
    if (fd !== 0) closeSync(fd);
  }
}

export function registerKv(cli: CAC): void {
  clientOptions(cli.command("put <key> [value]", "Store [value] under <key> (- reads it from stdin; or --file); prints OK once a majority has it on disk"))
    .option("--lease <id>", "Attach the key to a lease: it is deleted when the lease expires or is revoked")
    .option("--file <file>", `Read the value from this file, bytes exact (at most ${MAX_VALUE_BYTES} bytes)`)
    .example("raftkv put 10 42")
    .example("raftkv put greeting 'hello world'        # quote a value that contains spaces")
    .example("raftkv put service/a 10.0.0.5 --lease 7")
    .example("raftkv put photo - < photo.jpg            # the value from stdin, bytes exact")
    .example("raftkv put config --file app.conf")
    .action((key: string, value: string | undefined, flags: ClientFlags & { lease?: string; file?: string }) =>
      run(async () => {
        const lease = flags.lease === undefined ? undefined : positiveInt("--lease", flags.lease);
        const bytes = putValue(value, flags.file);
        const c = client(flags);
        const r = await c.put(String(key), bytes, { lease });
        c.close();
        if (isJson(flags)) printJson({ ok: true, revision: r.revision });
        else writeOut("OK\n");
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
          else writeOut(flags.keysOnly ? kv.key : kv.value, "\n");
          return;
        }
        if (isJson(flags)) {
          printJson({ revision: r.revision, count: r.count, more: r.more, kvs: r.kvs.map(kvJson) });
        } else if (flags.countOnly) {
          writeOut(`${r.count}\n`);
        } else {
          for (const kv of r.kvs) {
            writeOut(kv.key, "\n");
            if (!flags.keysOnly) writeOut(kv.value, "\n");
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
        else writeOut(`deleted ${r.deleted}\n`);
      }),
    );

  clientOptions(cli.command("cas <key> <expected> [value]", "Set <key> to [value] only if it is now <expected>; with --absent: cas <key> --absent <value>, only if <key> does not exist"))
    .usage("cas <key> <expected> <value>   |   cas <key> --absent <value>")
    .option("--absent", "Succeed only if <key> does not exist (then the one argument after <key> is the value)")
    .example("raftkv cas config/mode blue green")
    .example("raftkv cas config/owner --absent me")
    .action((key: string, second: string, third: string | undefined, flags: ClientFlags & { absent?: boolean }) =>
      run(async () => {
        if (flags.absent && third !== undefined) throw new UsageError(`with --absent, cas takes <key> and <value> only (got also ${JSON.stringify(third)})`);
        if (!flags.absent && third === undefined) throw new UsageError("cas needs <key> <expected> <value>, or <key> --absent <value>");
        const expected = flags.absent ? null : second;
        const value = flags.absent ? second : third!;
        const c = client(flags);
        const r = await c.cas(key, expected, value);
        c.close();
        const current = r.succeeded ? undefined : (r.results[0] as RangeResult | undefined)?.kvs[0];
        if (isJson(flags)) {
          printJson({ succeeded: r.succeeded, revision: r.revision, ...(r.succeeded ? {} : { current: current ? kvJson(current) : null }) });
        } else if (r.succeeded) {
          writeOut("OK\n");
        } else {
          const now = current ? JSON.stringify(bytesJson("v", current.value).v) : "absent";
          console.error(`FAILED: ${key} is ${now}, not ${expected === null ? "absent" : JSON.stringify(expected)}`);
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
        const source = file && file !== "-" ? readInput(file, "txn file") : await new Response(Bun.stdin.stream()).text();
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
        writeOut(r.succeeded ? "SUCCESS\n" : "FAILURE\n");
        for (const x of r.results) {
          if (x.op === "put") writeOut("OK\n");
          else if (x.op === "del") writeOut(`deleted ${x.deleted}\n`);
          else for (const kv of x.kvs) writeOut(kv.key, "\n", kv.value, "\n");
        }
      }),
    );
}
