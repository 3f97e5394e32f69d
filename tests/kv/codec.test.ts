import { describe, expect, test } from "bun:test";
import {
  KvError,
  MAX_KEY_BYTES,
  MAX_TXN_OPS,
  MAX_VALUE_BYTES,
  casCommand,
  decodeCommand,
  decodeLogCommand,
  encodeCommand,
  encodeLogCommand,
  extendAllLeasesCommand,
  leaseExpireCommand,
  validateCommand,
  type Command,
} from "../../src/kv";
import { cborEncode } from "../../src/kv/codec";
import { b, rng, randInt } from "./helpers";

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof KvError) return error.code;
    throw error;
  }
  throw new Error("expected a KvError");
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof KvError) return error.message;
    throw error;
  }
  throw new Error("expected a KvError");
}

describe("limits", () => {
  test("named limits have the documented values", () => {
    expect(MAX_KEY_BYTES).toBe(4096);
    expect(MAX_VALUE_BYTES).toBe(1048576);
    expect(MAX_TXN_OPS).toBe(128);
  });

  test("key of 4096 bytes is fine, 4097 is KEY_TOO_LARGE", () => {
    validateCommand({ op: "put", key: new Uint8Array(4096).fill(1), value: b("v") });
    const big = { op: "put", key: new Uint8Array(4097).fill(1), value: b("v") };
    expect(codeOf(() => validateCommand(big))).toBe("KEY_TOO_LARGE");
    expect(messageOf(() => validateCommand(big))).toBe("key of 4097 bytes exceeds the 4096-byte limit");
    expect(codeOf(() => validateCommand({ op: "del", key: new Uint8Array(4097) }))).toBe("KEY_TOO_LARGE");
    expect(
      codeOf(() => validateCommand({ op: "del", key: b("a"), rangeEnd: new Uint8Array(4097) })),
    ).toBe("KEY_TOO_LARGE");
  });

  test("value of 1 MiB is fine, 1 MiB + 1 is VALUE_TOO_LARGE", () => {
    validateCommand({ op: "put", key: b("k"), value: new Uint8Array(MAX_VALUE_BYTES) });
    const cmd = { op: "put", key: b("k"), value: new Uint8Array(MAX_VALUE_BYTES + 1) };
    expect(codeOf(() => validateCommand(cmd))).toBe("VALUE_TOO_LARGE");
    const two = { op: "put", key: b("k"), value: new Uint8Array(2000000) };
    expect(messageOf(() => validateCommand(two))).toBe("value of 2000000 bytes exceeds the 1048576-byte limit");
  });

  test("empty keys", () => {
    expect(codeOf(() => validateCommand({ op: "put", key: new Uint8Array(0), value: b("v") }))).toBe("EMPTY_KEY");
    expect(codeOf(() => validateCommand({ op: "del", key: new Uint8Array(0) }))).toBe("EMPTY_KEY");
    // allowed with prefix or rangeEnd
    validateCommand({ op: "del", key: new Uint8Array(0), prefix: true });
    validateCommand({ op: "del", key: new Uint8Array(0), rangeEnd: b("m") });
    const txn = { op: "txn", compare: [{ key: new Uint8Array(0), target: "exists" }], success: [], failure: [] };
    expect(codeOf(() => validateCommand(txn))).toBe("EMPTY_KEY");
  });

  test("txn limits apply to compares and to each branch", () => {
    const ops = (n: number) => Array.from({ length: n }, (_, i) => ({ op: "put", key: b(`k${i}`), value: b("v") }));
    validateCommand({ op: "txn", compare: [], success: ops(MAX_TXN_OPS), failure: ops(MAX_TXN_OPS) });
    const tooMany = { op: "txn", compare: [], success: ops(MAX_TXN_OPS + 1), failure: [] };
    expect(codeOf(() => validateCommand(tooMany))).toBe("TXN_TOO_LARGE");
    expect(messageOf(() => validateCommand(tooMany))).toBe("success has 129 ops; the limit is 128");
    const compares = Array.from({ length: MAX_TXN_OPS + 1 }, () => ({ key: b("a"), target: "exists" }));
    expect(codeOf(() => validateCommand({ op: "txn", compare: compares, success: [], failure: [] }))).toBe(
      "TXN_TOO_LARGE",
    );
    // a nested value too large names where it is
    const nested = {
      op: "txn",
      compare: [],
      success: [{ op: "put", key: b("a"), value: new Uint8Array(MAX_VALUE_BYTES + 1) }],
      failure: [],
    };
    expect(messageOf(() => validateCommand(nested))).toBe(
      "success[0].value of 1048577 bytes exceeds the 1048576-byte limit",
    );
  });

  test("shape errors are BAD_COMMAND", () => {
    const bad: unknown[] = [
      undefined,
      "put",
      [],
      { op: "nope" },
      { op: "put", key: b("k"), value: "string" },
      { op: "put", key: b("k"), value: b("v"), lease: 1.5 },
      { op: "del", key: b("k"), prefix: "yes" },
      { op: "del", key: b("k"), prefix: true, rangeEnd: b("z") },
      { op: "del", key: b("k"), rangeEnd: new Uint8Array(0) },
      { op: "txn", compare: [{ key: b("k"), target: "value", result: "equal" }], success: [], failure: [] },
      { op: "txn", compare: [{ key: b("k"), target: "version", result: "bigger", number: 1 }], success: [], failure: [] },
      { op: "txn", compare: [{ key: b("k"), target: "color" }], success: [], failure: [] },
      { op: "txn", compare: [], success: [{ op: "txn" }], failure: [] },
      { op: "txn", compare: [], success: [{ op: "range", key: b("k"), limit: -1 }], failure: [] },
      { op: "leaseGrant", id: 1, ttlMs: 0, now: 0 },
      { op: "leaseGrant", id: 1, ttlMs: 10 },
      { op: "leaseKeepAlive", id: 0, now: 0 },
      { op: "leaseRevoke", id: "1" },
      { op: "leaseExpire", ids: [1, 0], now: 5 },
      { op: "leaseRefreshAll", now: -1 },
      { op: "leaseRefreshAll", now: Number.NaN },
    ];
    for (const cmd of bad) {
      expect(codeOf(() => validateCommand(cmd))).toBe("BAD_COMMAND");
    }
  });
});

describe("wire form", () => {
  const samples: Command[] = [
    { op: "put", key: b("k"), value: b("v") },
    { op: "put", key: new Uint8Array([0, 255, 128]), value: new Uint8Array([1, 2, 3]), lease: 12 },
    { op: "del", key: b("k") },
    { op: "del", key: b("a"), rangeEnd: b("z") },
    { op: "del", key: new Uint8Array(0), prefix: true },
    casCommand(b("k"), "absent", b("v")),
    casCommand(b("k"), b("old"), b("new"), 3),
    {
      op: "txn",
      compare: [
        { key: b("k"), target: "mod", result: "less", number: 99 },
        { key: b("k"), target: "value", result: "not_equal", value: b("x") },
      ],
      success: [{ op: "range", key: b("p"), prefix: true, limit: 3, keysOnly: true }],
      failure: [{ op: "range", key: b("p"), rangeEnd: b("q"), countOnly: true }],
    },
    { op: "leaseGrant", id: 0, ttlMs: 5000, now: 1_700_000_000_000 },
    { op: "leaseRevoke", id: 4 },
    { op: "leaseKeepAlive", id: 4, now: 123.5 },
    leaseExpireCommand([1, 2, 3], 77),
    extendAllLeasesCommand(88),
  ];

  test("encodeCommand / decodeCommand round-trip", () => {
    for (const cmd of samples) {
      const decoded = decodeCommand(encodeCommand(cmd));
      expect(decoded).toEqual(cmd);
      // decoded byte strings are plain Uint8Arrays, not views into the input
      if (decoded.op === "put") expect(decoded.value.constructor).toBe(Uint8Array);
    }
  });

  test("encodeLogCommand / decodeLogCommand round-trip", () => {
    for (const cmd of samples) {
      expect(decodeLogCommand(encodeLogCommand({ cmd, now: 5 }))).toEqual({ cmd, now: 5 });
      expect(decodeLogCommand(encodeLogCommand({ cmd, clientId: "client-é", seq: 9, now: 6 }))).toEqual({
        cmd,
        clientId: "client-é",
        seq: 9,
        now: 6,
      });
    }
    expect(codeOf(() => encodeLogCommand({ cmd: samples[0]!, clientId: "c", now: 1 }))).toBe("BAD_COMMAND");
    expect(codeOf(() => encodeLogCommand({ cmd: samples[0]!, clientId: "", seq: 1, now: 1 }))).toBe("BAD_COMMAND");
  });

  test("junk bytes give BAD_COMMAND, never another exception", () => {
    const random = rng(42);
    expect(codeOf(() => decodeCommand(new Uint8Array(0)))).toBe("BAD_COMMAND");
    expect(codeOf(() => decodeCommand(new Uint8Array([0xff, 0x01])))).toBe("BAD_COMMAND");
    expect(codeOf(() => decodeCommand(cborEncode({ op: "put", key: "text", value: 1 })))).toBe("BAD_COMMAND");
    expect(codeOf(() => decodeLogCommand(cborEncode([1, 2, 3])))).toBe("BAD_COMMAND");
    const valid = encodeLogCommand({ cmd: samples[7]!, clientId: "abc", seq: 1, now: 1 });
    for (let i = 0; i < 2000; i++) {
      let bytes: Uint8Array;
      if (i % 2 === 0) {
        bytes = new Uint8Array(randInt(random, 40));
        for (let j = 0; j < bytes.length; j++) bytes[j] = randInt(random, 256);
      } else {
        // corrupt a valid entry: flip a byte or truncate it
        bytes = valid.slice(0, i % 4 === 1 ? valid.length : randInt(random, valid.length));
        if (bytes.length > 0) bytes[randInt(random, bytes.length)] ^= 1 + randInt(random, 255);
      }
      try {
        decodeLogCommand(bytes);
      } catch (error) {
        expect(error).toBeInstanceOf(KvError);
      }
    }
  });
});
