// Backup and restore with the compiled binary: `snapshot save` from a cluster under a steady write load,
// `snapshot restore` into a new 3-node cluster (new ports, new data dirs), every saved key read back
// with its value and revisions; and the refusals (bad checksum, truncated, foreign file, non-empty dir).
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { toText } from "../../src/client/client";
import { BIN, TestCluster, waitFor } from "./harness";

const KEYS = 1500;
/** Values big enough that the state spans several 1 MiB chunks, small enough that it reads back in one page. */
const VALUE_PAD = "v".repeat(1500);

describe("backup and restore", () => {
  const clusters: TestCluster[] = [];
  afterAll(async () => {
    for (const c of clusters) await c.cleanup();
  });

  test("save under a write load, restore into a new 3-node cluster, read every key back; refusals", async () => {
    const src = new TestCluster();
    clusters.push(src);
    src.startAll();
    await src.waitForLeader();

    const loader = src.client();
    for (let i = 0; i < KEYS; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => loader.put(`k${i + j}`, `${i + j}:${VALUE_PAD}`)));
    }
    // A steady write load (overwrites and new keys) runs while the snapshot is saved.
    let stop = false;
    let written = 0;
    const writer = (async () => {
      const c = src.client();
      for (let n = 0; !stop; n++) {
        await c.put(n % 2 ? `k${n % KEYS}` : `load${n}`, `w${n}`);
        written++;
      }
      c.close();
    })();
    await waitFor("writes under load", () => written >= 20);

    const file = join(src.dir, "backup.rkv");
    const writtenBeforeSave = written;
    const saved = await src.cli(["snapshot", "save", file, "--json"], { timeoutMs: 30000 });
    // Writes kept being acknowledged while the save ran.
    expect(written).toBeGreaterThan(writtenBeforeSave);
    stop = true;
    await writer;
    expect(saved.stderr).toBe("");
    expect(saved.code).toBe(0);
    const info = JSON.parse(saved.stdout) as { revision: number; index: number; keys: number; bytes: number; sha256: string };
    expect(info.keys).toBeGreaterThanOrEqual(KEYS);
    expect(info.bytes).toBeGreaterThan(2 * 1024 * 1024);
    expect(info.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(existsSync(`${file}.part`)).toBe(false);
    // The state as of the saved revision, read from the source cluster's history.
    const atRev = await loader.range({ key: new Uint8Array(0), rangeEnd: new Uint8Array([0]), revision: info.revision, limit: 0 });
    const expected = new Map(atRev.kvs.map((kv) => [toText(kv.key), kv]));
    loader.close();
    expect(expected.size).toBe(info.keys);

    // Restore into a new cluster: new ports, new data dirs.
    const dst = new TestCluster();
    clusters.push(dst);
    const restored = Bun.spawnSync([BIN, "snapshot", "restore", file, "--config", dst.conf, "--data-dir", dst.dir, "--json"]);
    expect(restored.stderr.toString()).toBe("");
    expect(restored.exitCode).toBe(0);
    const r = JSON.parse(restored.stdout.toString()) as { revision: number; clusterId: string; dataDirs: { id: number; dir: string }[] };
    expect(r.revision).toBe(info.revision);
    expect(r.dataDirs.map((d) => d.dir)).toEqual([0, 1, 2].map((id) => dst.dataDir(id)));
    const identity = JSON.parse(readFileSync(join(dst.dataDir(0), "IDENTITY"), "utf8")) as { clusterId: string; nodeId: number };
    expect(identity).toMatchObject({ clusterId: r.clusterId, nodeId: 0 });
    const sourceCluster = JSON.parse(
      Bun.spawnSync([BIN, "snapshot", "restore", file, "--config", src.conf, "--data-dir", join(src.dir, "probe"), "--id", "0", "--json"]).stdout.toString(),
    ).clusterId;
    expect(r.clusterId).not.toBe(sourceCluster);

    dst.startAll();
    await dst.waitForLeader();
    const reader = dst.client();
    const got = await reader.range({ key: new Uint8Array(0), rangeEnd: new Uint8Array([0]), limit: 0 });
    expect(got.revision).toBe(info.revision);
    expect(got.kvs.length).toBe(expected.size);
    for (const kv of got.kvs) {
      const want = expected.get(toText(kv.key));
      expect(want).toBeDefined();
      expect(toText(kv.value)).toBe(toText(want!.value));
      expect([kv.createRevision, kv.modRevision, kv.version]).toEqual([want!.createRevision, want!.modRevision, want!.version]);
    }
    // The new cluster takes writes, continuing the revision.
    const put = await reader.put("after-restore", "1");
    expect(put.revision).toBe(info.revision + 1);
    reader.close();

    // Refusals: the restored dirs are not empty; a damaged, truncated or foreign file.
    const refuse = async (args: string[]) => {
      const p = Bun.spawn([BIN, "snapshot", "restore", ...args], { stdout: "ignore", stderr: "pipe", stdin: "ignore" });
      const err = await new Response(p.stderr).text();
      return { code: await p.exited, err };
    };
    const bytes = readFileSync(file);
    const flipped = Uint8Array.from(bytes);
    flipped[flipped.length - 10]! ^= 0xff;
    writeFileSync(join(src.dir, "flipped.rkv"), flipped);
    writeFileSync(join(src.dir, "short.rkv"), bytes.subarray(0, bytes.length - 1000));
    const fresh = join(src.dir, "fresh");
    const [again, bad, short, foreign] = await Promise.all([
      refuse([file, "--config", dst.conf, "--data-dir", dst.dir]),
      refuse([join(src.dir, "flipped.rkv"), "--config", dst.conf, "--data-dir", fresh]),
      refuse([join(src.dir, "short.rkv"), "--config", dst.conf, "--data-dir", fresh]),
      refuse([dst.conf, "--config", dst.conf, "--data-dir", fresh]),
    ]);
    expect(again).toMatchObject({ code: 2, err: expect.stringContaining("exists and is not empty") });
    expect(bad).toMatchObject({ code: 2, err: expect.stringContaining("fails its checksum") });
    expect(short).toMatchObject({ code: 2, err: expect.stringContaining("is truncated") });
    expect(foreign).toMatchObject({ code: 2, err: expect.stringContaining("is not a raftkv snapshot") });
    expect(existsSync(fresh)).toBe(false);
  }, 120_000);
});
