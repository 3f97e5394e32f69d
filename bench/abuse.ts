// Abusive clients against a normal load. For each abuser, on a fresh 3-node cluster: a normal load
// (16 clients, puts and linearizable gets at a fixed total rate) runs alone ("before"), then with the
// abuser ("during"), then alone again once the abuser is gone ("after"). Printed per phase: the normal
// clients' p99 and errors, and the leader's RSS (at the end of the phase; the peak for "during"); then
// the leader's RSS at rest (load stopped, the node idle long enough for its idle collection), and
// whether the leadership changed.
//
// Usage: bun bench/abuse.ts [phaseMs=4000] [abuser,...]      RAFTKV_BIN=path measures another build.
// Abusers: unread, connections, watches, frames, snapshot, prefix (default: all, in that order).
// Each abuser runs in a process of its own (this script, `abuser NAME PORTS LEADER`), so its busy loops
// cannot slow the normal clients' measurements; it is stopped with SIGKILL, which closes its sockets.

import { connect, type Socket } from "node:net";
import { readFileSync } from "node:fs";
import { RaftKvClient } from "../src/client/client";
import { encodeFrame, FRAME_HEADER_BYTES, MAX_FRAME_BYTES } from "../src/net";
import { BIN, TestCluster } from "../tests/e2e/harness";

const CLIENTS = 16;
const RATE_PER_S = 200;
/** Normal load before the measured phases (connections made, leader known). */
const WARM_UP_MS = 1000;
const MiB = 1024 * 1024;
const te = new TextEncoder();

const rssMiB = (pid: number): number => {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
  } catch {
    return NaN; // the process is gone
  }
};

/** A raw TCP connection to a node (the abusers speak the wire protocol by hand). */
async function rawSocket(port: number): Promise<Socket> {
  const s = connect(port, "127.0.0.1");
  s.on("error", () => {}); // the node may cut an abuser off: that is the point
  await new Promise<void>((resolve, reject) => {
    s.once("connect", resolve);
    s.once("close", () => reject(new Error("connection refused")));
  });
  return s;
}

/** Writes frames until the socket is gone, waiting for the socket to drain; never reads. */
async function floodUnread(s: Socket, frame: (i: number) => Uint8Array): Promise<void> {
  for (let i = 1; !s.destroyed; ) {
    let more = true;
    for (let k = 0; k < 100 && more; k++) more = s.write(frame(i++));
    if (more) await Bun.sleep(0);
    else await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 100);
      s.once("drain", () => (clearTimeout(t), resolve()));
    });
  }
}

interface Abuser {
  name: string;
  what: string;
  /** Runs (in the abuser's own process) until the process is killed. */
  run(ports: number[], leader: number): Promise<void>;
  /** Preparation on the fresh cluster before the "before" phase. */
  prepare?(c: TestCluster): Promise<void>;
}

const forever = () => new Promise<never>(() => {});

const putFrame = (key: string, value: Uint8Array, id: number) => encodeFrame({ k: "req", id, op: "write", cmd: { op: "put", key: te.encode(key), value } });

const abusers: Abuser[] = [
  {
    name: "unread",
    what: "one connection pipelining 100-byte puts, never reading a reply",
    async run(ports, leader) {
      const s = await rawSocket(ports[leader]!);
      s.pause();
      const value = new Uint8Array(100);
      await floodUnread(s, (i) => putFrame(`unread/${i % 1000}`, value, i));
    },
  },
  {
    name: "connections",
    what: "900 connections opened and left idle, a half-sent header on each",
    async run(ports, leader) {
      const socks: Socket[] = [];
      for (let i = 0; i < 900; i++) {
        try {
          const s = await rawSocket(ports[leader]!);
          s.write(new Uint8Array([0, 0])); // half a length header, never finished
          socks.push(s);
        } catch {
          await Bun.sleep(10); // refused: the node is at its limit
        }
      }
      await forever();
    },
  },
  {
    name: "watches",
    what: "10 connections holding 1,000 watches each (the node's limit: 10,000) on the keys the normal load writes, reading every event",
    async run(ports, leader) {
      let bytes = 0;
      setInterval(() => {
        console.log(`  (abuser: ${(bytes / MiB).toFixed(1)} MiB of watch frames received in the last second)`);
        bytes = 0;
      }, 1000);
      for (let k = 0; k < 10; k++) {
        const s = await rawSocket(ports[leader]!);
        s.on("data", (chunk: Buffer) => (bytes += chunk.length)); // reads everything, so the node has to keep sending
        // Watch the normal load's keys, so every put has 10,000 watchers to notify.
        for (let i = 1; i <= 1000; i++) s.write(encodeFrame({ k: "req", id: i, op: "watch", selector: { key: te.encode("n/"), prefix: true } }));
      }
      await forever();
    },
  },
  {
    name: "frames",
    what: "8 connections each sending a 16 MiB frame (a put of a too-large value), then 15 MiB of another, held",
    async run(ports, leader) {
      const big = putFrame("huge", new Uint8Array(MAX_FRAME_BYTES - 200), 1);
      for (let k = 0; k < 8; k++) {
        const s = await rawSocket(ports[leader]!);
        s.pause();
        s.write(big);
        s.write(big.subarray(0, FRAME_HEADER_BYTES + 15 * MiB));
      }
      await forever();
    },
  },
  {
    name: "snapshot",
    what: "12 snapshot chunks of 15 MiB from made-up senders, then 8 from a configured peer that walks away",
    async run(ports, leader) {
      const data = new Uint8Array(15 * MiB);
      const chunk = (from: number, offset: number) =>
        encodeFrame({ k: "snapChunk", from, term: 0, index: 1_000_000, snapTerm: 1, offset, total: 1024 * MiB, data });
      // Waits until the socket took the frame, or is gone (the node may close it).
      const send = async (s: Socket, frame: Uint8Array) => {
        if (!s.write(frame)) await new Promise((r) => (s.once("drain", r), s.once("close", r)));
      };
      await Promise.all(Array.from({ length: 12 }, async (_, i) => send(await rawSocket(ports[leader]!), chunk(100 + i, 0))));
      const peer = [0, 1, 2].find((i) => i !== leader)!;
      const p = await rawSocket(ports[leader]!);
      await send(p, encodeFrame({ k: "hello", from: peer }));
      for (let i = 0; i < 8; i++) await send(p, chunk(peer, i * data.length));
      p.destroy(); // walks away in the middle of the transfer
      await forever();
    },
  },
  {
    name: "prefix",
    what: "get big/ --prefix over 18 values of 1 MiB (a result over the frame limit), in a loop",
    async prepare(c) {
      const client = c.client(30000);
      const value = new Uint8Array(MiB);
      for (let i = 0; i < 18; i++) await client.put(`big/${i}`, value);
      client.close();
    },
    async run(ports) {
      const client = new RaftKvClient({ endpoints: ports.map((p) => `127.0.0.1:${p}`), timeoutMs: 1000 });
      for (;;) await client.range({ key: te.encode("big/"), prefix: true }).catch(() => Bun.sleep(50));
    },
  },
];

interface Phase {
  latencies: number[];
  errors: number;
  rssEnd: number;
  rssPeak: number;
}

const p99 = (xs: number[]): number => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(0.99 * s.length) - 1)]!;
};

/** The normal load: CLIENTS loops sharing RATE_PER_S, each a put or a linearizable get of n/<k>. */
function normalLoad(c: TestCluster): { phase(p: Phase): void; stop(): Promise<void> } {
  let current: Phase | null = null;
  let running = true;
  const clients = Array.from({ length: 4 }, () => new RaftKvClient({ endpoints: c.endpoints.split(","), timeoutMs: 5000 }));
  const intervalMs = (1000 * CLIENTS) / RATE_PER_S;
  const value = new Uint8Array(100);
  const loops = Array.from({ length: CLIENTS }, async (_, slot) => {
    const client = clients[slot % clients.length]!;
    let n = 0;
    await Bun.sleep((slot * intervalMs) / CLIENTS);
    while (running) {
      const due = performance.now() + intervalMs;
      const key = `n/${slot}/${n++ % 50}`;
      const t0 = performance.now();
      try {
        if (n % 2) await client.put(key, value);
        else await client.get(key);
        current?.latencies.push(performance.now() - t0);
      } catch {
        if (current) current.errors++;
      }
      const wait = due - performance.now();
      if (wait > 0) await Bun.sleep(wait);
    }
  });
  return {
    phase: (p) => (current = p),
    async stop() {
      running = false;
      await Promise.all(loops);
      clients.forEach((cl) => cl.close());
    },
  };
}

async function measure(pid: number, p: Phase, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    p.rssPeak = Math.max(p.rssPeak, rssMiB(pid) || 0);
    await Bun.sleep(100);
  }
  p.rssEnd = rssMiB(pid);
}

async function leaderAndTerm(c: TestCluster): Promise<string> {
  const st = await c.statuses();
  const l = st.find((s) => s.role === "leader");
  return l ? `${l.id}@${l.term}` : "none";
}

async function main(phaseMs: number, wanted: string[] | undefined): Promise<void> {
  console.log(`binary: ${BIN}; normal load: ${CLIENTS} clients, ${RATE_PER_S} req/s (puts and linearizable gets); phases of ${phaseMs} ms`);
  for (const abuser of abusers.filter((a) => !wanted || wanted.includes(a.name))) {
    const c = new TestCluster();
    try {
      c.startAll();
      const leader = await c.waitForLeader();
      await abuser.prepare?.(c);
      const pid = c.pid(leader)!;
      const termBefore = await leaderAndTerm(c);
      const load = normalLoad(c);
      await Bun.sleep(WARM_UP_MS);
      const phases = { before: newPhase(), during: newPhase(), after: newPhase() };
      load.phase(phases.before);
      await measure(pid, phases.before, phaseMs);
      load.phase(phases.during);
      const child = Bun.spawn([process.execPath, import.meta.path, "abuser", abuser.name, c.ports.join(","), String(leader)], { stdout: "inherit", stderr: "inherit" });
      await measure(pid, phases.during, phaseMs);
      child.kill("SIGKILL");
      await child.exited;
      load.phase(phases.after);
      await measure(pid, phases.after, phaseMs);
      await load.stop();
      await Bun.sleep(4000); // idle: the node asks for a collection after 2 s without applying anything
      const rssRest = rssMiB(pid);
      const termAfter = await leaderAndTerm(c).catch(() => "unknown");
      const f = (p: Phase) => `${p99(p.latencies).toFixed(1)} ms (${p.latencies.length} ok, ${p.errors} err)`;
      const r = (x: number) => (Number.isNaN(x) ? "gone" : x.toFixed(0));
      console.log(
        `${abuser.name}: ${abuser.what}\n` +
          `  normal p99 before ${f(phases.before)} | during ${f(phases.during)} | after ${f(phases.after)}\n` +
          `  leader RSS MiB before ${r(phases.before.rssEnd)} | during peak ${r(phases.during.rssPeak)} | after ${r(phases.after.rssEnd)} | at rest ${r(rssRest)}\n` +
          `  leader@term before ${termBefore}, after ${termAfter}${termBefore === termAfter ? "" : "  (LEADER CHANGED)"}`,
      );
    } finally {
      await c.cleanup();
    }
  }
}

function newPhase(): Phase {
  return { latencies: [], errors: 0, rssEnd: NaN, rssPeak: 0 };
}

if (process.argv[2] === "abuser") {
  const abuser = abusers.find((a) => a.name === process.argv[3])!;
  await abuser.run(process.argv[4]!.split(",").map(Number), Number(process.argv[5]));
  await forever();
} else {
  await main(Number(process.argv[2] ?? 4000), process.argv[3]?.split(","));
}
