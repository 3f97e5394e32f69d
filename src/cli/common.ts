// Helpers every command shares: where the cluster is, how output is written, exit codes.

import type { Command } from "cac";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { ConfigError, formatAddr, loadNodesConf } from "../config";
import { RaftKvClient, RaftKvError, toText } from "../client/client";
import type { KeyValue } from "../kv/types";
import { CA_FILE, certFilesIn, loadTlsMaterial, TlsError, type TlsFiles, type TlsMaterial } from "../net/tls";

/** Exit codes: 0 ok, 1 not found / request failed, 2 bad usage or configuration, 3 cluster unavailable. */
export class UsageError extends Error {}

export interface ClientFlags {
  endpoints?: string;
  config?: string;
  json?: boolean;
  writeOut?: string;
  timeout?: number;
  certs?: string;
  ca?: string;
  cert?: string;
  key?: string;
}

/** The certificate files given by --ca/--cert/--key (all three), or by a certs directory and a name. */
export function tlsFilesFrom(flags: { certs?: string; ca?: string; cert?: string; key?: string }, name: string, defaultDir?: string): TlsFiles | undefined {
  const given = [flags.ca, flags.cert, flags.key].filter((v) => v !== undefined).length;
  if (given > 0) {
    if (given < 3 || flags.certs) throw new UsageError("give --ca, --cert and --key together (or --certs DIR instead)");
    return { ca: String(flags.ca), cert: String(flags.cert), key: String(flags.key) };
  }
  if (flags.certs) return certFilesIn(String(flags.certs), name);
  if (defaultDir && existsSync(join(defaultDir, CA_FILE))) return certFilesIn(defaultDir, name);
  return undefined;
}

/**
 * TLS for client commands: --certs DIR (DIR/ca.pem, DIR/admin.pem, DIR/admin.key), --ca/--cert/--key,
 * $RAFTKV_CERTS, or a certs/ directory beside the nodes.conf the endpoints come from.
 */
export function clientTls(flags: ClientFlags): TlsMaterial | undefined {
  const fromConfig = !flags.endpoints && !process.env.RAFTKV_ENDPOINTS ? join(dirname(flags.config ?? "nodes.conf"), "certs") : undefined;
  const files = tlsFilesFrom({ ...flags, certs: flags.certs ?? process.env.RAFTKV_CERTS }, "admin", fromConfig);
  if (!files) return undefined;
  try {
    return loadTlsMaterial(files);
  } catch (err) {
    if (err instanceof TlsError) throw new UsageError(`${err.message} (certificates for TLS: --certs, --ca/--cert/--key or RAFTKV_CERTS)`);
    throw err;
  }
}

export function endpointsFrom(flags: ClientFlags): string[] {
  if (flags.endpoints) return String(flags.endpoints).split(",").map((s) => s.trim()).filter(Boolean);
  const env = process.env.RAFTKV_ENDPOINTS;
  if (env) return env.split(",").map((s) => s.trim()).filter(Boolean);
  const path = flags.config ?? "nodes.conf";
  if (!existsSync(path)) {
    throw new UsageError(`no cluster given: pass --endpoints host:port,..., set RAFTKV_ENDPOINTS, or run where ${path} is (-c FILE for another)`);
  }
  return loadNodesConf(path).map(formatAddr);
}

export function client(flags: ClientFlags): RaftKvClient {
  return new RaftKvClient({ endpoints: endpointsFrom(flags), timeoutMs: Number(flags.timeout ?? 5000), tls: clientTls(flags) });
}

export function printJson(v: unknown): void {
  console.log(
    JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? toText(x) : x)),
  );
}

export function kvJson(kv: KeyValue) {
  return {
    key: toText(kv.key),
    value: toText(kv.value),
    createRevision: kv.createRevision,
    modRevision: kv.modRevision,
    version: kv.version,
    lease: kv.lease,
  };
}

export async function run(fn: () => Promise<number | void>): Promise<void> {
  let code = 0;
  try {
    code = (await fn()) ?? 0;
  } catch (err) {
    if (err instanceof UsageError || err instanceof ConfigError) {
      console.error(`error: ${err.message}`);
      code = 2;
    } else if (err instanceof RaftKvError) {
      console.error(`error: ${err.message}`);
      code = ["NO_QUORUM", "UNAVAILABLE", "TIMEOUT"].includes(err.code) ? 3 : 1;
    } else {
      console.error(`error: ${(err as Error).message}`);
      code = 1;
    }
  }
  process.exit(code);
}

export const clientOptions = (cmd: Command) =>
  cmd
    .option("--endpoints <list>", "Comma-separated host:port of cluster nodes (else $RAFTKV_ENDPOINTS, else ./nodes.conf)")
    .option("-c, --config <file>", "nodes.conf to read endpoints from", { default: "nodes.conf" })
    .option("--timeout <ms>", "Give up after this long, retries included", { default: 5000 })
    .option("--certs <dir>", "TLS: the cluster's certs directory (uses ca.pem, admin.pem, admin.key; else $RAFTKV_CERTS)")
    .option("--ca <file>", "TLS: the cluster CA certificate (with --cert and --key)")
    .option("--cert <file>", "TLS: this client's certificate")
    .option("--key <file>", "TLS: this client's private key")
    .option("--json", "Machine-readable output (one JSON document, or one per line when streaming)")
    .option("-w, --write-out <format>", "simple or json (same as --json)");

export function isJson(flags: ClientFlags): boolean {
  return !!flags.json || flags.writeOut === "json";
}

export function positiveInt(name: string, v: unknown): number {
  if (!/^\d+$/.test(String(v)) || Number(v) <= 0) throw new UsageError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** TTLs: "10" or "10s" (seconds, as etcd), "500ms", "2m". */
export function parseTtlMs(v: string): number {
  const m = /^(\d+)(ms|s|m)?$/.exec(String(v).trim());
  if (!m || Number(m[1]) <= 0) throw new UsageError(`TTL must look like 10, 10s, 500ms or 2m, got ${JSON.stringify(v)}`);
  return Number(m[1]) * (m[2] === "ms" ? 1 : m[2] === "m" ? 60_000 : 1000);
}
