// serve --http-port: /health, /status, /metrics (checked line by line against the Prometheus text
// format, with its counters moving as writes happen) and the dashboard's files and cluster view.
import { afterAll, expect, test } from "bun:test";
import type { ClusterSnapshot } from "../../src/server/dashboard/cluster";
import { freePorts, TestCluster, waitFor } from "./harness";

const c = new TestCluster();
const httpPorts = freePorts(3);
const base = (i: number) => `http://127.0.0.1:${httpPorts[i]}`;
afterAll(async () => {
  await c.cleanup();
});

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Parses the Prometheus text exposition format (0.0.4) strictly: every line must be a HELP, a TYPE or
 * a sample; every sample belongs to a family announced by HELP and TYPE before it; counters end in
 * _total; every histogram series has cumulative buckets ending at +Inf, a _sum and a _count equal to
 * the +Inf bucket. Throws on the first violation, naming the line.
 */
function parsePrometheus(text: string): Sample[] {
  expect(text.endsWith("\n")).toBe(true);
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Sample[] = [];
  const lines = text.slice(0, -1).split("\n");
  const sampleRe = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
  const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\["\\n])*)"(?:,|$)/y;
  lines.forEach((line, n) => {
    const where = `line ${n + 1}: ${line}`;
    let m: RegExpMatchArray | null;
    if ((m = line.match(/^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$/))) {
      if (helps.has(m[1]!)) throw new Error(`second HELP, ${where}`);
      helps.add(m[1]!);
    } else if ((m = line.match(/^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/))) {
      if (types.has(m[1]!)) throw new Error(`second TYPE, ${where}`);
      if (!helps.has(m[1]!)) throw new Error(`TYPE before HELP, ${where}`);
      if (m[2] === "counter" && !m[1]!.endsWith("_total")) throw new Error(`counter not named *_total, ${where}`);
      types.set(m[1]!, m[2]!);
    } else if ((m = line.match(sampleRe))) {
      const [, name, labelText, valueText] = m;
      const labels: Record<string, string> = {};
      if (labelText) {
        labelRe.lastIndex = 0;
        while (labelRe.lastIndex < labelText.length) {
          const l = labelRe.exec(labelText);
          if (!l) throw new Error(`bad labels, ${where}`);
          labels[l[1]!] = l[2]!;
        }
      }
      const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : Number(valueText);
      if (valueText !== "NaN" && Number.isNaN(value)) throw new Error(`bad value, ${where}`);
      const family = types.has(name!) ? name! : name!.replace(/_(bucket|sum|count)$/, "");
      const type = types.get(family);
      if (!type) throw new Error(`sample without TYPE, ${where}`);
      if (type === "histogram" && family === name) throw new Error(`histogram sample without _bucket/_sum/_count, ${where}`);
      if (type !== "histogram" && family !== name) throw new Error(`suffix on a ${type}, ${where}`);
      if (type === "counter" && !(value >= 0)) throw new Error(`negative counter, ${where}`);
      samples.push({ name: name!, labels, value });
    } else {
      throw new Error(`not Prometheus text format, ${where}`);
    }
  });
  // Histograms: per series (labels without le), cumulative buckets ending at +Inf, _sum, _count = +Inf bucket.
  for (const [family, type] of types) {
    if (type !== "histogram") continue;
    const series = new Map<string, { buckets: [number, number][]; sum?: number; count?: number }>();
    const key = (labels: Record<string, string>) => JSON.stringify(Object.entries(labels).filter(([k]) => k !== "le").sort());
    for (const s of samples) {
      if (!s.name.startsWith(family + "_")) continue;
      const k = key(s.labels);
      const entry = series.get(k) ?? { buckets: [] };
      series.set(k, entry);
      if (s.name === `${family}_bucket`) {
        if (s.labels.le === undefined) throw new Error(`${family} bucket without le`);
        entry.buckets.push([s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), s.value]);
      } else if (s.name === `${family}_sum`) entry.sum = s.value;
      else if (s.name === `${family}_count`) entry.count = s.value;
    }
    for (const [k, e] of series) {
      const where = `${family}${k}`;
      if (!e.buckets.length || e.buckets[e.buckets.length - 1]![0] !== Infinity) throw new Error(`${where}: no +Inf bucket`);
      for (let i = 1; i < e.buckets.length; i++) {
        if (!(e.buckets[i]![0] > e.buckets[i - 1]![0])) throw new Error(`${where}: bucket bounds not increasing`);
        if (e.buckets[i]![1] < e.buckets[i - 1]![1]) throw new Error(`${where}: buckets not cumulative`);
      }
      if (e.sum === undefined || e.count === undefined) throw new Error(`${where}: missing _sum or _count`);
      if (e.count !== e.buckets[e.buckets.length - 1]![1]) throw new Error(`${where}: _count differs from the +Inf bucket`);
    }
  }
  return samples;
}

async function metrics(i: number): Promise<Sample[]> {
  const res = await fetch(`${base(i)}/metrics`);
  expect(res.headers.get("content-type")).toStartWith("text/plain; version=0.0.4");
  return parsePrometheus(await res.text());
}

/** The value of one sample (labels must match exactly the ones given); 0 when absent. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const want = JSON.stringify(Object.entries(labels).sort());
  return samples.find((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want)?.value ?? 0;
}

test("each node serves /health and /status over HTTP", async () => {
  for (let i = 0; i < 3; i++) c.start(i, ["--http-port", String(httpPorts[i])]);
  const leader = await c.waitForLeader();
  for (let i = 0; i < 3; i++) {
    const health = await fetch(`${base(i)}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ ok: true, leader });
  }
  const status = await (await fetch(`${base(leader)}/status`)).json();
  expect(status).toMatchObject({ id: leader, role: "leader" });
  expect((await fetch(`${base(0)}/nope`)).status).toBe(404);
});

test("/metrics is valid Prometheus text with every metric the operator needs, and its counters move with writes", async () => {
  const leader = await c.waitForLeader();
  const follower = [0, 1, 2].find((i) => i !== leader)!;
  const before = await metrics(leader);
  const names = new Set(before.map((s) => s.name));
  for (const name of [
    "raftkv_leader_changes_seen_total",
    "raftkv_proposals_committed_total",
    "raftkv_proposals_applied_total",
    "raftkv_proposals_failed_total",
    "raftkv_proposals_pending",
    "raftkv_client_requests_total",
    "raftkv_client_request_duration_seconds_bucket",
    "raftkv_commit_duration_seconds_bucket",
    "raftkv_wal_fsync_duration_seconds_bucket",
    "raftkv_apply_duration_seconds_bucket",
    "raftkv_snapshots_total",
    "raftkv_snapshot_size_bytes",
    "raftkv_snapshot_duration_seconds_count",
    "raftkv_peer_sent_bytes_total",
    "raftkv_peer_received_bytes_total",
    "raftkv_peer_sent_messages_total",
    "raftkv_peer_received_messages_total",
    "raftkv_peer_round_trip_time_seconds_bucket",
    "raftkv_open_connections",
    "raftkv_watchers",
    "raftkv_leases",
    "raftkv_keys",
    "raftkv_stored_bytes",
    "raftkv_term",
    "raftkv_commit_index",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
  ]) {
    expect(names.has(name) ? name : `missing: ${name}`).toBe(name);
  }
  expect(value(before, "raftkv_is_leader")).toBe(1);
  expect(value(before, "raftkv_role", { role: "leader" })).toBe(1);
  expect(value(before, "raftkv_leader_changes_seen_total")).toBeGreaterThanOrEqual(1);
  expect(value(before, "process_resident_memory_bytes")).toBeGreaterThan(1 << 20);
  const peer = String(follower);
  expect(value(before, "raftkv_peer_round_trip_time_seconds_count", { peer })).toBeGreaterThan(0);

  const followerBefore = await metrics(follower);
  const writes = 20;
  const client = c.client();
  try {
    for (let i = 0; i < writes; i++) await client.put(`metrics/${i}`, "x".repeat(100));
    const lease = await client.leaseGrant(60_000);
    await client.put("metrics/leased", "v", { lease: lease.id });
  } finally {
    client.close();
  }
  // A follower applies the writes a moment after the leader answered them.
  const followerAfter = await waitFor("the follower to apply the writes", async () => {
    const m = await metrics(follower);
    return value(m, "raftkv_keys") === writes + 1 ? m : undefined;
  });
  const after = await metrics(leader);
  const grew = (m0: Sample[], m1: Sample[], name: string, labels?: Record<string, string>) => value(m1, name, labels) - value(m0, name, labels);
  expect(grew(before, after, "raftkv_client_requests_total", { op: "put", result: "ok" })).toBe(writes + 1);
  expect(grew(before, after, "raftkv_client_requests_total", { op: "leaseGrant", result: "ok" })).toBe(1);
  expect(grew(before, after, "raftkv_client_request_duration_seconds_count", { op: "put" })).toBe(writes + 1);
  // The puts, the lease grant, and any session the client registered through the log.
  const committed = grew(before, after, "raftkv_proposals_committed_total");
  expect(committed).toBeGreaterThanOrEqual(writes + 2);
  expect(grew(before, after, "raftkv_commit_duration_seconds_count")).toBe(committed);
  expect(grew(before, after, "raftkv_proposals_applied_total")).toBeGreaterThanOrEqual(writes + 2);
  expect(grew(followerBefore, followerAfter, "raftkv_proposals_applied_total")).toBeGreaterThanOrEqual(writes + 2);
  expect(grew(before, after, "raftkv_wal_fsync_duration_seconds_count")).toBeGreaterThan(0);
  expect(grew(followerBefore, followerAfter, "raftkv_wal_fsync_duration_seconds_count")).toBeGreaterThan(0);
  expect(grew(before, after, "raftkv_apply_duration_seconds_count")).toBeGreaterThan(0);
  expect(grew(before, after, "raftkv_peer_sent_bytes_total", { peer })).toBeGreaterThan(writes * 100);
  expect(grew(followerBefore, followerAfter, "raftkv_peer_received_bytes_total", { peer: String(leader) })).toBeGreaterThan(writes * 100);
  expect(grew(before, after, "raftkv_peer_sent_messages_total", { peer })).toBeGreaterThan(0);
  expect(grew(before, after, "raftkv_peer_received_messages_total", { peer })).toBeGreaterThan(0);
  expect(grew(before, after, "process_cpu_seconds_total")).toBeGreaterThanOrEqual(0);
  expect(value(after, "raftkv_keys")).toBe(writes + 1);
  expect(value(after, "raftkv_leases")).toBe(1);
  expect(value(after, "raftkv_stored_bytes")).toBeGreaterThan(writes * 100);
  expect(value(after, "raftkv_proposals_pending")).toBe(0);
  expect(value(after, "raftkv_open_connections")).toBeGreaterThanOrEqual(2); // both followers' links
});

test("/ serves the dashboard from the binary; /api/cluster gathers every node, unreachable ones as such", async () => {
  const leader = await c.waitForLeader();
  const follower = [0, 1, 2].find((i) => i !== leader)!;
  const page = await fetch(`${base(follower)}/`);
  expect(page.headers.get("content-type")).toStartWith("text/html");
  const html = await page.text();
  expect(html).toContain("<title>raftkv cluster</title>");
  expect(html).not.toMatch(/(src|href)="(https?:)?\/\//); // nothing from elsewhere
  expect((await fetch(`${base(follower)}/dashboard.js`)).headers.get("content-type")).toStartWith("text/javascript");
  expect((await fetch(`${base(follower)}/dashboard.css`)).headers.get("content-type")).toStartWith("text/css");

  const cluster = async () => (await (await fetch(`${base(follower)}/api/cluster`)).json()) as ClusterSnapshot;
  const view = await cluster();
  expect(view.from).toBe(follower);
  expect(view.leader).toBe(leader);
  expect(view.nodes.map((n) => [n.id, n.reachable])).toEqual([[0, true], [1, true], [2, true]]);
  expect(view.leaderChanges.at(-1)).toMatchObject({ leader });
  expect(view.samplesFrom).toBe(leader);

  const down = [0, 1, 2].find((i) => i !== leader && i !== follower)!;
  await c.kill(down);
  const after = await waitFor("the dashboard to show the killed node as unreachable", async () => {
    const v = await cluster();
    return v.nodes[down]!.reachable ? undefined : v;
  });
  expect(after.nodes[down]!.error).toBeString();
  expect(after.nodes[leader]).toMatchObject({ reachable: true, lag: 0 });
});

test("a node alone, without a majority, says so: /health 503", async () => {
  const leader = await c.waitForLeader();
  const alone = [0, 1, 2].find((i) => i !== leader && c.running(i))!;
  for (const i of [0, 1, 2]) if (i !== alone) await c.kill(i);
  await waitFor("the lone node to lose its leader", async () => (await fetch(`${base(alone)}/health`)).status === 503, 10000);
});
