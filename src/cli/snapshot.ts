// raftkv snapshot save FILE | snapshot restore FILE: back up the state machine from the leader, and build
// the data dirs of a new cluster from such a backup.

import type { CAC } from "cac";
import { BackupFileError, BackupWriter } from "../backup/file";
import { nodeDataDir, restoreBackup } from "../backup/restore";
import { loadNodesConf } from "../config";
import { client, clientOptions, isJson, printJson, run, UsageError, type ClientFlags } from "./common";

interface SnapshotFlags extends ClientFlags {
  dataDir?: string;
  id?: string;
  clusterId?: string;
}

export function registerSnapshot(cli: CAC): void {
  clientOptions(
    cli.command(
      "snapshot <action> <file>",
      "save FILE: stream a consistent snapshot of the state (one revision) from the leader into FILE, checksum verified | " +
        "restore FILE: build the data dirs of a NEW cluster from FILE (--config its nodes.conf, --data-dir DIR: writes DIR/node-<id>)",
    ),
  )
    .option("--data-dir <dir>", "restore: parent of the new data dirs; node <id> gets <dir>/node-<id>, serve's default layout", { default: "data" })
    .option("--id <id>", "restore: write only node <id>'s data dir (run once per machine, with the same --cluster-id)")
    .option("--cluster-id <id>", "restore: the new cluster's id (default: a new random one); give every per-machine restore the id the first one printed")
    .usage(
      "snapshot save FILE | snapshot restore FILE --config nodes.conf --data-dir DIR [--id ID]\n\n" +
        "  save     ask the leader for its state at one confirmed revision and write it to FILE (via FILE.part,\n" +
        "           size and sha256 verified, fsynced, renamed); prints revision, index, keys, bytes, sha256.\n" +
        "           A large state takes a while to capture: raise --timeout.\n" +
        "  restore  verify FILE and write DIR/node-<id> for every node of --config (the NEW cluster's\n" +
        "           nodes.conf), or only --id: the state, a fresh log, that membership, a new cluster id\n" +
        "           (random, even with the old nodes.conf; restoring per machine with --id, pass the id the\n" +
        "           first restore printed as --cluster-id to the others).\n" +
        "           Refuses a non-empty data dir, a bad checksum, a truncated file, a file that is not a backup.\n" +
        "           Then start each node: raftkv serve <id> nodes.conf --data-dir DIR/node-<id>",
    )
    .example("raftkv snapshot save backup.rkv")
    .example("raftkv snapshot restore backup.rkv --config new-nodes.conf --data-dir data")
    .action((action: string, file: string, flags: SnapshotFlags) =>
      run(async () => {
        if (action === "save") return save(String(file), flags);
        if (action === "restore") return restore(String(file), flags);
        throw new UsageError(`unknown snapshot action ${JSON.stringify(action)}: save or restore`);
      }),
    );
}

async function save(file: string, flags: SnapshotFlags): Promise<void> {
  const c = client(flags);
  let writer: BackupWriter | null = null;
  try {
    const h = await c.snapshotSave(
      (h) => {
        writer = new BackupWriter(file, {
          revision: h.revision,
          index: h.index,
          term: h.term,
          keys: h.keys,
          size: h.size,
          sha256: h.sha256,
          node: h.node,
          savedAt: new Date().toISOString(),
        });
      },
      (chunk) => writer!.write(chunk),
    );
    writer!.finish();
    const out = { file, revision: h.revision, index: h.index, term: h.term, keys: h.keys, bytes: h.size, sha256: h.sha256, node: h.node };
    if (isJson(flags)) printJson(out);
    else console.log(`saved ${file}: revision ${h.revision}, index ${h.index}, ${h.keys} keys, ${h.size} bytes, sha256 ${h.sha256} (from node ${h.node})`);
  } catch (err) {
    (writer as BackupWriter | null)?.abort();
    throw err;
  } finally {
    c.close();
  }
}

async function restore(file: string, flags: SnapshotFlags): Promise<void> {
  if (flags.endpoints) throw new UsageError("snapshot restore works on files, not a running cluster: drop --endpoints");
  const nodes = loadNodesConf(flags.config ?? "nodes.conf");
  let only: number | undefined;
  if (flags.id !== undefined) {
    if (!/^\d+$/.test(String(flags.id))) throw new UsageError(`--id must be a node id, got ${JSON.stringify(flags.id)}`);
    only = Number(flags.id);
  }
  const parent = String(flags.dataDir ?? "data");
  let r;
  try {
    r = restoreBackup(file, nodes, parent, only, flags.clusterId === undefined ? undefined : String(flags.clusterId));
  } catch (err) {
    if (err instanceof BackupFileError) throw new UsageError(err.message);
    throw err;
  }
  const conf = flags.config ?? "nodes.conf";
  if (isJson(flags)) {
    printJson({ file, revision: r.header.revision, index: r.header.index, keys: r.header.keys, clusterId: r.clusterId, dataDirs: r.dirs });
    return;
  }
  console.log(`restored ${file} (revision ${r.header.revision}, ${r.header.keys} keys) as new cluster ${r.clusterId}:`);
  for (const { id } of r.dirs) console.log(`  node ${id}: ${nodeDataDir(parent, id)}    start it with: raftkv serve ${id} ${conf} --data-dir ${nodeDataDir(parent, id)}`);
  const rest = nodes.filter((n) => !r.dirs.some((d) => d.id === n.id));
  if (rest.length > 0 && flags.clusterId === undefined) {
    console.log(`restore the other nodes into the same cluster with: raftkv snapshot restore ${file} --config ${conf} --id ID --cluster-id ${r.clusterId}`);
  }
}
