// Durability of the compiled binary: kill -9 under load, whole-cluster restarts, and a node that was
// down catching up through InstallSnapshot. (A node whose data dir was wiped is refused: identity.test.ts.)
import { afterAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { RaftKvClient, RaftKvError, toText } from "../../src/client/client";
import { mulberry32 } from "../rng";
import { BIN, TestCluster, waitFor } from "./harness";

const SEED = Number(process.env.RAFTKV_E2E_SEED ?? Date.now() % 100000);

/** Per key: the last acknowledged value, and values attempted after it whose outcome is unknown. */
class Ledger {
  readonly acked = new Map<string, string>();
  readonly unknown = new Map<string, Set<string>>();
  ack(key: string, value: string): void {
    this.acked.set(key, value);
    this.unknown.delete(key);
  }
  maybe(key: string, value: string): void {
    let s = this.unknown.get(key);
    if (!s) this.unknown.set(key, (s = new Set()));
    s.add(value);
  }
  async verify(client: RaftKvClient, opts: { serializable?: boolean } = {}): Promise<void> {
    for (const [key, value] of this.acked) {
      const kv = await client.get(key, opts);
      const got = kv ? toText(kv.value) : null;
      if (got !== value && !(got !== null && this.unknown.get(key)?.has(got))) {
        throw new Error(`key ${key}: expected ${value} (acknowledged), got ${got} [seed ${SEED}]`);
      }
    }
  }
}

describe("durability", () => {
  const clusters: TestCluster[] = [];
  afterAll(async () => {
    for (const c of clusters) await c.cleanup();
  });
  /** A running 3-node cluster with a leader, cleaned up after the file. */
  async function freshCluster(extraArgs: string[] = []): Promise<TestCluster> {
    const c = new TestCluster({ extraArgs });
    clusters.push(c);
    c.startAll();
    await c.waitForLeader();
    return c;
  }

  test("kill -9 of random nodes (leader included) under write load loses no acknowledged write", async () => {
    const rng = mulberry32(SEED);
    const c = await freshCluster();
    const ledger = new Ledger();
    let stop = false;
    let acks = 0;
    const writer = async (w: number) => {
      const client = c.client(4000);
      for (let n = 0; !stop; n++) {
        const key = `w${w}-${n % 40}`;
        const value = `${w}:${n}`;
        try {
          await client.put(key, value);
          ledger.ack(key, value);
          acks++;
        } catch (err) {
          if (!(err instanceof RaftKvError)) throw err;
          ledger.maybe(key, value); // outcome unknown: it may still have been applied
        }
      }
      client.close();
    };
    const writers = [0, 1, 2, 3].map(writer);
    try {
      for (let round = 0; round < 4; round++) {
        const before = acks;
        await waitFor("writes to be acknowledged", () => acks >= before + 30, 20000);
        const victim = round % 2 === 0 ? await c.waitForLeader(20000) : Math.floor(rng() * 3);
        await c.kill(victim);
        const during = acks;
        await waitFor("writes to continue without the killed node", () => acks >= during + 20, 20000);
        c.start(victim);
      }
    } finally {
      stop = true;
      await Promise.all(writers);
    }
    await c.waitForLeader();
    const client = c.client();
    expect(ledger.acked.size).toBeGreaterThan(50);
    await ledger.verify(client);
    client.close();
  });

  test("stopping and restarting the whole cluster keeps all data", async () => {
    const c = await freshCluster();
    const client = c.client();
    for (let i = 0; i < 200; i++) await client.put(`r${i}`, `value-${i}`);
    await client.delete("r7");
    // A second process on a data directory in use refuses to start, and says why.
    const second = Bun.spawnSync([BIN, "serve", "0", c.conf, "--data-dir", c.dataDir(0)], { stderr: "pipe" });
    expect(second.exitCode).not.toBe(0);
    expect(second.stderr.toString()).toContain(`is in use by process ${c.pid(0)}`);
    await c.stopAll(); // SIGKILL, all at once
    c.startAll();
    await c.waitForLeader();
    for (let i = 0; i < 200; i++) {
      const kv = await client.get(`r${i}`);
      expect(kv ? toText(kv.value) : null).toBe(i === 7 ? null : `value-${i}`);
    }
    client.close();
  });

  test("a corrupt WAL record stops the node with an error naming file and offset; the others keep serving", async () => {
    const c = await freshCluster();
    const client = c.client();
    for (let i = 0; i < 100; i++) await client.put(`c${i}`, "x".repeat(50));
    await c.kill(2);
    const seg = readdirSync(c.dataDir(2)).filter((f) => f.startsWith("wal-")).sort()[0]!;
    const path = join(c.dataDir(2), seg);
    const bytes = readFileSync(path);
    bytes[Math.floor(bytes.length / 2)] ^= 0x40; // flip a bit mid-log, not at the tail
    writeFileSync(path, bytes);
    const p = c.start(2);
    expect(await p.exited).not.toBe(0);
    expect(c.logs(2)).toMatch(new RegExp(`corrupt WAL record in .*${seg} at offset \\d+`));
    expect((await client.put("still", "serving")).revision).toBeGreaterThan(0);
    client.close();
    await c.kill(2);
  });

  test("a node that was down while the log was compacted catches up through InstallSnapshot", async () => {
    const c = await freshCluster(["--snapshot-entries", "100"]);
    const leader = await c.waitForLeader();
    const client = c.client();
    for (let i = 0; i < 600; i++) await client.put(`s${i % 300}`, `gen${Math.floor(i / 300)}-${i}`);
    const follower = [0, 1, 2].find((i) => i !== leader)!;
    await waitFor("the leader to take a snapshot", async () => (await c.statuses()).find((s) => s.id === leader)!.snapshotIndex! > 0);
    await c.kill(follower);
    for (let i = 600; i < 850; i += 10) {
      await Promise.all(Array.from({ length: 10 }, (_, j) => client.put(`s${(i + j) % 300}`, `gen2-${i + j}`)));
    }
    await waitFor("a snapshot past the stopped follower's log", async () => (await c.statuses()).find((s) => s.id === leader)!.snapshotIndex! > 700);
    c.start(follower);
    const target = (await c.statuses()).find((s) => s.id === leader)!.commitIndex!;
    await waitFor("the stopped node to catch up", async () => (await c.statuses()).find((s) => s.id === follower)?.appliedIndex! >= target, 20000);
    expect(c.logs(follower)).toContain("installed snapshot from leader");
    const local = new RaftKvClient({ endpoints: [c.endpoint(follower)], timeoutMs: 5000 });
    const all = await client.range({ key: new Uint8Array(0), prefix: true });
    const mine = await local.range({ key: new Uint8Array(0), prefix: true }, { serializable: true });
    expect(mine.count).toBe(300);
    expect(mine.kvs.map((kv) => `${toText(kv.key)}=${toText(kv.value)}`)).toEqual(all.kvs.map((kv) => `${toText(kv.key)}=${toText(kv.value)}`));
    local.close();
    client.close();
  });
});
