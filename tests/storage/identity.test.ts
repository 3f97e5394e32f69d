import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { clusterIdOf, IdentityError, KnownPeers, loadOrCreateIdentity } from "../../src/storage/identity";

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
    const first = loadOrCreateIdentity(dir, { clusterId: clusterIdOf(nodes), nodeId: 0 });
    expect(first.created).toBe(true);
    const again = loadOrCreateIdentity(dir, { clusterId: clusterIdOf(nodes), nodeId: 0 });
    expect(again).toEqual({ identity: first.identity, created: false });
    expect(JSON.parse(readFileSync(join(dir, "IDENTITY"), "utf8"))).toEqual(first.identity);
  });

  test("another node's data dir is refused, naming both ids", () => {
    const dir = tempDir();
    loadOrCreateIdentity(dir, { clusterId: clusterIdOf(nodes), nodeId: 0 });
    expect(() => loadOrCreateIdentity(dir, { clusterId: clusterIdOf(nodes), nodeId: 2 })).toThrow(/belongs to node 0, not node 2/);
  });

  test("a different nodes.conf is refused", () => {
    const dir = tempDir();
    loadOrCreateIdentity(dir, { clusterId: clusterIdOf(nodes), nodeId: 0 });
    const other = clusterIdOf(nodes.slice(0, 2));
    expect(() => loadOrCreateIdentity(dir, { clusterId: other, nodeId: 0 })).toThrow(IdentityError);
    expect(() => loadOrCreateIdentity(dir, { clusterId: other, nodeId: 0 })).toThrow(/nodes.conf differs/);
  });

  test("a wiped data dir draws a new incarnation", () => {
    const dir = tempDir();
    const before = loadOrCreateIdentity(dir, { clusterId: "c", nodeId: 1 }).identity.incarnation;
    rmSync(join(dir, "IDENTITY"));
    expect(loadOrCreateIdentity(dir, { clusterId: "c", nodeId: 1 }).identity.incarnation).not.toBe(before);
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
