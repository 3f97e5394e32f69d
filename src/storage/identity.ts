// Who this node is, recorded in its data directory on first start, and which incarnation of each peer it
// has seen.
//
// IDENTITY holds { clusterId, nodeId, incarnation, conf, joined }. A cluster created from a nodes.conf
// takes as its id a digest of that file (`conf`, the same digest), so every node computes the same one
// without talking; `snapshot restore` writes a new random cluster id (and the digest of the new
// nodes.conf as `conf`); a node started with `serve --join` records `joined` and no `conf`, and learns the
// cluster id from the first member of its nodes.conf that welcomes it (clusterId "" until then). The
// incarnation is a random id drawn once per data directory. A node started on another node's data dir, or
// (unless it joined) with a nodes.conf other than its data dir's, is refused. A data dir emptied behind the
// cluster's back draws a new incarnation, which the peers (who recorded the old one in their PEERS file
// before acting on its Raft messages) refuse: an empty data dir is not permission to rejoin, because the
// node forgot its term, vote and log.
//
// Both files are small JSON documents written durably: temp file, fdatasync, rename, fsync of the directory.

import { createHash, randomBytes, randomUUID } from "node:crypto";
import * as path from "node:path";
import type { NodeAddr } from "../config";
import { readWholeFile, realDisk, type Disk } from "./disk";
import { errorCode } from "./util";

export const IDENTITY_FILE_NAME = "IDENTITY";
export const PEERS_FILE_NAME = "PEERS";

export interface NodeIdentity {
  /** The id peers compare in their hellos; "" while a node that joined has not been welcomed yet. */
  clusterId: string;
  nodeId: number;
  /** Random, drawn when this data directory was first used; a wiped directory gets a new one. */
  incarnation: string;
  /** clusterIdOf the nodes.conf this data dir was created with (absent when it joined); checked at start. */
  conf?: string;
  /** Created by `serve --join`: the configuration comes from the cluster, nodes.conf only says where members are. */
  joined?: boolean;
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

/** A new cluster id for a cluster that is not created from a nodes.conf of its own (a restore). */
export function randomClusterId(): string {
  return randomBytes(8).toString("hex");
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
  if (
    !v ||
    typeof v.clusterId !== "string" ||
    !Number.isSafeInteger(v.nodeId) ||
    typeof v.incarnation !== "string" ||
    (v.conf !== undefined && typeof v.conf !== "string") ||
    (v.joined !== undefined && v.joined !== true)
  ) {
    throw new IdentityError(`${file} is malformed: expected clusterId, nodeId and incarnation (and conf or joined)`);
  }
  const identity: NodeIdentity = { clusterId: v.clusterId, nodeId: v.nodeId as number, incarnation: v.incarnation };
  if (v.joined) identity.joined = true;
  // Files written before `conf` existed: the cluster id was the digest of nodes.conf.
  else identity.conf = v.conf ?? v.clusterId;
  return identity;
}

/** Records `identity` in dataDir/IDENTITY durably. */
export function writeIdentity(dataDir: string, identity: NodeIdentity, disk: Disk = realDisk): void {
  writeFileDurably(dataDir, IDENTITY_FILE_NAME, JSON.stringify(identity) + "\n", disk);
}

/**
 * The identity recorded in dataDir; on first use of the directory, records a new one: with `join`, a node
 * that joins a running cluster (cluster id to be learned); else a node of the cluster created from the
 * nodes.conf whose digest is `conf`. Throws IdentityError when the directory belongs to another node, or
 * (unless the node joined) was created with another nodes.conf. `created` says whether this start drew the
 * incarnation. On an existing data dir `join` changes nothing: the data dir says what the node is.
 */
export function loadOrCreateIdentity(
  dataDir: string,
  want: { conf: string; nodeId: number; join: boolean },
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
    if (!identity.joined && identity.conf !== want.conf) {
      throw new IdentityError(
        `data dir ${dataDir} belongs to cluster ${identity.clusterId}, and the nodes.conf differs from the one the cluster was created with ` +
          `(ids, addresses or ports); start the node with that nodes.conf` +
          (want.join ? " (this data dir was not created by --join, so the node takes its members from nodes.conf: --join does not change that)" : ""),
      );
    }
    return { identity, created: false };
  }
  const incarnation = randomUUID();
  const identity: NodeIdentity = want.join
    ? { clusterId: "", nodeId: want.nodeId, incarnation, joined: true }
    : { clusterId: want.conf, nodeId: want.nodeId, incarnation, conf: want.conf };
  writeIdentity(dataDir, identity, disk);
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
