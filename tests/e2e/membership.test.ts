// Membership changes, leadership transfer and SIGTERM hand-off on real processes, under a steady write
// load: no acknowledged write is lost.
import { afterEach, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { TestCluster, waitFor } from "./harness";
import type { RaftKvClient } from "../../src/client/client";
import type { MemberList } from "../../src/protocol";

const clusters: TestCluster[] = [];
afterEach(async () => {
  for (const c of clusters.splice(0)) await c.cleanup();
});

/** A cluster of `total` ports of which the first `initial` nodes form the cluster (nodes.conf lists only them). */
function cluster(initial: number, total: number): TestCluster {
  const c = new TestCluster({ nodes: total });
  clusters.push(c);
  writeConf(c, initial);
  for (let i = 0; i < initial; i++) c.start(i);
  return c;
}

/** nodes.conf listing nodes 0..n-1 (a joining node's config lists the members and itself). */
function writeConf(c: TestCluster, n: number): void {
  writeFileSync(c.conf, c.ports.slice(0, n).map((p, i) => `${i} 127.0.0.1 ${p}`).join("\n") + "\n");
}

/** Writes keys w0, w1, ... one at a time until stopped; returns the acknowledged ones. */
function writer(client: RaftKvClient) {
  const acked: string[] = [];
  let stop = false;
  const done = (async () => {
    for (let i = 0; !stop; i++) {
      try {
        await client.put(`w${i}`, `v${i}`);
        acked.push(`w${i}`);
      } catch {
        // unavailable for a moment: try the next key
      }
    }
  })();
  return {
    acked,
    async stop() {
      stop = true;
      await done;
      return acked;
    },
  };
}

async function members(c: TestCluster): Promise<MemberList> {
  const r = await c.cli(["member", "list", "--json"], { timeoutMs: 10000 });
  expect(r.stderr).toBe("");
  return JSON.parse(r.stdout) as MemberList;
}

/** A cluster as cluster() makes, its leader, and a writer that has had some writes acknowledged. */
async function underWrites(initial: number, total: number) {
  const c = cluster(initial, total);
  const leader = await c.waitForLeader(30000);
  const client = c.client(30000);
  const w = writer(client);
  await waitFor("some writes", () => w.acked.length > 5, 30000);
  return { c, leader, client, w };
}

/** Stops the writer and checks that every acknowledged write is there. */
async function expectAllAcked(client: RaftKvClient, w: ReturnType<typeof writer>): Promise<string[]> {
  const acked = await w.stop();
  for (const k of acked) expect((await client.get(k))?.value).toBeDefined();
  client.close();
  return acked;
}

/** Waits until learner `id` is a voter (`member promote` is refused until it has caught up). */
async function promoted(c: TestCluster, id: number): Promise<void> {
  const voter = async () => (await c.cli(["member", "promote", String(id)], { timeoutMs: 5000 })).code === 0 || (await members(c)).members.find((m) => m.id === id)?.role === "voter";
  await waitFor(`node ${id} promoted`, voter, 60000, 300);
}

describe("membership e2e", () => {
  test("grow 3 -> 5 (add as learners with --join, promote) and shrink back to 3 under writes; no acknowledged write lost", async () => {
    const c = cluster(3, 5);
    await c.waitForLeader(30000);
    const client = c.client(30000);
    const w = writer(client);
    for (const id of [3, 4]) {
      const add = await c.cli(["member", "add", String(id), c.endpoint(id)], { timeoutMs: 20000 });
      expect(add.stderr).toBe("");
      expect((await members(c)).members.find((m) => m.id === id)?.role).toBe("learner");
      writeConf(c, id + 1);
      c.start(id, ["--join"]);
      const promote = await c.cli(["member", "promote", String(id)], { timeoutMs: 5000 });
      // Refused until caught up, or accepted if it already has: either way the message says which.
      if (promote.code !== 0) expect(promote.stderr).toMatch(/caught up|probed|snapshot/);
      await promoted(c, id);
    }
    let list = await members(c);
    expect(list.members.filter((m) => m.role === "voter").map((m) => m.id).sort()).toEqual([0, 1, 2, 3, 4]);
    // Shrink back to 3: remove two of the original voters (one of them may be the leader).
    for (const id of [1, 2]) {
      const r = await c.cli(["member", "remove", String(id)], { timeoutMs: 20000 });
      expect(r.stderr).toBe("");
      await waitFor(`node ${id} removed`, async () => !(await members(c)).members.some((m) => m.id === id), 30000, 300);
    }
    list = await members(c);
    expect(list.members.map((m) => m.id).sort()).toEqual([0, 3, 4]);
    expect((await expectAllAcked(client, w)).length).toBeGreaterThan(10);
  }, 240000);

  test("replace a killed node by a new id with an empty disk (remove, add, --join, promote); the new node counts toward quorum", async () => {
    const { c, leader, client, w } = await underWrites(3, 4);
    const dead = (leader + 1) % 3;
    const survivor = [0, 1, 2].find((id) => id !== leader && id !== dead)!;
    await c.kill(dead); // the machine is gone, disk and all
    expect((await c.cli(["member", "remove", String(dead)], { timeoutMs: 20000 })).stderr).toBe("");
    expect((await c.cli(["member", "add", "3", c.endpoint(3)], { timeoutMs: 20000 })).stderr).toBe("");
    writeConf(c, 4); // the new machine's nodes.conf names the members and itself
    c.start(3, ["--join"]);
    await promoted(c, 3);
    const list = await members(c);
    expect(list.members.filter((m) => m.role === "voter").map((m) => m.id).sort()).toEqual([leader, survivor, 3].sort());
    // With one more original member gone, the new node is what makes the majority.
    await c.kill(survivor);
    const before = w.acked.length;
    await waitFor("writes with the new node in the majority", () => w.acked.length > before + 5, 30000);
    await expectAllAcked(client, w);
  }, 180000);

  test("leader transfer to a chosen node; member list shows lag; writes continue", async () => {
    const { c, leader, client, w } = await underWrites(3, 3);
    const target = (leader + 1) % 3;
    const r = await c.cli(["leader", "transfer", String(target)], { timeoutMs: 10000 });
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain(`node ${target} leads`);
    expect(await c.waitForLeader(30000)).toBe(target);
    const list = await members(c);
    expect(list.leader).toBe(target);
    expect(list.members.every((m) => m.role === "voter" && m.lag !== null)).toBe(true);
    const bad = await c.cli(["leader", "transfer", "9"], { timeoutMs: 5000 });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/not a voter/);
    await expectAllAcked(client, w);
  }, 120000);

  test("SIGTERM on the leader hands leadership over before the process exits", async () => {
    const { c, leader, client, w } = await underWrites(3, 3);
    await c.kill(leader, "SIGTERM");
    expect(c.logs(leader)).toMatch(/handed leadership over before stopping.*done=true|handed leadership over before stopping.*"done":true/);
    const next = await c.waitForLeader(30000);
    expect(next).not.toBe(leader);
    await expectAllAcked(client, w);
  }, 120000);
});
