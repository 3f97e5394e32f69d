// One client cannot hurt the others: careless or hostile clients against the compiled binary, each met
// by a named limit (src/server/limits.ts), while an ordinary client keeps working and the leader stays.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:net";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { RaftKvError } from "../../src/client/client";
import { dialFrames, encodeFrame, type FramedConn } from "../../src/net";
import {
  LIMITS_HELP,
  MAX_REFUSALS_PER_CONNECTION,
  MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION,
  MAX_WATCHES_PER_CONNECTION,
  MAX_WATCHES_TOTAL,
} from "../../src/server/limits";
import { BIN, TestCluster, waitFor } from "./harness";

const te = new TextEncoder();
const MiB = 1024 * 1024;

interface Reply {
  k: string;
  id: number;
  ok?: boolean;
  code?: string;
  message?: string;
}

function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
}

/** A raw framed connection that records every reply (`res` frames) by request id. */
async function rawClient(port: number): Promise<{ conn: FramedConn; replies: Map<number, Reply> }> {
  const replies = new Map<number, Reply>();
  const conn = await dialFrames("127.0.0.1", port, {
    onFrame: (_c, v) => {
      const r = v as Reply;
      if (r.k === "res") replies.set(r.id, r);
    },
    maxQueuedBytes: 1 << 30,
  });
  return { conn, replies };
}

/** The leader's id and term, agreed by every node. */
async function leaderAndTerm(c: TestCluster): Promise<{ leader: number; term: number }> {
  const leader = await c.waitForLeader();
  const st = await c.statuses();
  return { leader, term: st.find((s) => s.id === leader)!.term! };
}

/** The same leader in the same term: nothing the abusive client did cost it its leadership. */
async function expectNoLeaderChange(c: TestCluster, before: { leader: number; term: number }): Promise<void> {
  expect(await leaderAndTerm(c)).toEqual(before);
}

test("serve --help lists every limit with its value", () => {
  const help = Bun.spawnSync([BIN, "serve", "--help"]).stdout.toString();
  for (const [name, value] of LIMITS_HELP) expect(help).toMatch(new RegExp(`${name.replace(/[()]/g, "\\$&")}\\s+${value}\\s`));
});

// A longer election timeout than the default: on a loaded test machine a 300 ms one expires on its own;
// what these tests look for are the multi-second stalls an abusive client caused.
const SLOW_ELECTIONS = ["--heartbeat-ms", "100", "--election-ms", "1000"];

describe("abusive clients against a 3-node cluster", () => {
  let c: TestCluster;

  beforeAll(async () => {
    c = new TestCluster({ extraArgs: SLOW_ELECTIONS });
    c.startAll();
    await c.waitForLeader();
  });

  afterAll(async () => {
    await c.cleanup();
  });

  test("a connection pipelining past its in-flight limit gets TOO_BUSY, then is cut off; others keep working", async () => {
    const before = await leaderAndTerm(c);
    const { conn, replies } = await rawClient(c.ports[before.leader]!);
    const n = (MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION + MAX_REFUSALS_PER_CONNECTION) * 3;
    const value = new Uint8Array(100);
    for (let i = 1; i <= n; i++) conn.send({ k: "req", id: i, op: "write", cmd: { op: "put", key: te.encode(`pipelined/${i % 100}`), value } });
    const normal = c.client(5000);
    expect((await normal.put("normal", "still served")).revision).toBeGreaterThan(0);
    await waitFor("every reply, or the node closing the connection", () => replies.size === n || conn.closed, 30000);
    conn.close();
    const refused = [...replies.values()].filter((r) => !r.ok);
    // The node cuts the connection off with a reset, which discards the replies the client had not read
    // yet (on a loaded machine, possibly every TOO_BUSY): then only its log shows the refusals.
    if (refused.length === 0) {
      await waitFor("the node to log why it cut the connection off", () => c.logs(before.leader).includes(`of its requests were refused over the limits`), 5000);
    }
    expect(refused.length).toBeLessThan(n);
    for (const r of refused) {
      expect(r.code).toBe("TOO_BUSY");
      expect(r.message).toContain(`${MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION} requests in flight on this connection`);
    }
    expect((await normal.get("normal"))?.value).toEqual(te.encode("still served"));
    normal.close();
    await expectNoLeaderChange(c, before);
  });

  test("a client that sends requests and never reads the replies costs no leader change and stops no one", async () => {
    const before = await leaderAndTerm(c);
    const sock = connect(c.ports[before.leader]!, "127.0.0.1");
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", reject);
    });
    sock.on("error", () => {}); // the node may cut it off
    sock.pause(); // never read a reply
    let stop = false;
    const value = new Uint8Array(100);
    const flood = (async () => {
      for (let id = 1; !stop && !sock.destroyed; ) {
        let more = true;
        for (let i = 0; i < 100 && more; i++, id++) {
          more = sock.write(encodeFrame({ k: "req", id, op: "write", cmd: { op: "put", key: te.encode(`unread/${id % 1000}`), value } }));
        }
        if (more) await Bun.sleep(0);
        else await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 100);
          sock.once("drain", () => (clearTimeout(t), resolve()));
        });
      }
    })();
    const normal = c.client(5000);
    try {
      // Every put succeeds (within the client's timeout) while the flood goes on, until it is cut off.
      const deadline = Date.now() + 20000;
      for (let done = 0; (!sock.destroyed || done < 10) && Date.now() < deadline; done++) await normal.put(`normal/${done % 10}`, "x");
      expect(sock.destroyed).toBe(true);
    } finally {
      stop = true;
      await flood;
      sock.destroy();
      normal.close();
    }
    expect(c.logs(before.leader)).toContain(`after ${MAX_REFUSALS_PER_CONNECTION} of its requests were refused`);
    await expectNoLeaderChange(c, before);
  });

  test("watches past the per-connection limit are refused with TOO_MANY_WATCHES; 50,000 of them cut the connection off", async () => {
    const before = await leaderAndTerm(c);
    const port = c.ports[before.leader]!;
    const watch = (conn: FramedConn, n: number) => {
      for (let i = 1; i <= n; i++) conn.send({ k: "req", id: i, op: "watch", selector: { key: te.encode(`watched/${i}`) } });
    };
    const a = await rawClient(port);
    const n = MAX_WATCHES_PER_CONNECTION + 10;
    watch(a.conn, n);
    await waitFor(`${n} replies`, () => a.replies.size === n, 30000);
    const refused = [...a.replies.values()].filter((r) => !r.ok);
    expect(refused.length).toBe(10);
    for (const r of refused) {
      expect(r.code).toBe("TOO_MANY_WATCHES");
      expect(r.message).toContain(`${MAX_WATCHES_PER_CONNECTION} watches on this connection`);
    }
    expect(a.conn.closed).toBe(false);
    const b = await rawClient(port);
    watch(b.conn, 50_000);
    await waitFor("the node to close the connection", () => b.conn.closed, 30000);
    expect(b.replies.size).toBeLessThan(50_000);
    expect([...b.replies.values()].filter((r) => r.ok).length).toBeLessThanOrEqual(MAX_WATCHES_PER_CONNECTION);
    expect([...b.replies.values()].every((r) => r.ok || r.code === "TOO_MANY_WATCHES")).toBe(true);
    expect(c.logs(before.leader)).toContain(`after ${MAX_REFUSALS_PER_CONNECTION} of its requests were refused`);
    a.conn.close();
    const normal = c.client(5000);
    expect((await normal.put("after-watches", "ok")).revision).toBeGreaterThan(0);
    normal.close();
    await expectNoLeaderChange(c, before);
  });

  test("watches past the node's total are refused, and closing connections gives them back", async () => {
    const { leader } = await leaderAndTerm(c);
    const port = c.ports[leader]!;
    const full = Math.ceil(MAX_WATCHES_TOTAL / MAX_WATCHES_PER_CONNECTION);
    const holders: FramedConn[] = [];
    let opened = 0;
    for (let k = 0; k < full; k++) {
      const { conn, replies } = await rawClient(port);
      holders.push(conn);
      for (let i = 1; i <= MAX_WATCHES_PER_CONNECTION; i++) conn.send({ k: "req", id: i, op: "watch", selector: { key: te.encode(`total/${i}`) } });
      await waitFor("the watch replies", () => replies.size === MAX_WATCHES_PER_CONNECTION, 30000);
      opened += [...replies.values()].filter((r) => r.ok).length;
    }
    expect(opened).toBe(MAX_WATCHES_TOTAL);
    const extra = await rawClient(port);
    extra.conn.send({ k: "req", id: 1, op: "watch", selector: { key: te.encode("one-too-many") } });
    await waitFor("a reply", () => extra.replies.size === 1, 10000);
    expect(extra.replies.get(1)).toMatchObject({ ok: false, code: "TOO_MANY_WATCHES" });
    expect(extra.replies.get(1)!.message).toContain(`${MAX_WATCHES_TOTAL} watches`);
    for (const h of holders) h.close();
    // Closed connections give their watches back: the node accepts a new one.
    await waitFor("a watch accepted again", async () => {
      const again = await rawClient(port);
      again.conn.send({ k: "req", id: 1, op: "watch", selector: { key: te.encode("again") } });
      await waitFor("a reply", () => again.replies.size === 1, 5000);
      again.conn.close();
      return again.replies.get(1)!.ok === true;
    }, 10000, 200);
    extra.conn.close();
  });

  test("snapshot chunks from made-up senders are not kept: the node's memory comes back", async () => {
    const { leader } = await leaderAndTerm(c);
    const target = [0, 1, 2].find((i) => i !== leader)!;
    const pid = c.pid(target)!;
    const rssBefore = rssMiB(pid);
    const chunk = new Uint8Array(6 * MiB);
    const conns = await Promise.all(Array.from({ length: 12 }, () => rawClient(c.ports[target]!)));
    conns.forEach(({ conn }, i) => conn.send({ k: "snapChunk", from: 100 + i, term: 0, index: 1_000_000, snapTerm: 1, offset: 0, total: 1024 * MiB, crc: 0, data: chunk }));
    await waitFor("the node to close every connection", () => conns.every(({ conn }) => conn.closed), 60000);
    await waitFor(`node ${target}'s RSS back near ${rssBefore.toFixed(0)} MiB`, () => rssMiB(pid) < rssBefore + 40, 15000, 200);
    // Refused as a frame from a connection that is no identified peer (server/gate.ts), or, while still
    // arriving, over the node's budget for partially received frames or its frame timeout (net/limits.ts).
    expect(c.logs(target)).toMatch(/snapshot chunk frame on a connection that is not an identified peer|partially received frames would hold more than|frame timeout/);
  });

  test("a configured peer that abandons a snapshot transfer: dropped when its connection closes", async () => {
    const { leader } = await leaderAndTerm(c);
    const target = [0, 1, 2].find((i) => i !== leader)!;
    const peer = [0, 1, 2].find((i) => i !== leader && i !== target)!;
    const pid = c.pid(target)!;
    const rssBefore = rssMiB(pid);
    const { conn } = await rawClient(c.ports[target]!);
    // A peer's hello names the cluster and the peer's incarnation (server/gate.ts): read them from its data dir.
    const identity = JSON.parse(readFileSync(join(c.dataDir(peer), "IDENTITY"), "utf8"));
    conn.send({ k: "hello", from: peer, cluster: identity.clusterId, incarnation: identity.incarnation });
    const chunk = new Uint8Array(6 * MiB);
    for (let i = 0; i < 10; i++) {
      conn.send({ k: "snapChunk", from: peer, term: 0, index: 1_000_000, snapTerm: 1, offset: i * chunk.length, total: 1024 * MiB, crc: 0, data: chunk });
    }
    await waitFor("the chunks to leave the test's send queue", () => conn.queuedBytes === 0, 60000, 5);
    conn.close();
    await waitFor(`node ${target}'s RSS back near ${rssBefore.toFixed(0)} MiB`, () => rssMiB(pid) < rssBefore + 40, 15000, 200);
    await waitFor("the transfer to be dropped", () => c.logs(target).includes(`dropped an incomplete snapshot transfer from node ${peer}`));
  });
});

describe("reads and transactions whose result is larger than a frame", () => {
  let c: TestCluster;

  beforeAll(async () => {
    c = new TestCluster({ extraArgs: SLOW_ELECTIONS });
    c.startAll();
    await c.waitForLeader();
    const client = c.client(20000);
    // 18 values of 1 MiB: together more than the 16 MiB frame limit.
    const value = new Uint8Array(MiB).fill(120);
    for (let i = 0; i < 18; i++) await client.put(`big/${String(i).padStart(2, "0")}`, value);
    client.close();
  });

  afterAll(async () => {
    await c.cleanup();
  });

  /** The whole result, or the clear refusal; never the cluster giving up. */
  function expectWholeOrRefused(outcome: unknown, whole: (r: never) => void): void {
    if (outcome instanceof RaftKvError) {
      expect(outcome.code).toBe("RESULT_TOO_LARGE");
      return;
    }
    if (outcome instanceof Error) throw outcome;
    whole(outcome as never);
  }

  async function expectHealthy(before: { leader: number; term: number }): Promise<void> {
    const client = c.client(5000);
    expect((await client.put("after", "ok")).revision).toBeGreaterThan(0);
    client.close();
    const st = await c.statuses();
    expect(st.filter((s) => s.reachable).length).toBe(3);
    await expectNoLeaderChange(c, before);
    for (let i = 0; i < 3; i++) expect(c.logs(i)).not.toContain("ready() called twice");
  }

  test("an oversized prefix read fails that request only (or is returned whole); the cluster keeps serving", async () => {
    const before = await leaderAndTerm(c);
    const client = c.client(5000);
    const outcome = await client.range({ key: te.encode("big/"), prefix: true }).catch((e) => e);
    client.close();
    expectWholeOrRefused(outcome, (r: { kvs: unknown[] }) => expect(r.kvs.length).toBe(18));
    await expectHealthy(before);
  });

  test("an oversized serializable read on a follower fails that request only", async () => {
    const before = await leaderAndTerm(c);
    const follower = [0, 1, 2].find((i) => i !== before.leader)!;
    const { conn, replies } = await rawClient(c.ports[follower]!);
    conn.send({ k: "req", id: 1, op: "range", range: { key: te.encode("big/"), prefix: true }, serializable: true });
    await waitFor("a reply", () => replies.size === 1, 10000);
    conn.close();
    const r = replies.get(1)!;
    if (!r.ok) expect(r.code).toBe("RESULT_TOO_LARGE");
    await expectHealthy(before);
  });

  test("a txn whose get returns more than a frame fails that request only; the cluster keeps serving", async () => {
    const before = await leaderAndTerm(c);
    const client = c.client(5000);
    const outcome = await client
      .txn({ compare: [], success: [{ op: "range", key: te.encode("big/"), prefix: true }], failure: [] })
      .catch((e) => e);
    client.close();
    expectWholeOrRefused(outcome, (r: { results: { kvs: unknown[] }[] }) => expect(r.results[0]!.kvs.length).toBe(18));
    await expectHealthy(before);
  });
});
