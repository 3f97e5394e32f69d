// The binary as a user runs it: three real processes on ephemeral ports.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { RaftKvError, toText } from "../../src/client/client";
import { dialFrames } from "../../src/net";
import { BIN, TestCluster, waitFor } from "./harness";

describe("a 3-node cluster of the compiled binary", () => {
  let c: TestCluster;

  beforeAll(() => {
    c = new TestCluster();
    c.startAll();
  });

  afterAll(async () => {
    await c.cleanup();
  });

  test("elects exactly one leader that every node agrees on", async () => {
    const leader = await c.waitForLeader();
    const st = await c.statuses();
    expect(st.filter((s) => s.role === "leader").map((s) => s.id)).toEqual([leader]);
    expect(st.every((s) => s.reachable && s.leader === leader)).toBe(true);
  });

  test("status prints a table with every node", async () => {
    const r = await c.cli(["status"]);
    expect(r.code).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines[0]).toMatch(/^ID\s+ADDRESS\s+ROLE\s+TERM\s+LEADER\s+COMMIT\s+APPLIED\s+LAST/);
    expect(lines.filter((l) => /\b(leader|follower)\b/.test(l)).length).toBe(3);
  });

  test("a put through a follower is readable through every node", async () => {
    const leader = await c.waitForLeader();
    const follower = [0, 1, 2].find((i) => i !== leader)!;
    const put = await c.cli(["put", "10", "42"], { endpoints: c.endpoint(follower) });
    expect(put).toMatchObject({ code: 0, stdout: "OK" });
    for (let i = 0; i < 3; i++) {
      const get = await c.cli(["get", "10"], { endpoints: c.endpoint(i) });
      expect(get).toMatchObject({ code: 0, stdout: "42" });
    }
    // A serializable read is served locally; once applied everywhere, every node has it.
    for (let i = 0; i < 3; i++) {
      await waitFor(`node ${i} to apply the put`, async () => (await c.cli(["get", "10", "--serializable"], { endpoints: c.endpoint(i) })).stdout === "42");
    }
  });

  test("get of a missing key prints to stderr and exits 1; del removes a key", async () => {
    const missing = await c.cli(["get", "no-such-key"]);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toBe("");
    expect(missing.stderr).toContain("key not found");
    expect((await c.cli(["put", "gone", "soon"])).code).toBe(0);
    const del = await c.cli(["del", "gone"]);
    expect(del).toMatchObject({ code: 0, stdout: "deleted 1" });
    expect((await c.cli(["get", "gone"])).code).toBe(1);
  });

  test("--json output parses", async () => {
    expect((await c.cli(["put", "j", "v", "--json"])).code).toBe(0);
    const r = await c.cli(["get", "j", "--json"]);
    const parsed = JSON.parse(r.stdout);
    expect(parsed).toMatchObject({ found: true, key: "j", value: "v", version: 1 });
    expect(parsed.modRevision).toBeGreaterThan(0);
  });

  test("malformed bytes sent to a node's port do not stop it", async () => {
    for (const payload of [Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), Buffer.from([0, 0, 0, 3, 0xff, 0xfe, 0xfd]), Buffer.from("GET / HTTP/1.1\r\n\r\n")]) {
      await new Promise<void>((resolve) => {
        const s = connect(c.ports[0]!, "127.0.0.1", () => {
          s.write(payload);
        });
        s.on("close", () => resolve());
        s.on("error", () => resolve());
        setTimeout(() => s.destroy(), 500);
      });
    }
    const r = await c.cli(["get", "10", "--serializable"], { endpoints: c.endpoint(0) });
    expect(r).toMatchObject({ code: 0, stdout: "42" });
    expect(c.logs(0)).toContain("closed a connection that sent bad data");
  });

  test("well-formed frames carrying nonsense get a clear error reply, not a crash", async () => {
    const leader = await c.waitForLeader();
    const replies: { id: number; ok: boolean; code?: string; message?: string }[] = [];
    const conn = await dialFrames("127.0.0.1", c.ports[leader]!, { onFrame: (_c, v) => replies.push(v as never) });
    conn.send({ k: "req", id: 1, op: "write", cmd: { op: "put", key: "not bytes", value: 3 } });
    conn.send({ k: "req", id: 2, op: "frobnicate" });
    conn.send({ k: "req", id: 3, op: "range", range: { key: new Uint8Array(0) } });
    conn.send({ k: "req", id: 4, op: "write", cmd: { op: "leaseExpire", ids: [1], now: 0 } });
    await waitFor("four replies", () => replies.length === 4, 5000);
    conn.close();
    const byId = new Map(replies.map((r) => [r.id, r]));
    expect(byId.get(1)).toMatchObject({ ok: false, code: "BAD_COMMAND" });
    expect(byId.get(2)).toMatchObject({ ok: false, code: "BAD_REQUEST" });
    expect(byId.get(2)!.message).toContain("frobnicate");
    expect(byId.get(3)).toMatchObject({ ok: false });
    expect(byId.get(4)).toMatchObject({ ok: false, code: "BAD_REQUEST" });
    expect((await c.cli(["get", "10"])).stdout).toBe("42");
  });

  test("bad input gets a clear error and the node keeps serving: oversized value, bad nodes.conf", async () => {
    const client = c.client(5000);
    const err = await client.put("big", new Uint8Array(1024 * 1024 + 1)).catch((e) => e);
    expect(err).toBeInstanceOf(RaftKvError);
    expect(err.code).toBe("VALUE_TOO_LARGE");
    expect(err.message).toContain("1048577");
    expect((await client.put("small", "ok")).revision).toBeGreaterThan(0);
    client.close();
    const conf = join(c.dir, "bad.conf");
    writeFileSync(conf, "0 127.0.0.1 7001\n1 127.0.0.1\n");
    const bad = Bun.spawnSync([BIN, "get", "x", "-c", conf], { stderr: "pipe" });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr.toString()).toContain(`${conf}:2: expected "<id> <ip> <port>"`);
  });

  test("kill -9 of the leader: a new leader takes over and every acknowledged write survives", async () => {
    const client = c.client();
    const acked = new Map<string, string>();
    for (let i = 0; i < 50; i++) {
      await client.put(`k${i}`, `v${i}`);
      acked.set(`k${i}`, `v${i}`);
    }
    const old = await c.waitForLeader();
    await c.kill(old);
    const fresh = await c.waitForLeader(15000, old);
    expect(fresh).not.toBe(old);
    for (let i = 50; i < 80; i++) {
      await client.put(`k${i}`, `v${i}`);
      acked.set(`k${i}`, `v${i}`);
    }
    for (const [k, v] of acked) {
      const kv = await client.get(k);
      expect(kv && toText(kv.value)).toBe(v);
    }
    client.close();
    c.start(old); // back to three for the next test
    await waitFor("the old leader to rejoin as follower", async () => (await c.statuses()).filter((s) => s.reachable && s.leader === fresh).length === 3);
  });

  test("with 2 of 3 nodes down, a put fails with the no-quorum error within the timeout", async () => {
    const leader = await c.waitForLeader();
    const others = [0, 1, 2].filter((i) => i !== leader);
    await c.kill(others[0]!);
    await c.kill(others[1]!);
    const r = await c.cli(["put", "x", "1"], { timeoutMs: 3000 });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/no quorum: node \d cannot reach a majority \(leader unknown\)/);
    expect(r.ms).toBeLessThan(6000);
    const read = await c.cli(["get", "10"], { timeoutMs: 2000 });
    expect(read.code).toBe(3);
    expect(read.stdout).toBe("");
  });
});
