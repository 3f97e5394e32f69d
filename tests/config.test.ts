import { describe, expect, test } from "bun:test";
import { ConfigError, loadNodesConf, parseEndpoint, parseNodesConf } from "../src/config";
import { fromWire, parseMessage, toWire } from "../src/raft/wire";

describe("nodes.conf", () => {
  test("parses ids, hosts and ports, skipping comments and blank lines", () => {
    const nodes = parseNodesConf("# cluster\n0 127.0.0.1 7001\n\n1 10.0.0.2 7002  # second\n2 [::1] 7003\n");
    expect(nodes).toEqual([
      { id: 0, host: "127.0.0.1", port: 7001 },
      { id: 1, host: "10.0.0.2", port: 7002 },
      { id: 2, host: "::1", port: 7003 },
    ]);
  });

  test("a missing or unreadable nodes.conf is said plainly, not as a raw ENOENT", () => {
    expect(() => loadNodesConf("/nonexistent/nodes.conf")).toThrow("cannot read /nonexistent/nodes.conf: no such file");
    expect(() => loadNodesConf("/")).toThrow("cannot read /: it is a directory");
    expect(() => loadNodesConf("/nonexistent/nodes.conf")).not.toThrow(/ENOENT/);
  });

  test("a wrong line is reported with its file and line number", () => {
    expect(() => parseNodesConf("0 127.0.0.1 7001\n1 127.0.0.1\n", "n.conf")).toThrow("n.conf:2: expected");
    expect(() => parseNodesConf("x 127.0.0.1 7001\n")).toThrow(/:1: node id must be/);
    expect(() => parseNodesConf("0 127.0.0.1 70000\n")).toThrow(/:1: port must be 1-65535/);
    expect(() => parseNodesConf("0 a 1\n0 b 2\n")).toThrow(/:2: node id 0 is listed twice/);
    expect(() => parseNodesConf("0 a 1\n1 a 1\n")).toThrow(/:2: a:1 is already node 0/);
    expect(() => parseNodesConf("# nothing\n")).toThrow(ConfigError);
  });

  test("endpoints", () => {
    expect(parseEndpoint("127.0.0.1:7001")).toEqual({ host: "127.0.0.1", port: 7001 });
    expect(parseEndpoint("[::1]:7001")).toEqual({ host: "::1", port: 7001 });
    expect(() => parseEndpoint("nohost")).toThrow(/expected host:port/);
  });
});

describe("raft messages from the network", () => {
  const app = { type: "app", from: 1, to: 2, term: 3, prevIndex: 4, prevTerm: 3, commit: 4, readRound: 0, entries: [{ index: 5, term: 3, data: new Uint8Array(1) }] };
  test("a well-formed message passes", () => {
    expect(typeof parseMessage(app)).toBe("object");
  });
  test("appends travel with implied indexes and come back whole", () => {
    const wire = toWire(app as never) as { entries: unknown[] };
    expect(wire.entries[0]).toEqual([3, new Uint8Array(1)]);
    expect(parseMessage(fromWire(wire))).toEqual(app as never);
  });
  test("malformed messages are refused with a reason, never reach the core", () => {
    expect(parseMessage(null)).toBe("not an object");
    expect(parseMessage({ ...app, term: -1 })).toBe("bad from/to/term");
    expect(parseMessage({ ...app, type: "bogus" })).toMatch(/unknown message type/);
    expect(parseMessage({ ...app, entries: [{ index: 7, term: 3, data: new Uint8Array(1) }] })).toMatch(/entry 0 has index 7, expected 5/);
    expect(parseMessage({ ...app, entries: [{ index: 5, term: 9, data: new Uint8Array(1) }] })).toMatch(/entry term above message term/);
    expect(parseMessage({ ...app, entries: [{ index: 5, term: 3, data: "x" }] })).toMatch(/data is not bytes/);
    expect(parseMessage({ type: "vote", from: 1, to: 2, term: 1, preVote: "yes", lastLogIndex: 0, lastLogTerm: 0 })).toBe("bad vote");
  });
});
