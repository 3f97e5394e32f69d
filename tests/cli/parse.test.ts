// The command line parser: exact strings, negative numbers as values, errors naming what was typed.

import { describe, expect, test } from "bun:test";
import cac from "cac";
import { parseCommandLine } from "../../src/cli/parse";

function cli() {
  const c = cac("raftkv");
  c.command("put <key> [value]").option("--lease <id>", "").option("-w, --write-out <f>", "").option("--prev-kv", "");
  c.command("lock <name> [...command]");
  c.command("cluster [config]", "", { passThrough: true } as object).option("--data-root <dir>", "", { default: "data" });
  return c;
}

describe("parseCommandLine", () => {
  test("arguments and option values stay the strings typed", () => {
    const p = parseCommandLine(cli(), ["put", "007", "1e3", "--lease", "010"]);
    expect(p.args).toEqual(["007", "1e3"]);
    expect(p.options.lease).toBe("010");
  });

  test("negative numbers and - are values; -- ends the options", () => {
    expect(parseCommandLine(cli(), ["put", "k", "-5"]).args).toEqual(["k", "-5"]);
    expect(parseCommandLine(cli(), ["put", "k", "-"]).args).toEqual(["k", "-"]);
    expect(parseCommandLine(cli(), ["put", "k", "--", "--json"]).args).toEqual(["k", "--json"]);
    expect(parseCommandLine(cli(), ["put", "k", "v", "--lease=-3"]).options.lease).toBe("-3");
  });

  test("errors name what the user typed", () => {
    expect(() => parseCommandLine(cli(), ["put", "k", "--prevKv"])).toThrow('unknown option "--prevKv"');
    expect(() => parseCommandLine(cli(), ["put", "k", "--bogus=1"])).toThrow('unknown option "--bogus"');
    expect(() => parseCommandLine(cli(), ["put", "a", "b", "c"])).toThrow('too many arguments ("c")');
    expect(() => parseCommandLine(cli(), ["put"])).toThrow("missing argument <key>");
    expect(() => parseCommandLine(cli(), ["put", "k", "--lease"])).toThrow("option --lease needs a value");
    expect(() => parseCommandLine(cli(), ["put", "k", "--prev-kv=yes"])).toThrow("option --prev-kv takes no value");
    expect(() => parseCommandLine(cli(), ["--bogus"])).toThrow('unknown option "--bogus"');
    expect(() => parseCommandLine(cli(), ["frob"])).toThrow('unknown command "frob"');
  });

  test("short and long spellings set the same option; defaults apply", () => {
    expect(parseCommandLine(cli(), ["put", "k", "v", "-w", "json"]).options.writeOut).toBe("json");
    expect(parseCommandLine(cli(), ["cluster"]).options.dataRoot).toBe("data");
  });

  test("variadic arguments take the rest; a pass-through command gets what follows --", () => {
    expect(parseCommandLine(cli(), ["lock", "n", "--", "sh", "-c", "x"]).args).toEqual(["n", ["sh", "-c", "x"]]);
    const p = parseCommandLine(cli(), ["cluster", "n.conf", "--", "--snapshot-entries", "5"]);
    expect(p.args).toEqual(["n.conf"]);
    expect(p.options["--"]).toEqual(["--snapshot-entries", "5"]);
  });
});
