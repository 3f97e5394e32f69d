// The raftkv dashboard: asks the node that served this page for the whole cluster's state once a
// second (api/cluster) and redraws. No dependencies, nothing fetched from elsewhere.
"use strict";

const REFRESH_MS = 1000;
/** Charts cover the samples' span, at least a minute and at most the five minutes a node keeps. */
const MIN_SPAN_MS = 60_000, MAX_SPAN_MS = 300_000;
const W = 600, H = 160, PAD_LEFT = 44, PAD_BOTTOM = 18, PAD_TOP = 8;
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

function formatDuration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

const clock = (at) => new Date(at).toLocaleTimeString([], { hour12: false });

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = String(text);
  tr.appendChild(td);
  return td;
}

function renderSummary(view) {
  const el = $("summary");
  const up = view.nodes.filter((n) => n.reachable).length;
  const leader = view.nodes.find((n) => n.id === view.leader);
  el.className = leader ? "" : "bad";
  el.textContent = (leader ? `leader: node ${leader.id}, term ${leader.status.term}` : "no leader: the cluster cannot accept writes") +
    ` · ${up} of ${view.nodes.length} nodes reachable · served by node ${view.from} · ${clock(view.at)}`;
}

function renderNodes(view) {
  const rows = view.nodes.map((n) => {
    const tr = document.createElement("tr");
    const s = n.status;
    const role = n.reachable ? s.role : "unreachable";
    tr.className = role;
    tr.dataset.nodeId = n.id;
    tr.dataset.role = role;
    cell(tr, n.id === view.from ? `${n.id} (this page)` : n.id);
    cell(tr, n.addr);
    cell(tr, role).className = "role";
    if (!n.reachable) {
      const td = cell(tr, n.error);
      td.colSpan = 7;
      td.style.textAlign = "left";
    } else {
      for (const v of [s.term, s.commitIndex, s.appliedIndex, n.lag ?? "–", s.keys, formatBytes(s.rssBytes), formatDuration(s.uptimeMs)]) cell(tr, v);
    }
    return tr;
  });
  $("nodes").tBodies[0].replaceChildren(...rows);
}

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A round upper bound for the y axis: 1, 2 or 5 times a power of ten. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
}

function spanLabel(ms) {
  return ms >= 60_000 ? `-${+(ms / 60_000).toFixed(1)} min` : `-${Math.round(ms / 1000)} s`;
}

/** Line chart of the samples, oldest left, now right; a null value breaks the line. */
function drawChart(el, now, samples, lines) {
  const span = Math.min(MAX_SPAN_MS, Math.max(MIN_SPAN_MS, now - (samples[0]?.at ?? now)));
  const values = lines.flatMap((l) => samples.map(l.value)).filter((v) => v !== null);
  const max = niceMax(Math.max(0, ...values));
  const x = (at) => PAD_LEFT + ((at - (now - span)) / span) * (W - PAD_LEFT - 4);
  const y = (v) => PAD_TOP + (1 - v / max) * (H - PAD_TOP - PAD_BOTTOM);
  const parts = [];
  for (const v of [0, max / 2, max]) {
    parts.push(svg("line", { class: "grid", x1: PAD_LEFT, x2: W, y1: y(v), y2: y(v) }));
    parts.push(svg("text", { x: PAD_LEFT - 4, y: y(v) + 4, "text-anchor": "end" }, String(+v.toPrecision(3))));
  }
  for (const [label, at] of [[spanLabel(span), now - span], [spanLabel(span / 2), now - span / 2], ["now", now]]) {
    parts.push(svg("text", { x: Math.min(x(at), W - 20), y: H - 4, "text-anchor": "middle" }, label));
  }
  for (const line of lines) {
    let points = [];
    const flush = () => {
      if (points.length) parts.push(svg("polyline", { class: line.cls, points: points.join(" ") }));
      points = [];
    };
    for (const s of samples) {
      const v = line.value(s);
      if (v === null || s.at < now - span) flush();
      else points.push(`${x(s.at).toFixed(1)},${y(v).toFixed(1)}`);
    }
    flush();
  }
  el.replaceChildren(...parts);
}

function renderLeaders(view) {
  const items = view.leaderChanges.slice().reverse().map((c) => {
    const li = document.createElement("li");
    li.textContent = `${clock(c.at)} · term ${c.term} · node ${c.leader} became leader`;
    return li;
  });
  if (!items.length) items.push(Object.assign(document.createElement("li"), { textContent: "none seen yet" }));
  $("leaders").replaceChildren(...items);
}

function render(view) {
  renderSummary(view);
  renderNodes(view);
  drawChart($("writes-chart"), view.at, view.samples, [{ cls: "writes", value: (s) => s.applied }]);
  drawChart($("latency-chart"), view.at, view.samples, [
    { cls: "mean", value: (s) => s.commitMeanMs },
    { cls: "p99", value: (s) => s.commitP99Ms },
  ]);
  renderLeaders(view);
  $("footer").textContent = `Charts: the ${view.samplesFrom === view.leader ? "leader's" : `node ${view.samplesFrom}'s`} last five minutes at most, one point a second. Refreshes every ${REFRESH_MS / 1000} s.`;
}

async function refresh() {
  try {
    const res = await fetch("api/cluster", { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    render(await res.json());
  } catch (err) {
    const el = $("summary");
    el.className = "bad";
    el.textContent = `the node that served this page is not answering (${err.message}); retrying…`;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
