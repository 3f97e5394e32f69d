// Runs the compiled binary as real processes: a cluster on ephemeral ports in a temp dir. Every
// process started here is tracked by PID and killed by stopAll().

import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { RaftKvClient } from "../../src/client/client";
import type { TlsMaterial } from "../../src/net";

/** The binary under test; RAFTKV_BIN points benchmarks at another build. */
export const BIN = process.env.RAFTKV_BIN ?? resolve(import.meta.dir, "../../dist/raftkv");

export function ensureBinary(): void {
  if (existsSync(BIN)) return;
  const p = Bun.spawnSync([process.execPath, resolve(import.meta.dir, "../../build.ts")], { cwd: resolve(import.meta.dir, "../.."), stdout: "inherit", stderr: "inherit" });
  if (p.exitCode !== 0) throw new Error("could not build dist/raftkv");
}

/** Ports the OS hands out as free right now (bound with port 0, then released). */
export function freePorts(n: number): number[] {
  const servers = Array.from({ length: n }, () =>
    Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }),
  );
  const ports = servers.map((s) => s.port);
  for (const s of servers) s.stop(true);
  return ports;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 15000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      lastErr = err;
    }
    await Bun.sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ""}`);
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface ClusterOptions {
  nodes?: number;
  extraArgs?: string[];
}

/** TLS for a cluster's clients: CLI flags (e.g. --certs DIR) and the library's material. */
export interface ClientTls {
  args: string[];
  material: TlsMaterial;
}

export class TestCluster {
  readonly dir: string;
  readonly conf: string;
  readonly ports: number[];
  private readonly procs = new Map<number, Subprocess>();
  private readonly extraArgs: string[];
  /** Set for a TLS cluster: every client of this harness then uses it. */
  clientTls: ClientTls | undefined;

  constructor(opts: ClusterOptions = {}) {
    ensureBinary();
    const n = opts.nodes ?? 3;
    this.dir = mkdtempSync(join(tmpdir(), "raftkv-e2e-"));
    this.ports = freePorts(n);
    this.conf = join(this.dir, "nodes.conf");
    writeFileSync(this.conf, this.ports.map((p, i) => `${i} 127.0.0.1 ${p}`).join("\n") + "\n");
    this.extraArgs = opts.extraArgs ?? [];
  }

  get endpoints(): string {
    return this.ports.map((p) => `127.0.0.1:${p}`).join(",");
  }

  /** A client of the whole cluster; the caller closes it. */
  client(timeoutMs = 10000): RaftKvClient {
    return new RaftKvClient({ endpoints: this.endpoints.split(","), timeoutMs, tls: this.clientTls?.material });
  }

  endpoint(id: number): string {
    return `127.0.0.1:${this.ports[id]}`;
  }

  dataDir(id: number): string {
    return join(this.dir, `node-${id}`);
  }

  logFile(id: number): string {
    return join(this.dir, `node-${id}.log`);
  }

  start(id: number, args: string[] = []): Subprocess {
    if (this.procs.has(id)) throw new Error(`node ${id} already running`);
    const fd = openSync(this.logFile(id), "a");
    const p = Bun.spawn([BIN, "serve", String(id), this.conf, "--data-dir", this.dataDir(id), ...this.extraArgs, ...args], {
      stdout: fd,
      stderr: fd,
      stdin: "ignore",
    });
    closeSync(fd);
    this.procs.set(id, p);
    return p;
  }

  startAll(): void {
    for (let i = 0; i < this.ports.length; i++) this.start(i);
  }

  running(id: number): boolean {
    return this.procs.has(id);
  }

  pid(id: number): number | undefined {
    return this.procs.get(id)?.pid;
  }

  /** kill -9 by PID and wait until it is gone. */
  async kill(id: number, signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<void> {
    const p = this.procs.get(id);
    if (!p) return;
    if (p.exitCode === null && p.signalCode === null) process.kill(p.pid, signal);
    await p.exited;
    this.procs.delete(id);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.procs.keys()].map((id) => this.kill(id)));
  }

  async cleanup(): Promise<void> {
    await this.stopAll();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Run a client command of the binary against this cluster. */
  async cli(args: string[], opts: { endpoints?: string; timeoutMs?: number; plaintext?: boolean } = {}): Promise<CliResult> {
    const t0 = performance.now();
    const tlsArgs = this.clientTls && !opts.plaintext && !args.some((a) => a === "--certs" || a === "--ca") ? this.clientTls.args : [];
    const p = Bun.spawn([BIN, ...args, ...tlsArgs, "--endpoints", opts.endpoints ?? this.endpoints, "--timeout", String(opts.timeoutMs ?? 5000)], {
      stdout: "pipe",
      stderr: "pipe",
      stdin: "ignore",
    });
    const [stdout, stderr] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
    const code = await p.exited;
    return { code, stdout: stdout.trim(), stderr: stderr.trim(), ms: performance.now() - t0 };
  }

  async statuses(): Promise<{ reachable: boolean; id?: number; role?: string; term?: number; leader?: number; commitIndex?: number; appliedIndex?: number; snapshotIndex?: number; keys?: number }[]> {
    const r = await this.cli(["status", "--json"], { timeoutMs: 1000 });
    if (!r.stdout) return [];
    return JSON.parse(r.stdout);
  }

  /** The id of the single leader that every running node agrees on. */
  async waitForLeader(timeoutMs = 15000, exclude?: number): Promise<number> {
    return waitFor(
      "one agreed leader",
      async () => {
        const st = (await this.statuses()).filter((s) => s.reachable);
        const running = [...this.procs.keys()];
        if (st.length < Math.min(running.length, Math.floor(this.ports.length / 2) + 1)) return undefined;
        const leaders = st.filter((s) => s.role === "leader");
        if (leaders.length !== 1) return undefined;
        const id = leaders[0]!.id!;
        if (id === exclude) return undefined;
        return st.every((s) => s.leader === id) ? id : undefined;
      },
      timeoutMs,
    );
  }

  logs(id: number): string {
    try {
      return readFileSync(this.logFile(id), "utf8");
    } catch {
      return "";
    }
  }
}
