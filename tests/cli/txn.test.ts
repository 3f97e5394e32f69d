import { describe, expect, test } from "bun:test";
import { parseTxn, TxnSyntaxError } from "../../src/cli/txn";

const td = new TextDecoder();

describe("txn text format", () => {
  test("parses guards, then and else", () => {
    const t = parseTxn(`
      # move the mode from blue to green
      if
        value(config/mode) = "blue"
        version(config/mode) > 2
        absent("config/lock")
      then
        put config/mode green
        del config/old --prefix
        get config/mode
      else
        get config/mode
    `);
    expect(t.compare.length).toBe(3);
    expect(t.compare[0]).toMatchObject({ target: "value", result: "equal" });
    expect(td.decode((t.compare[0] as { value: Uint8Array }).value)).toBe("blue");
    expect(t.compare[1]).toMatchObject({ target: "version", result: "greater", number: 2 });
    expect(t.compare[2]).toMatchObject({ target: "absent" });
    expect(t.success.map((o) => o.op)).toEqual(["put", "del", "range"]);
    expect(t.success[1]).toMatchObject({ prefix: true });
    expect(t.failure.map((o) => o.op)).toEqual(["range"]);
  });

  test("quoted strings keep spaces, escapes and keywords", () => {
    const t = parseTxn(`then\n  put "a key" "line\\none"\n  put "if" x`);
    expect(td.decode(t.success[0]!.key)).toBe("a key");
    expect(td.decode((t.success[0] as { value: Uint8Array }).value)).toBe("line\none");
    expect(td.decode(t.success[1]!.key)).toBe("if");
  });

  test("errors name the line", () => {
    expect(() => parseTxn("if\n  value(k) ~ 3\nthen\n")).toThrow(/line 2: unknown operator ~/);
    expect(() => parseTxn("if\n  version(k) = x\nthen\n")).toThrow(/line 2: version compares with a number/);
    expect(() => parseTxn("put k v")).toThrow(/line 1: expected "if" or "then"/);
    expect(() => parseTxn("if\n  exists(k)\n")).toThrow(/needs a "then" section/);
    expect(() => parseTxn("then\nput k v\nif\n")).toThrow(TxnSyntaxError);
    expect(() => parseTxn('then\n  put "k v\n')).toThrow(/line 2: unterminated string/);
  });
});
