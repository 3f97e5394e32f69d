// The connection gate of a node that joins: nothing admitted before a member's welcome, the welcome's
// cluster id recorded, and another cluster's nodes.conf detected whichever of the two clues comes first.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FramedConn } from "../../src/net";
import { ConnectionGate, REFUSED_CLUSTER, REFUSED_JOIN_PENDING, REFUSED_NOT_A_PEER } from "../../src/server/gate";
import { MAX_MEMBERS } from "../../src/raft/confchange";
import { Logger } from "../../src/server/log";
import { KnownPeers, type NodeIdentity } from "../../src/storage/identity";

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true });
});

/** A connection that records what the gate sends on it. */
function fakeConn(): FramedConn & { sent: unknown[] } {
  const sent: unknown[] = [];
  return { sent, peerId: null, remote: "127.0.0.1:1", certificate: undefined, send: (v: unknown) => sent.push(v) > 0, close: () => {}, exemptFromPartialFrameBudget: () => {} } as unknown as FramedConn & { sent: unknown[] };
}

function gate(clusterId: string) {
  const dir = mkdtempSync(join(tmpdir(), "raftkv-gate-"));
  dirs.push(dir);
  const self: NodeIdentity = { clusterId, nodeId: 3, incarnation: "me", ...(clusterId === "" ? { joined: true } : { conf: clusterId }) };
  const recorded: NodeIdentity[] = [];
  const conflicts: string[] = [];
  const g = new ConnectionGate(
    self,
    {
      isMember: (id) => id <= 4,
      memberAddrs: () => [{ id: 0, host: "10.0.0.1", port: 7000 }],
      recordIdentity: (identity) => recorded.push(identity),
      joinConflict: (message) => conflicts.push(message),
    },
    new KnownPeers(dir),
    new Logger(3, () => 0, "error", "text", () => {}),
  );
  return { g, recorded, conflicts };
}

const hello = (from: number, cluster: string) => ({ k: "hello" as const, from, cluster, incarnation: `inc-${from}` });
const refusal = (conn: { sent: unknown[] }) => conn.sent[0] as { k: string; code: string; message: string; cluster?: string };

describe("connection gate: joining", () => {
  test("a member admits a joining node's hello and welcomes it with its cluster id and members", () => {
    const { g } = gate("aaaa");
    const conn = fakeConn();
    g.onHello(conn, hello(4, ""));
    expect(conn.peerId).toBe(4);
    expect(conn.sent).toEqual([{ k: "welcome", cluster: "aaaa", members: [{ id: 0, addr: "10.0.0.1:7000" }] }]);
    const other = fakeConn();
    g.onHello(other, hello(2, "bbbb"));
    expect(other.peerId).toBeNull();
    expect(refusal(other)).toMatchObject({ code: REFUSED_CLUSTER, cluster: "aaaa" });
  });

  test("a joining node admits no one before its welcome, then records the cluster id and admits its members only", () => {
    const { g, recorded } = gate("");
    const early = fakeConn();
    g.onHello(early, hello(0, "aaaa"));
    expect(early.peerId).toBeNull();
    expect(refusal(early).code).toBe(REFUSED_JOIN_PENDING);
    expect(g.onWelcome(1, { k: "welcome", cluster: "aaaa", members: [] })).toEqual([]);
    expect(recorded).toEqual([{ clusterId: "aaaa", nodeId: 3, incarnation: "me", joined: true }]);
    expect(g.hello().cluster).toBe("aaaa");
    const later = fakeConn();
    g.onHello(later, hello(0, "aaaa"));
    expect(later.peerId).toBe(0);
    const foreign = fakeConn();
    g.onHello(foreign, hello(1, "bbbb"));
    expect(refusal(foreign).code).toBe(REFUSED_CLUSTER);
    expect(g.onWelcome(2, { k: "welcome", cluster: "bbbb", members: [] })).toBeNull();
  });

  for (const order of ["contact first", "denial first"]) {
    test(`contacted by cluster A while nodes.conf's member of cluster B denies it: a conflict (${order})`, () => {
      const { g, conflicts } = gate("");
      const conn = fakeConn();
      const contact = () => g.onHello(conn, hello(0, "aaaa"));
      const denial = () => g.refusedBy(1, REFUSED_NOT_A_PEER, "bbbb");
      if (order === "contact first") {
        contact();
        expect(refusal(conn).code).toBe(REFUSED_JOIN_PENDING);
        denial();
      } else {
        denial();
        contact();
        expect(refusal(conn).code).toBe(REFUSED_CLUSTER);
      }
      expect(conflicts).toHaveLength(1);
      expect(conflicts[0]).toMatch(/added to cluster aaaa .* belongs to cluster bbbb, which does not have node 3/);
    });
  }

  test("a joining node under an id the cluster knew before is told to take a new id", () => {
    const { g } = gate("aaaa");
    g.onHello(fakeConn(), hello(2, "aaaa"));
    const conn = fakeConn();
    g.onHello(conn, { ...hello(2, ""), incarnation: "new" });
    expect(conn.peerId).toBeNull();
    expect(refusal(conn).message).toMatch(/already knew another node 2 .*needs an id this cluster never used.*member add NEW_ID/);
  });

  test("a denial from the cluster that contacted it (a member that has not applied the add yet) is no conflict", () => {
    const { g, conflicts } = gate("");
    g.refusedBy(1, REFUSED_NOT_A_PEER, "aaaa");
    g.onHello(fakeConn(), hello(0, "aaaa"));
    expect(conflicts).toEqual([]);
  });

  test("a cluster id over 64 characters from a peer is refused, not kept while joining", () => {
    const { g, conflicts } = gate("");
    const long = "a".repeat(1 << 20);
    const conn = fakeConn();
    g.onHello(conn, hello(0, long));
    expect(refusal(conn).code).toBe(REFUSED_NOT_A_PEER);
    g.refusedBy(1, REFUSED_NOT_A_PEER, "b".repeat(1 << 20));
    g.onHello(fakeConn(), hello(0, "aaaa"));
    g.refusedBy(2, REFUSED_NOT_A_PEER, "bbbb");
    // Only the two bounded claims count: contact aaaa, denial bbbb.
    expect(conflicts).toHaveLength(1);
    expect(conflicts[0]).toMatch(/added to cluster aaaa .* belongs to cluster bbbb/);
  });

  test("a welcome's members: valid ones only, each id once, not this node, and no list longer than a cluster can be", () => {
    const { g } = gate("");
    const members = [
      { id: 0, addr: "10.0.0.1:7000" },
      { id: 0, addr: "10.0.0.9:7000" },
      { id: 3, addr: "10.0.0.3:7000" },
      { id: -1, addr: "10.0.0.4:7000" },
      { id: 1, addr: "no port" },
      null,
      { id: 2, addr: "10.0.0.2:7002" },
    ];
    expect(g.onWelcome(1, { k: "welcome", cluster: "aaaa", members: members as never })).toEqual([
      { id: 0, host: "10.0.0.1", port: 7000 },
      { id: 2, host: "10.0.0.2", port: 7002 },
    ]);
    const huge = Array.from({ length: MAX_MEMBERS + 1 }, (_, i) => ({ id: 100 + i, addr: `10.1.${i >> 8}.${i & 255}:7000` }));
    expect(g.onWelcome(1, { k: "welcome", cluster: "aaaa", members: huge })).toEqual([]);
  });
});
