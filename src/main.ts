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
import { registerMember } from "./cli/member";
import { registerSnapshot } from "./cli/snapshot";
import { parseCommandLine } from "./cli/parse";

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
registerMember(cli);
registerSnapshot(cli);

cli.usage(`<command> [options]

  Exit codes: 0 success; 1 not found or refused (a failed cas, a too-large value); 2 bad usage or
  configuration; 3 cluster unavailable (no quorum, no answer within --timeout); 4 no endpoint reachable
  (connection refused, host not found, not a raftkv node).`);
cli.help();
cli.option("-v, --version", "Print raftkv's version");

const argv = process.argv.slice(2);
try {
  if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-v")) {
    console.log(`raftkv ${VERSION}`);
    process.exit(0);
  }
  if (!argv.length) {
    cli.outputHelp();
    process.exit(0);
  }
  cli.parse(process.argv, { run: false }); // prints --help (of the command, if one is named)
  if (cli.options.help) process.exit(0);
  const { command, args, options } = parseCommandLine(cli, argv);
  await command.commandAction!(...args, options);
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  process.exit(2);
}
