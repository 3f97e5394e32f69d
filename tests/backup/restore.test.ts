// snapshot restore's data dirs: what the node recovers from them, and the files it refuses.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { BackupWriter, readBackupFile, type BackupHeader } from "../../src/backup/file";
import { restoreBackup } from "../../src/backup/restore";
import { clusterIdOf } from "../../src/storage/identity";
import { KvStore } from "../../src/kv";
import { Wal } from "../../src/storage";
import { b, Driver } from "../kv/helpers";

const dir = mkdtempSync(join(tmpdir(), "raftkv-restore-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const nodes = [0, 1, 2].map((id) => ({ id, host: "127.0.0.1", port: 9000 + id }));

function backup(name: string, patch: Partial<BackupHeader> = {}): string {
  const d = new Driver();
  for (let i = 0; i < 100; i++) d.ok({ op: "put", key: b(`k${i}`), value: b(`v${i}`) });
  const state = d.store.snapshot();
  const header: BackupHeader = {
    revision: d.store.revision,
    index: d.store.appliedIndex,
    term: 7,
    keys: 100,
    size: state.length,
    sha256: createHash("sha256").update(state).digest("hex"),
    node: 0,
    savedAt: new Date(0).toISOString(),
    ...patch,
  };
  const file = join(dir, name);
  const w = new BackupWriter(file, header);
  w.write(state);
  w.finish();
  return file;
}

describe("snapshot restore", () => {
  test("each node's dir recovers the state as a snapshot at a fresh log, committed, no vote", () => {
    const file = backup("ok.rkv");
    const r = restoreBackup(file, nodes, join(dir, "data"));
    expect(r.dirs.map((x) => x.dir)).toEqual([0, 1, 2].map((id) => join(dir, "data", `node-${id}`)));
    // A cluster id of its own, even though the nodes.conf may be the source cluster's; the node checks
    // its nodes.conf against `conf`.
    expect(r.clusterId).toMatch(/^[0-9a-f]{16}$/);
    expect(r.clusterId).not.toBe(clusterIdOf(nodes));
    const { wal, state } = Wal.open(r.dirs[1]!.dir, { log: () => {} });
    wal.close();
    expect(state.snapshot).toMatchObject({ index: 100, term: 7 });
    expect(state.entries).toEqual([]);
    expect(state.hardState).toEqual({ term: 7, vote: -1, commit: 100 });
    const kv = KvStore.restore(state.snapshot!.data);
    expect(kv.revision).toBe(100);
    expect(JSON.parse(readFileSync(join(r.dirs[1]!.dir, "IDENTITY"), "utf8"))).toMatchObject({ clusterId: r.clusterId, nodeId: 1, conf: clusterIdOf(nodes) });
    expect(() => restoreBackup(file, nodes, join(dir, "data"), 2)).toThrow(/exists and is not empty/);
  });

  test("each restore is a new cluster; per-machine restores share the --cluster-id given", () => {
    const file = backup("twice.rkv");
    const first = restoreBackup(file, nodes, join(dir, "m0"), 0);
    expect(restoreBackup(file, nodes, join(dir, "again"), 0).clusterId).not.toBe(first.clusterId);
    const second = restoreBackup(file, nodes, join(dir, "m1"), 1, first.clusterId);
    expect(JSON.parse(readFileSync(join(second.dirs[0]!.dir, "IDENTITY"), "utf8")).clusterId).toBe(first.clusterId);
    expect(() => restoreBackup(file, nodes, join(dir, "m2"), 2, "not-an-id")).toThrow(/16 hex digits/);
  });

  test("refuses a header that does not describe its state, and a file that is not a backup", () => {
    const lying = backup("lying.rkv", { revision: 5 });
    expect(() => restoreBackup(lying, nodes, join(dir, "d2"))).toThrow(/does not match its state/);
    writeFileSync(join(dir, "other"), "0 127.0.0.1 9000\n");
    expect(() => readBackupFile(join(dir, "other"))).toThrow(/is not a raftkv snapshot/);
    const bytes = readFileSync(backup("t.rkv"));
    writeFileSync(join(dir, "cut"), bytes.subarray(0, 20));
    expect(() => readBackupFile(join(dir, "cut"))).toThrow(/truncated: it ends inside its header/);
  });

  test("the writer refuses bytes that do not match the announced checksum and leaves no file", () => {
    const file = join(dir, "bad.rkv");
    const w = new BackupWriter(file, { revision: 1, index: 1, term: 1, keys: 0, size: 3, sha256: "0".repeat(64), node: 0, savedAt: "" });
    w.write(new Uint8Array([1, 2, 3]));
    expect(() => w.finish()).toThrow(/checksum mismatch/);
    w.abort();
    expect(() => readFileSync(file)).toThrow();
    expect(() => readFileSync(`${file}.part`)).toThrow();
  });
});
