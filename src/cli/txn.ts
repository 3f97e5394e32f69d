// The text format of `raftkv txn`: guards, then what to do if they all hold, else what to do otherwise.
//
//   # comments start with '#'; keys and values are bare words or "double-quoted" (JSON escapes)
//   if
//     value(config/mode) = "blue"      # value compares: = != > <
//     version(config/mode) > 2         # version, create, mod, lease: = != > <
//     absent(config/lock)              # exists(KEY) / absent(KEY)
//   then
//     put config/mode green
//     del config/old
//     get config/mode
//   else
//     get config/mode
//
// `if` may be empty or left out (the then-branch always runs); `else` may be left out.

import type { Compare, CompareResult, TxnCommand, TxnOp } from "../kv/types";

export class TxnSyntaxError extends Error {}

const te = new TextEncoder();

function tokenize(line: string, lineNo: number): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    const ch = line[i]!;
    if (ch === "#") break;
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    if (ch === '"') {
      let j = i + 1;
      while (j < line.length && line[j] !== '"') j += line[j] === "\\" ? 2 : 1;
      if (j >= line.length) throw new TxnSyntaxError(`line ${lineNo}: unterminated string`);
      try {
        out.push("\u0000" + (JSON.parse(line.slice(i, j + 1)) as string));
      } catch {
        throw new TxnSyntaxError(`line ${lineNo}: bad string ${line.slice(i, j + 1)}`);
      }
      i = j + 1;
      continue;
    }
    if ("()".includes(ch)) {
      out.push(ch);
      i++;
      continue;
    }
    let j = i;
    while (j < line.length && !/[\s()#"]/.test(line[j]!)) j++;
    out.push(line.slice(i, j));
    i = j;
  }
  return out;
}

/** A token's text; quoted tokens carry a leading NUL so `"if"` is never a keyword. */
const text = (t: string) => (t.startsWith("\u0000") ? t.slice(1) : t);

const RESULTS: Record<string, CompareResult> = { "=": "equal", "==": "equal", "!=": "not_equal", ">": "greater", "<": "less" };

function parseCompare(tokens: string[], lineNo: number): Compare {
  const [target, open, key, close, op, operand, ...rest] = tokens;
  if (open !== "(" || close !== ")" || key === undefined) {
    throw new TxnSyntaxError(`line ${lineNo}: expected TARGET(KEY) ..., e.g. value(k) = "v" or absent(k)`);
  }
  const k = te.encode(text(key));
  if (target === "exists" || target === "absent") {
    if (op !== undefined) throw new TxnSyntaxError(`line ${lineNo}: ${target}(KEY) takes no operator`);
    return { key: k, target };
  }
  if (op === undefined || operand === undefined || rest.length) throw new TxnSyntaxError(`line ${lineNo}: expected ${target}(KEY) OP OPERAND`);
  const result = RESULTS[op];
  if (!result) throw new TxnSyntaxError(`line ${lineNo}: unknown operator ${op} (use = != > <)`);
  if (target === "value") return { key: k, target: "value", result, value: te.encode(text(operand)) };
  if (target === "version" || target === "create" || target === "mod" || target === "lease") {
    if (!/^\d+$/.test(text(operand))) throw new TxnSyntaxError(`line ${lineNo}: ${target} compares with a number, got ${text(operand)}`);
    return { key: k, target, result, number: Number(text(operand)) };
  }
  throw new TxnSyntaxError(`line ${lineNo}: unknown compare target ${target} (value, version, create, mod, lease, exists, absent)`);
}

function parseOp(tokens: string[], lineNo: number): TxnOp {
  const [verb, key, ...rest] = tokens;
  if (key === undefined) throw new TxnSyntaxError(`line ${lineNo}: ${verb} needs a key`);
  const k = te.encode(text(key));
  const prefix = rest[rest.length - 1] === "--prefix";
  const args = prefix ? rest.slice(0, -1) : rest;
  switch (verb) {
    case "put":
      if (args.length !== 1) throw new TxnSyntaxError(`line ${lineNo}: expected put KEY VALUE`);
      return { op: "put", key: k, value: te.encode(text(args[0]!)) };
    case "del":
    case "delete":
      if (args.length) throw new TxnSyntaxError(`line ${lineNo}: expected del KEY [--prefix]`);
      return { op: "del", key: k, ...(prefix ? { prefix: true } : {}) };
    case "get":
      if (args.length) throw new TxnSyntaxError(`line ${lineNo}: expected get KEY [--prefix]`);
      return { op: "range", key: k, ...(prefix ? { prefix: true } : {}) };
    default:
      throw new TxnSyntaxError(`line ${lineNo}: unknown operation ${verb} (put, del, get)`);
  }
}

export function parseTxn(source: string): Omit<TxnCommand, "op"> {
  const compare: Compare[] = [];
  const success: TxnOp[] = [];
  const failure: TxnOp[] = [];
  let section: "if" | "then" | "else" | null = null;
  const seen = new Set<string>();
  source.split(/\r?\n/).forEach((line, i) => {
    const tokens = tokenize(line, i + 1);
    if (!tokens.length) return;
    if (tokens.length === 1 && ["if", "then", "else"].includes(tokens[0]!)) {
      const next = tokens[0] as "if" | "then" | "else";
      const order = ["if", "then", "else"];
      if (seen.has(next) || (section && order.indexOf(next) < order.indexOf(section))) {
        throw new TxnSyntaxError(`line ${i + 1}: sections go if, then, else, each once`);
      }
      seen.add(next);
      section = next;
      return;
    }
    if (section === null) throw new TxnSyntaxError(`line ${i + 1}: expected "if" or "then" before ${JSON.stringify(line.trim())}`);
    if (section === "if") compare.push(parseCompare(tokens, i + 1));
    else (section === "then" ? success : failure).push(parseOp(tokens, i + 1));
  });
  if (!seen.has("then")) throw new TxnSyntaxError(`a transaction needs a "then" section`);
  return { compare, success, failure };
}
