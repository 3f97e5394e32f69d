import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { clusterIdOf, IdentityError, KnownPeers, loadOrCreateIdentity, writeIdentity } from "../../src/storage/identity";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "raftkv-identity-"));
  dirs.push(d);
  return d;
}
afterEach(() => {
  while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true });
});

const nodes = [
  { id: 0, host: "127.0.0.1", port: 7001 },
  { id: 1, host: "127.0.0.1", port: 7002 },
  { id: 2, host: "127.0.0.1", port: 7003 },
];

describe("node identity", () => {
  test("the cluster id depends on the membership, not on the order of lines", () => {
    expect(clusterIdOf([...nodes].reverse())).toBe(clusterIdOf(nodes));
    expect(clusterIdOf([...nodes.slice(0, 2), { id: 2, host: "127.0.0.1", port: 7004 }])).not.toBe(clusterIdOf(nodes));
  });

  test("first start records an identity; later starts read the same one", () => {
    const dir = tempDir();
    const first = loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes), nodeId: 0, join: false });
    expect(first.created).toBe(true);
    const again = loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes), nodeId: 0, join: false });
    expect(again).toEqual({ identity: first.identity, created: false });
    expect(JSON.parse(readFileSync(join(dir, "IDENTITY"), "utf8"))).toEqual(first.identity);
  });

  test("another node's data dir is refused, naming both ids", () => {
    const dir = tempDir();
    loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes), nodeId: 0, join: false });
    expect(() => loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes), nodeId: 2, join: false })).toThrow(/belongs to node 0, not node 2/);
  });

  test("a different nodes.conf is refused", () => {
    const dir = tempDir();
    loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes), nodeId: 0, join: false });
    const other = clusterIdOf(nodes.slice(0, 2));
    expect(() => loadOrCreateIdentity(dir, { conf: other, nodeId: 0, join: false })).toThrow(IdentityError);
    expect(() => loadOrCreateIdentity(dir, { conf: other, nodeId: 0, join: false })).toThrow(/nodes.conf differs/);
  });

  test("a joining node records that it joined, no cluster id yet; its restarts check no nodes.conf, with or without --join", () => {
    const dir = tempDir();
    const joined = loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes), nodeId: 2, join: true }).identity;
    expect(joined).toMatchObject({ clusterId: "", nodeId: 2, joined: true });
    expect(joined.conf).toBeUndefined();
    writeIdentity(dir, { ...joined, clusterId: "abc" });
    for (const join of [false, true]) {
      expect(loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes.slice(1)), nodeId: 2, join }).identity).toEqual({ ...joined, clusterId: "abc" });
    }
  });

  test("--join on a data dir created from nodes.conf changes nothing: the same nodes.conf is still required", () => {
    const dir = tempDir();
    const created = loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes), nodeId: 0, join: false }).identity;
    expect(loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes), nodeId: 0, join: true }).identity).toEqual(created);
    expect(() => loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes.slice(0, 2)), nodeId: 0, join: true })).toThrow(/nodes.conf differs.*--join does not change that/);
  });

  test("an IDENTITY written before `conf` existed: its cluster id is the nodes.conf digest", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "IDENTITY"), JSON.stringify({ clusterId: clusterIdOf(nodes), nodeId: 1, incarnation: "i" }));
    expect(loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes), nodeId: 1, join: false }).identity.conf).toBe(clusterIdOf(nodes));
    expect(() => loadOrCreateIdentity(dir, { conf: clusterIdOf(nodes.slice(1)), nodeId: 1, join: false })).toThrow(/nodes.conf differs/);
  });

  test("a wiped data dir draws a new incarnation", () => {
    const dir = tempDir();
    const before = loadOrCreateIdentity(dir, { conf: "c", nodeId: 1, join: false }).identity.incarnation;
    rmSync(join(dir, "IDENTITY"));
    expect(loadOrCreateIdentity(dir, { conf: "c", nodeId: 1, join: false }).identity.incarnation).not.toBe(before);
  });

  test("known peers survive a restart", () => {
    const dir = tempDir();
    const peers = new KnownPeers(dir);
    expect(peers.get(1)).toBeUndefined();
    peers.record(1, "abc");
    peers.record(2, "def");
    const reopened = new KnownPeers(dir);
    expect(reopened.get(1)).toBe("abc");
    expect(reopened.get(2)).toBe("def");
  });
});
