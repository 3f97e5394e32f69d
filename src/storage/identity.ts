// Who this node is, recorded in its data directory on first start, and which incarnation of each peer it
// has seen.
//
// IDENTITY holds { clusterId, nodeId, incarnation }. The cluster id is derived from the nodes.conf the
// cluster was created with, so every node computes the same one without talking; the incarnation is a
// random id drawn once per data directory. A node started on another node's data dir, or with a nodes.conf
// of another cluster, is refused. A data dir emptied behind the cluster's back draws a new incarnation,
// which the peers (who recorded the old one in their PEERS file before acting on its Raft messages) refuse:
// an empty data dir is not permission to rejoin, because the node forgot its term, vote and log.
//
// Both files are small JSON documents written durably: temp file, fdatasync, rename, fsync of the directory.

import { createHash, randomUUID } from "node:crypto";
import * as path from "node:path";
import type { NodeAddr } from "../config";
import { readWholeFile, realDisk, type Disk } from "./disk";
import { errorCode } from "./util";

export const IDENTITY_FILE_NAME = "IDENTITY";
export const PEERS_FILE_NAME = "PEERS";

export interface NodeIdentity {
  clusterId: string;
  nodeId: number;
  /** Random, drawn when this data directory was first used; a wiped directory gets a new one. */
  incarnation: string;
}

/** The data dir belongs to another node or another cluster: the node must not start. */
export class IdentityError extends Error {
  override readonly name = "IdentityError";
}

/** The cluster id of a cluster created from this membership: a digest of its ids and addresses. */
export function clusterIdOf(nodes: readonly NodeAddr[]): string {
  const canonical = [...nodes]
    .sort((a, b) => a.id - b.id)
    .map((n) => `${n.id} ${n.host} ${n.port}\n`)
    .join("");
  return createHash("sha256").update(canonical).digest("hex").slice(0, 16);
}

/** Writes text to dir/name so that after a crash the file holds either the old or the new text. */
export function writeFileDurably(dir: string, name: string, text: string, disk: Disk = realDisk): void {
  const target = path.join(dir, name);
  const temp = `${target}.tmp`;
  try {
    disk.unlink(temp); // left by a crash mid-write
  } catch (err) {
    if (errorCode(err) !== "ENOENT") throw err;
  }
  const fd = disk.open(temp, "wx");
  try {
    disk.write(fd, new TextEncoder().encode(text), 0);
    disk.fdatasync(fd);
  } finally {
    disk.close(fd);
  }
  disk.rename(temp, target);
  disk.fsyncDir(dir);
}

function readJson(file: string, disk: Disk): unknown | undefined {
  let text: string;
  try {
    text = new TextDecoder().decode(readWholeFile(disk, file));
  } catch (err) {
    if (errorCode(err) === "ENOENT") return undefined;
    throw new IdentityError(`cannot read ${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new IdentityError(`${file} is not valid JSON (${(err as Error).message}); it records which node this data dir belongs to, do not edit it`);
  }
}

function parseIdentity(value: unknown, file: string): NodeIdentity {
  const v = value as Partial<NodeIdentity> | null;
  if (!v || typeof v.clusterId !== "string" || !Number.isSafeInteger(v.nodeId) || typeof v.incarnation !== "string") {
    throw new IdentityError(`${file} is malformed: expected clusterId, nodeId and incarnation`);
  }
  return { clusterId: v.clusterId, nodeId: v.nodeId as number, incarnation: v.incarnation };
}

/**
 * The identity recorded in dataDir; on first use of the directory, records a new one (cluster id and
 * node id as given, a fresh incarnation). Throws IdentityError when the directory belongs to another node
 * or another cluster. `created` says whether this start drew the incarnation.
 */
export function loadOrCreateIdentity(
  dataDir: string,
  want: { clusterId: string; nodeId: number },
  disk: Disk = realDisk,
): { identity: NodeIdentity; created: boolean } {
  const file = path.join(dataDir, IDENTITY_FILE_NAME);
  const found = readJson(file, disk);
  if (found !== undefined) {
    const identity = parseIdentity(found, file);
    if (identity.nodeId !== want.nodeId) {
      throw new IdentityError(
        `data dir ${dataDir} belongs to node ${identity.nodeId}, not node ${want.nodeId} (${file}); ` +
          `start it as \`raftkv serve ${identity.nodeId} ...\`, or give node ${want.nodeId} its own --data-dir`,
      );
    }
    if (identity.clusterId !== want.clusterId) {
      throw new IdentityError(
        `data dir ${dataDir} belongs to cluster ${identity.clusterId}, but this nodes.conf describes cluster ${want.clusterId}: ` +
          `the nodes.conf differs from the one the cluster was created with (ids, addresses or ports); start the node with that nodes.conf`,
      );
    }
    return { identity, created: false };
  }
  const identity: NodeIdentity = { clusterId: want.clusterId, nodeId: want.nodeId, incarnation: randomUUID() };
  writeFileDurably(dataDir, IDENTITY_FILE_NAME, JSON.stringify(identity) + "\n", disk);
  return { identity, created: true };
}

/**
 * The incarnation this node first saw for each peer, kept in dataDir/PEERS. `record` writes durably before
 * it returns, so a peer's Raft messages are acted on only once its incarnation is on disk.
 */
export class KnownPeers {
  private readonly incarnations = new Map<number, string>();

  constructor(
    private readonly dataDir: string,
    private readonly disk: Disk = realDisk,
  ) {
    const file = path.join(dataDir, PEERS_FILE_NAME);
    const found = readJson(file, disk) as { incarnations?: Record<string, unknown> } | undefined;
    if (found === undefined) return;
    if (!found || typeof found.incarnations !== "object" || found.incarnations === null) {
      throw new IdentityError(`${file} is malformed: expected {"incarnations": {...}}`);
    }
    for (const [id, inc] of Object.entries(found.incarnations)) {
      if (!/^\d+$/.test(id) || typeof inc !== "string") throw new IdentityError(`${file} is malformed at peer ${JSON.stringify(id)}`);
      this.incarnations.set(Number(id), inc);
    }
  }

  get(nodeId: number): string | undefined {
    return this.incarnations.get(nodeId);
  }

  record(nodeId: number, incarnation: string): void {
    const next = new Map(this.incarnations).set(nodeId, incarnation);
    const incarnations = Object.fromEntries([...next].sort((a, b) => a[0] - b[0]));
    writeFileDurably(this.dataDir, PEERS_FILE_NAME, JSON.stringify({ incarnations }) + "\n", this.disk);
    this.incarnations.set(nodeId, incarnation);
  }
}
