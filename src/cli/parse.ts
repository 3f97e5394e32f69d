// The command line parser. cac declares the commands and writes --help; this parses argv itself, because
// cac drops extra arguments silently, turns option values into numbers, takes "-5" for an option and
// names unknown options in its camelCase form (--prevKv for --prev-kv). Here:
//   - positional arguments and option values stay the exact strings the user typed;
//   - a token is an option only if it starts with "-" and is not "-" or a number ("-5" is a value);
//   - "--" ends the options: everything after it is positional (or, for a command declared with
//     { passThrough: true }, handed to it as options["--"]);
//   - an unknown option, a missing or extra argument, or an option without its value is a UsageError
//     naming what the user typed.

import type { CAC, Command } from "cac";
import { UsageError } from "./common";

export interface ParsedCommandLine {
  command: Command;
  /** One entry per declared argument (a variadic one gets the array of the rest). */
  args: (string | string[] | undefined)[];
  options: Record<string, unknown>;
}

type CacOption = Command["options"][number];

/** "-5", "-0.5", "-1e3": values, not options. */
const NEGATIVE_NUMBER = /^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

function isOptionToken(token: string): boolean {
  return token.startsWith("-") && token !== "-" && !NEGATIVE_NUMBER.test(token);
}

function usageOf(command: Command): string {
  return `usage: raftkv ${command.rawName} [options]; see raftkv ${command.name} --help`;
}

/** Every spelling of every option of the command, as typed: "--config", "-c". (--help is cac's.) */
function spellings(command: Command): Map<string, { option: CacOption; negated: boolean }> {
  const map = new Map<string, { option: CacOption; negated: boolean }>();
  for (const option of command.options) {
    const raw = option.rawName.replace(/[<[].*$/, "");
    for (const part of raw.split(",")) {
      const spelled = part.trim();
      if (spelled) map.set(spelled, { option, negated: spelled.startsWith("--no-") });
    }
  }
  return map;
}

/** Parse argv (without the program name): the first token names the command. */
export function parseCommandLine(cli: CAC, argv: string[]): ParsedCommandLine {
  const name = argv[0]!;
  if (isOptionToken(name)) throw new UsageError(`unknown option ${JSON.stringify(name.split("=")[0])}; see raftkv --help`);
  const command = cli.commands.find((c) => c.isMatched(name));
  if (!command) throw new UsageError(`unknown command ${JSON.stringify(name)}; see raftkv --help`);
  const known = spellings(command);

  const options: Record<string, unknown> = { "--": [] };
  for (const option of command.options) {
    if (option.config.default !== undefined) for (const n of option.names) options[n] = option.config.default;
  }
  const positional: string[] = [];
  for (let i = 1; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === "--") {
      // What follows is positional, or handed on as a whole by a command that passes options through.
      if ((command.config as { passThrough?: boolean }).passThrough) options["--"] = argv.slice(i + 1);
      else positional.push(...argv.slice(i + 1));
      break;
    }
    if (!isOptionToken(token)) {
      positional.push(token);
      continue;
    }
    const eq = token.startsWith("--") ? token.indexOf("=") : -1;
    const spelled = eq >= 0 ? token.slice(0, eq) : token;
    const found = known.get(spelled);
    if (!found) throw new UsageError(`unknown option ${JSON.stringify(spelled)} for ${command.name}; ${usageOf(command)}`);
    const { option, negated } = found;
    let value: unknown;
    if (option.isBoolean) {
      if (eq >= 0) throw new UsageError(`option ${spelled} takes no value`);
      value = !negated;
    } else if (eq >= 0) {
      value = token.slice(eq + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || (isOptionToken(next) && known.has(next.split("=")[0]!)) || next === "--") {
        throw new UsageError(`option ${spelled} needs a value; ${usageOf(command)}`);
      }
      value = next;
      i++;
    }
    for (const n of option.names) options[n] = value;
  }

  const declared = command.args;
  const variadic = declared.some((a) => a.variadic);
  if (!variadic && positional.length > declared.length) {
    const extra = positional.slice(declared.length).map((a) => JSON.stringify(a));
    throw new UsageError(`too many arguments (${extra.join(" ")}); ${usageOf(command)} (quote a value that contains spaces)`);
  }
  const missing = declared.find((a, i) => a.required && positional[i] === undefined);
  if (missing) throw new UsageError(`missing argument <${missing.value}>; ${usageOf(command)}`);
  const args = declared.map((a, i) => (a.variadic ? positional.slice(i) : positional[i]));
  return { command, args, options };
}
