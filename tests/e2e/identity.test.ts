// A node knows who it is (issue 8, bug 2): its data dir records the cluster id, its node id and an
// incarnation; peers remember the incarnation they first saw for each member. A wiped data dir is
// refused instead of rejoining with a forgotten term, vote and log.
import { afterEach, describe, expect, test } from "bun:test";
import { cpSync, rmSync, writeFileSync } from "node:fs";
import { toText } from "../../src/client/client";
import { TestCluster, waitFor } from "./harness";

const clusters: TestCluster[] = [];
afterEach(async () => {
  while (clusters.length) await clusters.pop()!.cleanup();
});

function cluster(): TestCluster {
  const c = new TestCluster();
  clusters.push(c);
  return c;
}

const REPLACE_ADVICE = /member remove 2.*member add.*--join/;

describe("node identity", () => {
  test("a node whose data dir was wiped is refused with how to replace it; the cluster keeps serving", async () => {
    const c = cluster();
    c.startAll();
    await c.waitForLeader();
    const client = c.client();
    await client.put("k", "v1");
    await waitFor("node 2 to have the write", async () => (await c.statuses()).find((s) => s.id === 2)?.appliedIndex! >= 2);
    await c.kill(2);
    rmSync(c.dataDir(2), { recursive: true, force: true });
    const p = c.start(2);
    expect(await p.exited).toBe(2);
    await c.kill(2);
    expect(c.logs(2)).toContain("refusing to run");
    expect(c.logs(2)).toMatch(REPLACE_ADVICE);
    expect(c.logs(0) + c.logs(1)).toMatch(/refused a connection.*knows node 2 as incarnation/);
    expect((await client.put("k", "v2")).revision).toBeGreaterThan(0);
    expect(toText((await client.get("k"))!.value)).toBe("v2");
    client.close();
  });

  test("a wiped node cannot vote: it does not help a stale node win without an acknowledged write", async () => {
    const c = cluster();
    c.startAll();
    await c.waitForLeader();
    const client = c.client();
    await client.put("before", "1");
    await waitFor("every node to have the first write", async () => (await c.statuses()).every((s) => s.appliedIndex! >= 2));
    // Node 2 falls behind; "k" is acknowledged by nodes 0 and 1 only.
    await c.kill(2);
    await client.put("k", "acknowledged");
    client.close();
    await c.kill(0);
    await c.kill(1);
    // Node 1 loses its disk. With node 0 down, only node 2 (which lacks "k") and the wiped node 1 run:
    // if node 1 could vote, node 2 would lead and "k" would be gone.
    rmSync(c.dataDir(1), { recursive: true, force: true });
    c.start(2);
    const wiped = c.start(1);
    expect(await wiped.exited).toBe(2);
    await c.kill(1);
    expect(c.logs(1)).toMatch(/refusing to run.*knows node 1 as incarnation/);
    const st = await c.statuses();
    expect(st.find((s) => s.id === 2)?.role).not.toBe("leader");
    // Node 0 comes back: 0 and 2 elect a leader that has "k".
    c.start(0);
    await c.waitForLeader();
    const after = c.client();
    expect(toText((await after.get("k"))!.value)).toBe("acknowledged");
    after.close();
  });

  test("a node started with a nodes.conf other than its cluster's is refused", async () => {
    const c = cluster();
    c.startAll();
    await c.waitForLeader();
    await c.stopAll();
    // The same cluster's data dirs with a nodes.conf that lists another port for node 2.
    writeFileSync(c.conf, c.ports.map((p, i) => `${i} 127.0.0.1 ${i === 2 ? p + 1 : p}`).join("\n") + "\n");
    const otherConf = c.start(0);
    expect(await otherConf.exited).not.toBe(0);
    await c.kill(0);
    expect(c.logs(0)).toContain("the nodes.conf differs from the one the cluster was created with");
  });

  test("a node started for the first time after the others joins normally", async () => {
    const c = cluster();
    c.start(0);
    c.start(1);
    await c.waitForLeader();
    const client = c.client();
    await client.put("early", "1");
    c.start(2);
    await waitFor("the late node to apply the write", async () => (await c.statuses()).find((s) => s.id === 2)?.appliedIndex! >= 2);
    expect(c.logs(0) + c.logs(1)).toContain("recorded a peer's incarnation");
    client.close();
  });

  test("serve 2 on node 0's data dir is refused", async () => {
    const c = cluster();
    c.startAll();
    await c.waitForLeader();
    await c.kill(2);
    rmSync(c.dataDir(2), { recursive: true, force: true });
    cpSync(c.dataDir(0), c.dataDir(2), { recursive: true, filter: (src) => !src.endsWith("LOCK") });
    const p = c.start(2);
    expect(await p.exited).not.toBe(0);
    await c.kill(2);
    expect(c.logs(2)).toContain("belongs to node 0, not node 2");
  });
});
