// The client library's paged range against a scripted server: pages are read at the first page's
// revision and joined; a later page that lost that revision makes the read start over.
import { afterEach, describe, expect, test } from "bun:test";
import { RaftKvClient, toBytes, toText } from "../../src/client/client";
import type { RangeRequest, RangeResult } from "../../src/kv/types";
import { listenFrames, type FrameListener } from "../../src/net";
import type { ResponseFrame } from "../../src/protocol";

let server: FrameListener | null = null;
afterEach(() => {
  server?.stop();
  server = null;
});

/** A node that answers range requests with `answer`, recording each request. */
function scriptedNode(answer: (req: RangeRequest, n: number) => ResponseFrame | Omit<RangeResult, "op">): { requests: RangeRequest[]; endpoint: string } {
  const requests: RangeRequest[] = [];
  server = listenFrames({
    hostname: "127.0.0.1",
    port: 0,
    onFrame: (conn, value) => {
      const req = value as { id: number; op: string; range: RangeRequest };
      requests.push(req.range);
      const a = answer(req.range, requests.length);
      conn.send("k" in a ? { ...a, id: req.id } : { k: "res", id: req.id, ok: true, result: { op: "range", ...a } });
    },
  });
  return { requests, endpoint: `127.0.0.1:${server.port}` };
}

const kv = (key: string) => ({ key: toBytes(key), value: toBytes("v"), createRevision: 1, modRevision: 1, version: 1, lease: 0 });

describe("paged range in the client library", () => {
  test("later pages are asked from nextKey at the first page's revision, within the limit, and joined", async () => {
    const node = scriptedNode((req, n) =>
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
    const node = scriptedNode((_req, n) => {
      if (n === 2) return { k: "res", id: 0, ok: false, code: "COMPACTED", message: "revision 9 is compacted" };
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
