// The client library's paged range against a scripted server: pages are read at the first page's
// revision and joined; a later page that lost that revision makes the read start over.
import { describe, expect, test } from "bun:test";
import { RaftKvClient, toBytes, toText } from "../../src/client/client";
import type { RangeRequest, RangeResult } from "../../src/kv/types";
import { scriptedNode, type Answer } from "./helpers";

/** A node that answers range requests with `answer` (a result, or an error answer); `requests` holds their ranges. */
function rangeNode(answer: (req: RangeRequest, n: number) => Answer | Omit<RangeResult, "op">) {
  const node = scriptedNode((req, n) => {
    const a = answer(req.range as RangeRequest, n);
    return "ok" in a ? a : { ok: true, result: { op: "range", ...a } };
  });
  return { endpoint: node.endpoint, get requests() { return node.requests.map((r) => r.range as RangeRequest); } };
}

const kv = (key: string) => ({ key: toBytes(key), value: toBytes("v"), createRevision: 1, modRevision: 1, version: 1, lease: 0 });

describe("paged range in the client library", () => {
  test("later pages are asked from nextKey at the first page's revision, within the limit, and joined", async () => {
    const node = rangeNode((req, n) =>
      n === 1
        ? { revision: 9, kvs: [kv("p/a"), kv("p/b")], count: 5, more: true, nextKey: toBytes("p/c") }
        : { revision: 9, kvs: [kv("p/c"), kv("p/d")], count: 3, more: true, nextKey: toBytes("p/e") },
    );
    const client = new RaftKvClient({ endpoints: [node.endpoint] });
    const r = await client.range({ key: toBytes("p/"), prefix: true, limit: 4 });
    client.close();
    expect(r.kvs.map((x) => toText(x.key))).toEqual(["p/a", "p/b", "p/c", "p/d"]);
    expect(r).toMatchObject({ revision: 9, count: 5, more: true });
    expect(node.requests).toHaveLength(2);
    expect(node.requests[1]).toMatchObject({ key: toBytes("p/c"), rangeEnd: toBytes("p0"), revision: 9, limit: 2 });
  });

  test("a later page that lost the first page's revision restarts the read from the beginning", async () => {
    const node = rangeNode((_req, n) => {
      if (n === 2) return { ok: false, code: "COMPACTED", message: "revision 9 is compacted" };
      if (n === 1 || n === 3) return { revision: n === 1 ? 9 : 12, kvs: [kv("p/a")], count: 2, more: true, nextKey: toBytes("p/b") };
      return { revision: 12, kvs: [kv("p/b")], count: 1, more: false };
    });
    const client = new RaftKvClient({ endpoints: [node.endpoint] });
    const r = await client.range({ key: toBytes("p/"), prefix: true });
    client.close();
    expect(r.kvs.map((x) => toText(x.key))).toEqual(["p/a", "p/b"]);
    expect(r.revision).toBe(12);
    expect(node.requests.map((q) => q.revision)).toEqual([undefined, 9, undefined, 12]);
  });
});
