// Helpers every command shares: where the cluster is, how output is written, exit codes.

import type { Command } from "cac";
import { existsSync, openSync, readFileSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { ConfigError, formatAddr, loadNodesConf } from "../config";
import { RaftKvClient, RaftKvError } from "../client/client";
import { MAX_LEASE_TTL_MS } from "../kv/codec";
import type { KeyValue } from "../kv/types";
import { CA_FILE, certFilesIn, loadTlsMaterial, TlsError, type TlsFiles, type TlsMaterial } from "../net/tls";

/**
 * Exit codes, documented in the README:
 *   0 success; 1 not found, or the request was refused (a failed cas, a too-large value, ...);
 *   2 bad usage or configuration; 3 the cluster is unavailable (no quorum, no answer in time);
 *   4 no endpoint could be reached at all (connection refused, host not found, not a raftkv server).
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, unavailable: 3, unreachable: 4 } as const;

export class UsageError extends Error {}

/** The lines of a byte stream, without their "\n"; a last line with no "\n" is yielded too. */
export async function* streamLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl);
      buf = buf.slice(nl + 1);
    }
  }
  buf += decoder.decode();
  if (buf) yield buf;
}

/** Longest --timeout: JS timers cannot wait longer than about 24.8 days; a day is plenty. */
export const MAX_TIMEOUT_MS = 24 * 3600 * 1000;
export const DEFAULT_TIMEOUT = "5s";

export interface ClientFlags {
  endpoints?: string;
  config?: string;
  json?: boolean;
  writeOut?: string;
  timeout?: string;
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

/** Output formats of -w. */
const OUTPUT_FORMATS = ["simple", "json"];

/** Every client command starts here, so bad output flags are refused before anything is sent. */
export function endpointsFrom(flags: ClientFlags): string[] {
  if (flags.writeOut !== undefined && !OUTPUT_FORMATS.includes(flags.writeOut)) {
    throw new UsageError(`-w/--write-out must be ${OUTPUT_FORMATS.join(" or ")}, got ${JSON.stringify(flags.writeOut)}`);
  }
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
  return new RaftKvClient({ endpoints: endpointsFrom(flags), timeoutMs: timeoutMs(flags), failFast: true, tls: clientTls(flags) });
}

export function timeoutMs(flags: ClientFlags): number {
  return parseDurationMs("--timeout", flags.timeout ?? DEFAULT_TIMEOUT, "ms", MAX_TIMEOUT_MS);
}

const encoder = new TextEncoder();

/**
 * Writes text and raw bytes to stdout, in order and completely before returning (so a process.exit right
 * after loses nothing, however large the output); bytes are written as they are, never decoded.
 */
export function writeOut(...parts: (string | Uint8Array)[]): void {
  for (const part of parts) {
    const bytes = typeof part === "string" ? encoder.encode(part) : part;
    let off = 0;
    while (off < bytes.length) {
      try {
        off += writeSync(1, bytes, off, bytes.length - off);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EAGAIN") Bun.sleepSync(1); // a non-blocking pipe that is full: wait for the reader
        else if (code === "EPIPE") process.exit(EXIT.ok); // the reader went away (| head): nothing more to say
        else throw err;
      }
    }
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A byte string in JSON output: `{name: text}` when the bytes are valid UTF-8, else
 * `{name: base64, nameEncoding: "base64"}`, so JSON carries any bytes reversibly.
 */
export function bytesJson<N extends string>(name: N, bytes: Uint8Array): Record<string, string> {
  try {
    return { [name]: utf8.decode(bytes) };
  } catch {
    return { [name]: Buffer.from(bytes).toString("base64"), [`${name}Encoding`]: "base64" };
  }
}

export function printJson(v: unknown): void {
  writeOut(JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? bytesJson("bytes", x).bytes : x)) + "\n");
}

export function kvJson(kv: KeyValue) {
  return {
    ...bytesJson("key", kv.key),
    ...bytesJson("value", kv.value),
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
      code = ["NO_QUORUM", "UNAVAILABLE", "TIMEOUT"].includes(err.code)
        ? EXIT.unavailable
        : ["UNREACHABLE", "NOT_RAFTKV"].includes(err.code)
          ? EXIT.unreachable
          : EXIT.failed;
    } else {
      console.error(`error: ${(err as Error).message}`);
      code = EXIT.failed;
    }
  }
  process.exit(code);
}

export const clientOptions = (cmd: Command) =>
  cmd
    .option("--endpoints <list>", "Comma-separated host:port of cluster nodes (else $RAFTKV_ENDPOINTS, else ./nodes.conf)")
    .option("-c, --config <file>", "nodes.conf to read endpoints from", { default: "nodes.conf" })
    .option("--timeout <duration>", "Give up after this long, retries included: 5000 (ms), 500ms, 2s, 1m", { default: DEFAULT_TIMEOUT })
    .option("--json", "Machine-readable output (one JSON document, or one per line when streaming); bytes that are not UTF-8 come as base64 with a <name>Encoding field")
    .option("--certs <dir>", "TLS: the cluster's certs directory (uses ca.pem, admin.pem, admin.key; else $RAFTKV_CERTS)")
    .option("--ca <file>", "TLS: the cluster CA certificate (with --cert and --key)")
    .option("--cert <file>", "TLS: this client's certificate")
    .option("--key <file>", "TLS: this client's private key")
    .option("-w, --write-out <format>", "simple or json (same as --json)");

export function isJson(flags: ClientFlags): boolean {
  return !!flags.json || flags.writeOut === "json";
}

export function positiveInt(name: string, v: unknown): number {
  if (!/^\d+$/.test(String(v)) || Number(v) <= 0) throw new UsageError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A duration: 500ms, 2s, 1.5s, 2m, 1h; a bare number is in `bareUnit`. At least 1 ms, at most maxMs. */
export function parseDurationMs(name: string, v: unknown, bareUnit: "ms" | "s", maxMs: number): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(v).trim());
  const ms = m ? Math.round(Number(m[1]) * UNIT_MS[m[2] ?? bareUnit]!) : NaN;
  if (!(ms >= 1 && ms <= maxMs)) {
    const bare = bareUnit === "ms" ? "5000 (ms)" : "10 (seconds)";
    throw new UsageError(`${name} must be a duration like ${bare}, 500ms, 2s or 1m, at most ${maxMs / 1000}s; got ${JSON.stringify(v)}`);
  }
  return ms;
}

/** TTLs: "10" or "10s" (seconds, as etcd), "500ms", "2m". */
export function parseTtlMs(v: string, name = "TTL"): number {
  return parseDurationMs(name, v, "s", MAX_LEASE_TTL_MS);
}

/** Why a file the user named cannot be used, in words (instead of a raw ENOENT). */
export function fileProblem(err: unknown, path: string, what: string): UsageError {
  const code = (err as NodeJS.ErrnoException).code;
  const why =
    code === "ENOENT" ? "does not exist" : code === "EACCES" ? "cannot be read (permission denied)" : code === "EISDIR" ? "is a directory" : (err as Error).message;
  return new UsageError(`${what} ${JSON.stringify(path)} ${why}`);
}

/** Opens a file the user named for reading; a clear UsageError if it cannot be. */
export function openInput(path: string, what: string): number {
  try {
    return openSync(path, "r");
  } catch (err) {
    throw fileProblem(err, path, what);
  }
}

/** A text file the user named; a clear UsageError if it cannot be read. */
export function readInput(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw fileProblem(err, path, what);
  }
}
