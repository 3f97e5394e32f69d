#!/usr/bin/env bun
// raftkv: one binary that is both a Raft node (`serve`) and its client (`put`, `get`, `del`, `status`, ...).
// This is the command table; each group of commands lives in src/cli/<group>.ts and is a thin call into
// server/ or client/ (shared flags, output and exit codes: src/cli/common.ts).

import cac from "cac";
import { VERSION } from "./protocol";
import { registerServe } from "./cli/serve";
import { registerKv } from "./cli/kv";
import { registerWatch } from "./cli/watch";
import { registerLease } from "./cli/lease";
import { registerLock } from "./cli/lock";
import { registerBench } from "./cli/bench";
import { registerStatus } from "./cli/status";
import { registerCluster } from "./cli/cluster";
import { registerCerts } from "./cli/certs";
import { registerAdmin } from "./cli/admin";

const cli = cac("raftkv");

registerServe(cli);
registerKv(cli);
registerWatch(cli);
registerLease(cli);
registerLock(cli);
registerBench(cli);
registerStatus(cli);
registerCluster(cli);
registerCerts(cli);
registerAdmin(cli);

cli.help();
cli.version(VERSION);

try {
  cli.parse(process.argv, { run: false });
  if (!cli.matchedCommand) {
    if (cli.args.length) {
      console.error(`error: unknown command ${JSON.stringify(cli.args[0])}; see raftkv --help`);
      process.exit(2);
    }
    if (!cli.options.help && !cli.options.version) {
      cli.outputHelp();
      process.exit(cli.rawArgs.length > 2 ? 2 : 0);
    }
  } else {
    await cli.runMatchedCommand();
  }
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  process.exit(2);
}
