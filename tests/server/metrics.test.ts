// The metrics registry's text format, its limits, and the node metrics' bookkeeping (no I/O, no clock assertions).
import { afterEach, expect, test } from "bun:test";
import { MAX_LABEL_SETS, NodeMetrics, Registry, type NodeGauges } from "../../src/server/metrics";
import type { NodeStatus } from "../../src/protocol";

test("counters, gauges and labelled histograms render in the Prometheus text format", () => {
  const r = new Registry();
  const c = r.counter("t_requests_total", "Requests.\nSecond line \\ backslash.", ["op"]);
  const g = r.gauge("t_temperature", "A gauge.");
  const h = r.histogram("t_duration_seconds", "A histogram.", [0.1, 1], ["op"]);
  c.labels('we"ird\\op\n').inc(2);
  g.set(-1.5);
  h.labels("get").observe(0.05);
  h.labels("get").observe(0.5);
  h.labels("get").observe(3);
  expect(r.render()).toBe(
    [
      "# HELP t_requests_total Requests.\\nSecond line \\\\ backslash.",
      "# TYPE t_requests_total counter",
      't_requests_total{op="we\\"ird\\\\op\\n"} 2',
      "# HELP t_temperature A gauge.",
      "# TYPE t_temperature gauge",
      "t_temperature -1.5",
      "# HELP t_duration_seconds A histogram.",
      "# TYPE t_duration_seconds histogram",
      't_duration_seconds_bucket{op="get",le="0.1"} 1',
      't_duration_seconds_bucket{op="get",le="1"} 2',
      't_duration_seconds_bucket{op="get",le="+Inf"} 3',
      't_duration_seconds_sum{op="get"} 3.55',
      't_duration_seconds_count{op="get"} 3',
      "",
    ].join("\n"),
  );
});

test("the registry refuses what Prometheus would not accept", () => {
  const r = new Registry();
  expect(() => r.counter("t_requests", "no _total")).toThrow("_total");
  expect(() => r.gauge("1bad", "name")).toThrow("bad metric name");
  expect(() => r.gauge("t_x", "label", ["le"])).toThrow("bad label name");
  expect(() => r.histogram("t_h", "buckets", [1, 1])).toThrow("increase");
  r.gauge("t_dup", "once");
  expect(() => r.gauge("t_dup", "twice")).toThrow("twice");
  const c = r.counter("t_c_total", "c", ["a"]);
  expect(() => c.labels()).toThrow("1 label value");
  expect(() => c.labels("x").inc(-1)).toThrow("only goes up");
});

test("label sets past MAX_LABEL_SETS share one `other` child instead of growing memory", () => {
  const r = new Registry();
  const c = r.counter("t_c_total", "c", ["k"]);
  for (let i = 0; i < MAX_LABEL_SETS + 50; i++) c.labels(String(i)).inc();
  const lines = r.render().split("\n").filter((l) => l.startsWith("t_c_total{"));
  expect(lines.length).toBe(MAX_LABEL_SETS + 1);
  expect(lines.at(-1)).toBe('t_c_total{k="other"} 50');
});

const status = { id: 0, role: "leader", term: 3, leader: 0, keys: 0 } as NodeStatus;
const gauges = (): NodeGauges => ({ status, pendingProposals: 0, openConnections: 0, watchers: 0, leases: 0, storedBytes: 0, peerBytesSent: [] });
let m: NodeMetrics;
afterEach(() => m?.stop());

function sample(name: string): number | undefined {
  const line = m.render().split("\n").find((l) => l.startsWith(name + " "));
  return line === undefined ? undefined : Number(line.split(" ")[1]);
}

test("a leader is counted once per term, however often it is learned again", () => {
  m = new NodeMetrics(gauges);
  m.leaderSeen(3, 1);
  m.leaderSeen(3, -1);
  m.leaderSeen(3, 1);
  m.leaderSeen(4, 2);
  expect(sample("raftkv_leader_changes_seen_total")).toBe(2);
  expect(m.stats().leaderChanges.map((c) => [c.term, c.leader])).toEqual([[3, 1], [4, 2]]);
});

test("requests are counted by operation and result; writes as committed or failed proposals", () => {
  m = new NodeMetrics(gauges);
  const conn = {};
  m.requestStarted(conn, { id: 1, op: "write", cmd: { op: "put" } });
  m.requestStarted(conn, { id: 2, op: "write", cmd: { op: "put" } });
  m.requestStarted(conn, { id: 3, op: "range" });
  m.requestStarted(conn, { id: 4, op: "write", cmd: { op: "<script>" } });
  m.requestEnded(conn, 1, "ok");
  m.requestEnded(conn, 2, "LEADERSHIP_LOST");
  m.requestEnded(conn, 3, "NOT_LEADER");
  m.requestEnded(conn, 4, "BAD_REQUEST");
  m.requestEnded(conn, 4, "ok"); // answered twice: counted once
  const text = m.render();
  expect(text).toContain('raftkv_client_requests_total{op="put",result="ok"} 1');
  expect(text).toContain('raftkv_client_requests_total{op="put",result="LEADERSHIP_LOST"} 1');
  expect(text).toContain('raftkv_client_requests_total{op="range",result="NOT_LEADER"} 1');
  expect(text).toContain('raftkv_client_requests_total{op="unknown",result="BAD_REQUEST"} 1');
  expect(sample("raftkv_proposals_committed_total")).toBe(1);
  expect(sample("raftkv_proposals_failed_total")).toBe(1);
  expect(sample("raftkv_commit_duration_seconds_count")).toBe(1);
});

test("snapshot save requests are counted under their own operations", () => {
  m = new NodeMetrics(gauges);
  const conn = {};
  m.requestStarted(conn, { id: 1, op: "snapshotSave" });
  m.requestStarted(conn, { id: 2, op: "snapshotChunk" });
  m.requestEnded(conn, 1, "ok");
  m.requestEnded(conn, 2, "ok");
  const text = m.render();
  expect(text).toContain('raftkv_client_requests_total{op="snapshotSave",result="ok"} 1');
  expect(text).toContain('raftkv_client_requests_total{op="snapshotChunk",result="ok"} 1');
});

test("round trips are timed only on heartbeats sent while nothing else to the peer is unanswered", () => {
  m = new NodeMetrics(gauges);
  const count = () => Number(m.render().split("\n").find((l) => l.startsWith('raftkv_peer_round_trip_time_seconds_count{peer="1"}'))?.split(" ")[1] ?? 0);
  const app = (entries: number) => m.messageSent({ type: "app", to: 1, entries: new Array(entries) });
  const answer = () => m.messageReceived({ type: "appResp", from: 1 });
  app(5); // an append with entries: not timed (its answer waits for the peer's disk)
  app(0); // a heartbeat behind an unanswered append: its answer would not be the first
  answer();
  answer();
  expect(count()).toBe(0);
  app(0); // a heartbeat with nothing unanswered: timed by the next answer
  app(3);
  answer();
  expect(count()).toBe(1);
  answer();
  expect(count()).toBe(1);
});
