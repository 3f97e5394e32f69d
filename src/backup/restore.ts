// `raftkv snapshot restore`: build the data dirs of a new cluster from a backup file (as etcdctl
// snapshot restore does). Each node's dir holds the backup's state as its snapshot, a fresh log that
// starts right after it, and an identity naming a new cluster (a random id, or the one given, so that
// per-machine restores agree); the membership is the nodes.conf given
// (a snapshot with no configuration in it means "the bootstrap configuration": every node of nodes.conf
// a voter). The nodes then start with `raftkv serve ID nodes.conf --data-dir DIR/node-ID`.

import { randomUUID } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import * as path from "node:path";
import type { NodeAddr } from "../config";
import { KvStore } from "../kv/store";
import { NONE } from "../raft/types";
import { lockDataDir, Wal, writeSnapshot } from "../storage";
import { clusterIdOf, randomClusterId, writeIdentity } from "../storage/identity";
import { BackupFileError, readBackupFile, type BackupHeader } from "./file";

/** Where `serve` keeps node `id`'s data under a parent dir (its default is data/node-<id>). */
export function nodeDataDir(parent: string, id: number): string {
  return path.join(parent, `node-${id}`);
}

export interface RestoreResult {
  header: BackupHeader;
  clusterId: string;
  dirs: { id: number; dir: string }[];
}

/** What `--cluster-id` accepts: the form restore prints. */
export const CLUSTER_ID_PATTERN = /^[0-9a-f]{16}$/;

/**
 * Verify `file` and write a data dir for each node of `nodes` (or only node `only`) under `parent`, all
 * naming cluster `clusterId` (default: a new random id). Refuses (BackupFileError) a damaged or foreign
 * file, and any target dir that exists and is not empty, before writing anything.
 */
export function restoreBackup(file: string, nodes: readonly NodeAddr[], parent: string, only?: number, clusterId = randomClusterId()): RestoreResult {
  if (!CLUSTER_ID_PATTERN.test(clusterId)) throw new BackupFileError(`cluster id must be 16 hex digits as restore prints it, got ${JSON.stringify(clusterId)}`);
  const targets = only === undefined ? nodes : nodes.filter((n) => n.id === only);
  if (targets.length === 0) throw new BackupFileError(`node ${only} is not in the configuration (ids: ${nodes.map((n) => n.id).join(", ")})`);
  const { header, state } = readBackupFile(file);
  // The state must load, and be the state the header describes.
  let kv: KvStore;
  try {
    kv = KvStore.restore(state);
  } catch (err) {
    throw new BackupFileError(`${file} passes its checksum but its state does not load: ${(err as Error).message}`);
  }
  if (kv.revision !== header.revision || kv.appliedIndex !== header.index || kv.stats().keys !== header.keys) {
    throw new BackupFileError(
      `${file}: its header (revision ${header.revision}, index ${header.index}, ${header.keys} keys) does not match its state ` +
        `(revision ${kv.revision}, index ${kv.appliedIndex}, ${kv.stats().keys} keys)`,
    );
  }
  const dirs = targets.map((n) => ({ id: n.id, dir: nodeDataDir(parent, n.id) }));
  for (const { dir } of dirs) {
    if (existsSync(dir) && readdirSync(dir).length > 0) {
      throw new BackupFileError(`data dir ${dir} exists and is not empty: restore builds new data dirs only; move it aside or pick another --data-dir`);
    }
  }
  const conf = clusterIdOf(nodes);
  for (const { id, dir } of dirs) writeDataDir(dir, id, header, state, clusterId, conf);
  return { header, clusterId, dirs };
}

/**
 * One node's data dir: the snapshot (the state applied through header.index, kept as it was because the
 * state machine skips entries at or below the index it records), then a WAL whose log starts after it,
 * committed through it, with no vote cast.
 */
function writeDataDir(dir: string, id: number, header: BackupHeader, state: Uint8Array, clusterId: string, conf: string): void {
  const lock = lockDataDir(dir);
  try {
    const meta = { index: header.index, term: header.term };
    const { wal } = Wal.open(dir, { log: () => {} });
    try {
      writeSnapshot(dir, { ...meta, data: state });
      wal.resetLog(meta);
      wal.setHardState({ term: header.term, vote: NONE, commit: header.index });
      wal.sync();
    } finally {
      wal.close();
    }
    // The node checks `conf` (its nodes.conf) at start; peers compare the cluster id in their hellos.
    writeIdentity(dir, { clusterId, nodeId: id, incarnation: randomUUID(), conf });
  } finally {
    lock.release();
  }
}
