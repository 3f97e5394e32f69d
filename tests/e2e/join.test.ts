// Cluster identity around `serve --join` and `snapshot restore`: a joined node records the id of the
// cluster it joined (and restarts without --join), a node given another cluster's nodes.conf is refused
// on both sides, and a restored cluster has an id of its own even with the same nodes.conf.
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, TestCluster, waitFor } from "./harness";

const clusters: TestCluster[] = [];
afterEach(async () => {
  for (const c of clusters.splice(0)) await c.cleanup();
});

function cluster(nodes: number, extraArgs: string[] = []): TestCluster {
  const c = new TestCluster({ nodes, extraArgs });
  clusters.push(c);
  return c;
}

/** nodes.conf listing nodes 0..n-1 of `c` (a joining node's config lists the members and itself). */
function writeConf(c: TestCluster, n: number): void {
  writeFileSync(c.conf, c.ports.slice(0, n).map((p, i) => `${i} 127.0.0.1 ${p}`).join("\n") + "\n");
}

/** Waits until node `id` has applied everything the leader had committed when called. */
async function caughtUp(c: TestCluster, id: number, what: string): Promise<void> {
  const target = await waitFor("a leader's commit index", async () => (await c.statuses()).find((s) => s.role === "leader")?.commitIndex);
  await waitFor(what, async () => ((await c.statuses()).find((s) => s.id === id)?.appliedIndex ?? 0) >= target, 30000);
}

function clusterIdIn(dataDir: string): string {
  return (JSON.parse(readFileSync(join(dataDir, "IDENTITY"), "utf8")) as { clusterId: string }).clusterId;
}

describe("cluster identity: join and restore", () => {
  test("a node that joined records its cluster's id and restarts without --join (and with it)", async () => {
    const c = cluster(4);
    writeConf(c, 3);
    for (const id of [0, 1, 2]) c.start(id);
    await c.waitForLeader(30000);
    const clusterId = clusterIdIn(c.dataDir(0));
    expect((await c.cli(["member", "add", "3", c.endpoint(3)], { timeoutMs: 20000 })).stderr).toBe("");
    writeConf(c, 4);
    c.start(3, ["--join"]);
    const client = c.client(30000);
    await client.put("a", "1");
    await caughtUp(c, 3, "node 3 to apply the first write");
    // Restarted as an operator would, without --join (and then with it: harmless).
    for (const args of [[], ["--join"]]) {
      await c.kill(3);
      c.start(3, args);
      await client.put("b", String(args.length));
      await caughtUp(c, 3, `node 3 restarted with [${args}] to catch up`);
    }
    expect(clusterIdIn(c.dataDir(3))).toBe(clusterId);
    expect(c.logs(0) + c.logs(1) + c.logs(2) + c.logs(3)).not.toContain("CLUSTER_MISMATCH");
    client.close();
  }, 120000);

  test("a joining node whose nodes.conf names only a follower is reached by the leader and catches up through a snapshot", async () => {
    const c = cluster(4, ["--snapshot-entries", "50"]);
    writeConf(c, 3);
    for (const id of [0, 1, 2]) c.start(id);
    const leader = await c.waitForLeader(30000);
    const client = c.client(30000);
    for (let i = 0; i < 200; i += 20) await Promise.all(Array.from({ length: 20 }, (_, j) => client.put(`k${i + j}`, "v")));
    await waitFor("the leader to compact its log", async () => ((await c.statuses()).find((s) => s.id === leader)?.snapshotIndex ?? 0) > 0);
    expect((await c.cli(["member", "add", "3", c.endpoint(3)], { timeoutMs: 20000 })).stderr).toBe("");
    const follower = [0, 1, 2].find((id) => id !== leader)!;
    writeFileSync(c.conf, `${follower} 127.0.0.1 ${c.ports[follower]}\n3 127.0.0.1 ${c.ports[3]}\n`);
    c.start(3, ["--join"]);
    await caughtUp(c, 3, "node 3 to catch up");
    expect(c.logs(3)).toContain("received snapshot");
    client.close();
  }, 120000);

  test("a node added to one cluster but started with another cluster's nodes.conf is refused on both sides", async () => {
    const a = cluster(4);
    writeConf(a, 3);
    for (const id of [0, 1, 2]) a.start(id);
    const b = cluster(3);
    b.startAll();
    await a.waitForLeader(30000);
    await b.waitForLeader(30000);
    expect((await a.cli(["member", "add", "3", a.endpoint(3)], { timeoutMs: 20000 })).stderr).toBe("");
    // Node 3's nodes.conf lists cluster b's members (and node 3 at the address cluster a added).
    writeFileSync(a.conf, [...b.ports.map((p, i) => `${i} 127.0.0.1 ${p}`), `3 127.0.0.1 ${a.ports[3]}`].join("\n") + "\n");
    const p = a.start(3, ["--join"]);
    expect(await waitFor("node 3 to refuse to run", () => p.exitCode ?? undefined, 30000)).toBe(2);
    await a.kill(3);
    const aId = clusterIdIn(a.dataDir(0));
    const bId = clusterIdIn(b.dataDir(0));
    expect(a.logs(3)).toContain("refusing to run");
    expect(a.logs(3)).toContain(aId);
    expect(a.logs(3)).toContain(bId);
    // Cluster b says node 3 is none of its members; cluster a's leader was refused by node 3.
    expect(b.logs(0) + b.logs(1) + b.logs(2)).toMatch(/refused a connection.*hello from 3/);
    expect(a.logs(0) + a.logs(1) + a.logs(2)).toMatch(/a peer refused this node's connection.*peer=3|"peer":3.*a peer refused/);
  }, 120000);

  test("a cluster restored with the same nodes.conf has a new cluster id: nodes of the old one refuse it", async () => {
    const c = cluster(3);
    c.start(0);
    c.start(1);
    await c.waitForLeader(30000);
    const client = c.client(30000);
    await client.put("k", "v");
    client.close();
    const file = join(c.dir, "backup.rkv");
    expect((await c.cli(["snapshot", "save", file], { timeoutMs: 20000 })).code).toBe(0);
    // Node 2 never ran in the old cluster; restore it (same nodes.conf) and start it beside nodes 0 and 1.
    const restored = Bun.spawnSync([BIN, "snapshot", "restore", file, "--config", c.conf, "--data-dir", c.dir, "--id", "2"]);
    expect(restored.exitCode).toBe(0);
    expect(clusterIdIn(c.dataDir(2))).not.toBe(clusterIdIn(c.dataDir(0)));
    c.start(2);
    await waitFor("both sides to refuse", () => /CLUSTER_MISMATCH|belongs to cluster/.test(c.logs(2)) && /refused a connection.*belongs to cluster/.test(c.logs(0) + c.logs(1)), 20000);
  }, 60000);
});
