// serve --http-port: /health, /status and /metrics for operators and monitoring.
import { afterAll, expect, test } from "bun:test";
import { freePorts, TestCluster, waitFor } from "./harness";

const c = new TestCluster();
const httpPorts = freePorts(3);
afterAll(async () => {
  await c.cleanup();
});

test("each node serves /health, /status and /metrics over HTTP", async () => {
  for (let i = 0; i < 3; i++) c.start(i, ["--http-port", String(httpPorts[i])]);
  const leader = await c.waitForLeader();
  const base = (i: number) => `http://127.0.0.1:${httpPorts[i]}`;
  for (let i = 0; i < 3; i++) {
    const health = await fetch(`${base(i)}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ ok: true, leader });
  }
  const status = await (await fetch(`${base(leader)}/status`)).json();
  expect(status).toMatchObject({ id: leader, role: "leader" });
  const metrics = await (await fetch(`${base(leader)}/metrics`)).text();
  expect(metrics).toContain("raftkv_is_leader 1");
  expect(metrics).toMatch(/raftkv_term \d+/);
  expect(metrics).toContain('raftkv_role{role="leader"} 1');
  expect((await fetch(`${base(0)}/nope`)).status).toBe(404);

  // A node alone, without a majority, says so: 503.
  const alone = [0, 1, 2].find((i) => i !== leader)!;
  for (const i of [0, 1, 2]) if (i !== alone) await c.kill(i);
  await waitFor("the lone node to lose its leader", async () => (await fetch(`${base(alone)}/health`)).status === 503, 10000);
});
