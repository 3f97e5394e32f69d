// The command line as a new user meets it (issue 12, "what a new user tripped over") and the client
// library's handling of refused requests and unreachable endpoints (issue 9).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RaftKvClient, RaftKvError } from "../../src/client/client";
import { MAX_VALUE_BYTES } from "../../src/kv/codec";
import { BIN, freePorts, TestCluster, waitFor, type CliResult } from "./harness";

/** Runs the binary with exact argv (no --endpoints/--timeout added), optionally feeding stdin. */
async function raw(args: string[], opts: { stdin?: Uint8Array; cwd?: string } = {}): Promise<CliResult & { out: Uint8Array }> {
  const t0 = performance.now();
  const p = Bun.spawn([BIN, ...args], { stdout: "pipe", stderr: "pipe", stdin: opts.stdin ? "pipe" : "ignore", cwd: opts.cwd });
  if (opts.stdin) {
    p.stdin!.write(opts.stdin);
    await p.stdin!.end();
  }
  const [out, stderr] = await Promise.all([new Response(p.stdout).bytes(), new Response(p.stderr).text()]);
  const code = await p.exited;
  return { code, out, stdout: new TextDecoder().decode(out).trim(), stderr: stderr.trim(), ms: performance.now() - t0 };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("the CLI against a 3-node cluster", () => {
  let c: TestCluster;
  let ep: string[];
  const run = (args: string[], opts: { stdin?: Uint8Array } = {}) => raw([...args, ...ep], opts);

  beforeAll(async () => {
    c = new TestCluster();
    c.startAll();
    await c.waitForLeader();
    ep = ["--endpoints", c.endpoints];
  });
  afterAll(async () => {
    await c.cleanup();
  });

  test("1: extra positional arguments are refused with usage, nothing is written", async () => {
    const r = await run(["put", "greeting", "hello", "world"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('too many arguments ("world")');
    expect(r.stderr).toContain("usage: raftkv put");
    expect((await run(["get", "greeting"])).code).toBe(1);
    for (const args of [["get", "a", "b", "c"], ["del", "a", "b", "c"], ["cas", "a", "b", "c", "d"]]) {
      const x = await run(args);
      expect(x.code).toBe(2);
      expect(x.stderr).toContain("too many arguments");
    }
    const s = await raw(["serve", "0", c.conf, "extra"]);
    expect(s.code).toBe(2);
    expect(s.stderr).toContain('too many arguments ("extra")');
  });

  test("2: --timeout takes durations; nonsense is refused with exit 2", async () => {
    const ok = await raw(["put", "t", "1", "--endpoints", c.endpoints, "--timeout", "2s"]);
    expect(ok.code).toBe(0);
    for (const bad of ["abc", "0", "-1s", "2x"]) {
      const r = await raw(["put", "t", "1", "--endpoints", c.endpoints, "--timeout", bad]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("--timeout must be a duration");
    }
  });

  test("3: put KEY - and --file take the value's exact bytes, up to the value limit", async () => {
    const big = new Uint8Array(MAX_VALUE_BYTES);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff; // every byte value, not UTF-8
    expect((await run(["put", "blob", "-"], { stdin: big })).code).toBe(0);
    const got = await run(["get", "blob"]);
    expect(got.code).toBe(0);
    expect(Buffer.from(got.out).equals(Buffer.concat([big, Buffer.from("\n")]))).toBe(true);

    const file = join(c.dir, "value.bin");
    writeFileSync(file, big.subarray(0, 1000));
    expect((await run(["put", "fromfile", "--file", file])).code).toBe(0);
    const kv = await c.client().get("fromfile");
    expect(Buffer.from(kv!.value).equals(Buffer.from(big.subarray(0, 1000)))).toBe(true);

    const over = await run(["put", "blob", "-"], { stdin: new Uint8Array(MAX_VALUE_BYTES + 1) });
    expect(over.code).toBe(1);
    expect(over.stderr).toContain(`over the ${MAX_VALUE_BYTES}-byte limit`);
    const missing = await run(["put", "x", "--file", join(c.dir, "nope")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("does not exist");
  });

  test("4: bytes stay exact; --json carries non-UTF-8 keys and values as base64 with a marker", async () => {
    const cl = c.client();
    try {
      await cl.put(new Uint8Array([0x62, 0x2f, 0xff]), new Uint8Array([0xc3]));
      await cl.put(new Uint8Array([0x62, 0x2f, 0xfe]), "text");
    } finally {
      cl.close();
    }
    const r = await run(["get", "b/", "--prefix", "--json"]);
    expect(r.code).toBe(0);
    const kvs = JSON.parse(r.stdout).kvs as Record<string, string>[];
    expect(kvs.length).toBe(2);
    const keys = kvs.map((kv) => Buffer.from(kv.key!, kv.keyEncoding === "base64" ? "base64" : "utf8").toString("hex"));
    expect(keys).toEqual(["622ffe", "622fff"]);
    expect(kvs[0]!.value).toBe("text");
    expect(kvs[0]!.valueEncoding).toBeUndefined();
    expect(kvs[1]!.valueEncoding).toBe("base64");
    expect(Buffer.from(kvs[1]!.value!, "base64")).toEqual(Buffer.from([0xc3]));
    // Plain output writes the bytes themselves.
    const plain = await run(["get", "b/", "--prefix"]);
    expect(Buffer.from(plain.out).toString("hex")).toBe(Buffer.from([0x62, 0x2f, 0xfe, 10, ...Buffer.from("text"), 10, 0x62, 0x2f, 0xff, 10, 0xc3, 10]).toString("hex"));
  });

  test("6: status --json rows share field names, reachable or not", async () => {
    const r = await run(["status", "--json"]);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Record<string, unknown>[];
    expect(rows.length).toBe(3);
    const extra = `127.0.0.1:${freePorts(1)[0]}`;
    const withDown = await raw(["status", "--json", "--endpoints", `${c.endpoints},${extra}`]);
    const rows2 = JSON.parse(withDown.stdout) as Record<string, unknown>[];
    const names = rows2.map((row) => Object.keys(row).sort().join(","));
    expect(new Set(names).size).toBe(1);
    expect(rows2.find((row) => row.endpoint === extra)!.reachable).toBe(false);
    expect(withDown.code).toBe(0);
  });

  test("9: small ones: unknown options as typed, negative numbers, -w, cas --absent, txn file, lease list", async () => {
    const u = await run(["get", "k", "--prev-kvv"]);
    expect(u.code).toBe(2);
    expect(u.stderr).toContain('unknown option "--prev-kvv"');
    expect((await run(["put", "neg", "-5"])).code).toBe(0);
    expect((await run(["get", "neg"])).stdout).toBe("-5");
    const yaml = await run(["get", "neg", "-w", "yaml"]);
    expect(yaml.code).toBe(2);
    expect(yaml.stderr).toContain("-w/--write-out must be simple or json");
    expect((await run(["put", "word", "absent"])).code).toBe(0);
    expect((await run(["cas", "word", "absent", "present"])).code).toBe(0); // compares with the value "absent"
    expect((await run(["get", "word"])).stdout).toBe("present");
    expect((await run(["cas", "fresh", "--absent", "v"])).code).toBe(0);
    expect((await run(["cas", "fresh", "--absent", "v"])).code).toBe(1);
    const txn = await run(["txn", join(c.dir, "missing.txn")]);
    expect(txn.code).toBe(2);
    expect(txn.stderr).toContain(`txn file "${join(c.dir, "missing.txn")}" does not exist`);
    const lease = await run(["lease", "list"]);
    expect(lease.stderr).not.toContain("needs an argument");
    const lock = await run(["lock", "l", "--", "no-such-command-xyz"]);
    expect(lock.code).toBe(2);
    expect(lock.stderr).toContain("command not found: no-such-command-xyz");
  });

  test("7: lock runs the command in its own process group with a fencing token, and stops the whole group when the lock is lost", async () => {
    const dir = mkdtempSync(join(tmpdir(), "raftkv-lock-"));
    const script = `echo "$RAFTKV_LOCK_KEY $RAFTKV_LOCK_REV" > ${dir}/token; sleep 300 & echo $! > ${dir}/grandchild; wait`;
    const p = Bun.spawn([BIN, "lock", "job", "--ttl", "2s", ...ep, "--", "sh", "-c", script], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
    try {
      const grandchild = await waitFor("the grandchild's pid", () => {
        const t = existsSync(join(dir, "grandchild")) && readFileSync(join(dir, "grandchild"), "utf8").trim();
        return t ? Number(t) : undefined;
      });
      expect(alive(grandchild)).toBe(true);
      const [key, rev] = readFileSync(join(dir, "token"), "utf8").trim().split(" ");
      const cl = c.client();
      const kv = await cl.get(key!);
      cl.close();
      expect(kv).not.toBeNull();
      expect(Number(rev)).toBe(kv!.createRevision);
      // Lose the lock: revoke its lease behind the holder's back.
      expect((await run(["lease", "revoke", String(kv!.lease)])).code).toBe(0);
      expect(await p.exited).toBe(1);
      expect(await new Response(p.stderr).text()).toContain("lost lock job");
      await waitFor("the grandchild to be gone", () => !alive(grandchild), 10000);
    } finally {
      if (p.exitCode === null) p.kill("SIGKILL");
      await p.exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("7: a process the command leaves behind is stopped before the lock is released, SIGKILL if it ignores SIGTERM", async () => {
    const dir = mkdtempSync(join(tmpdir(), "raftkv-lock-"));
    const script = `trap "" TERM; sleep 300 >/dev/null 2>&1 & echo $! > ${dir}/left; exit 0`; // the sleep inherits the ignored SIGTERM
    try {
      const r = await raw(["lock", "job2", ...ep, "--", "sh", "-c", script]);
      expect(r.code).toBe(0);
      const left = Number(readFileSync(join(dir, "left"), "utf8").trim());
      await waitFor("the left-behind process to be gone", () => !alive(left), 3000);
    } finally {
      const t = existsSync(join(dir, "left")) ? Number(readFileSync(join(dir, "left"), "utf8").trim()) : 0;
      if (t && alive(t)) process.kill(t, "SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20000);

  test("8: bench writes under a prefix and cleans up; exits non-zero when every request failed", async () => {
    expect((await run(["put", "mine", "keep"])).code).toBe(0);
    const ok = await run(["bench", "--requests", "50", "--clients", "4", "--key-space", "20"]);
    expect(ok.code).toBe(0);
    const left = await run(["get", "__bench/", "--prefix", "--count-only"]);
    expect(left.stdout).toBe("0");
    expect((await run(["get", "mine"])).stdout).toBe("keep");
    const down = `127.0.0.1:${freePorts(1)[0]}`;
    const bad = await raw(["bench", "--requests", "3", "--clients", "1", "--endpoints", down, "--timeout", "300ms"]);
    expect(bad.stdout).toContain("errors");
    expect(bad.code).toBe(1);
  });

  test("client library: a refused request is answered at once, never retried", async () => {
    const cl = new RaftKvClient({ endpoints: c.endpoints.split(","), timeoutMs: 5000 });
    try {
      for (const size of [64 * 1024 * 1024, MAX_VALUE_BYTES + 1]) {
        const t0 = performance.now();
        const err = await cl.put("big", new Uint8Array(size)).catch((e) => e);
        expect(err).toBeInstanceOf(RaftKvError);
        expect((err as RaftKvError).code).toBe("VALUE_TOO_LARGE");
        expect(performance.now() - t0).toBeLessThan(1000);
      }
      const key = await cl.put(new Uint8Array(5000), "v").catch((e) => e);
      expect((key as RaftKvError).code).toBe("KEY_TOO_LARGE");
    } finally {
      cl.close();
    }
  });
});

describe("5: connection problems are said as they are, quickly", () => {
  test("connection refused on every endpoint, a host that does not resolve, a server that is not raftkv", async () => {
    const [p1, p2] = freePorts(2);
    const refused = await raw(["get", "k", "--endpoints", `127.0.0.1:${p1},127.0.0.1:${p2}`]);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain("refused the connection");
    expect(refused.ms).toBeLessThan(3000);

    const dns = await raw(["get", "k", "--endpoints", "no-such-host.invalid:7001"]);
    expect(dns.code).toBe(4);
    expect(dns.stderr).toContain("host not found");

    const http = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(s) {
          s.write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
          s.end();
        },
      },
    });
    try {
      const foreign = await raw(["get", "k", "--endpoints", `127.0.0.1:${http.port}`]);
      expect(foreign.code).toBe(4);
      expect(foreign.stderr).toContain("is not a raftkv node");
    } finally {
      http.stop(true);
    }
  });
});

describe("6 and 5: no quorum is told apart from no connection", () => {
  test("one node of three up: status exits 3 and says no quorum; put exits 3, not 4", async () => {
    const c = new TestCluster();
    try {
      c.start(0);
      await waitFor("node 0 serving", async () => (await c.cli(["status", "--json"], { timeoutMs: 500 })).stdout.includes('"reachable":true'));
      const st = await c.cli(["status"], { timeoutMs: 1000 });
      expect(st.code).toBe(3);
      expect(st.stderr).toContain("no quorum");
      const put = await c.cli(["put", "k", "v"], { timeoutMs: 1000 });
      expect(put.code).toBe(3);
      expect(put.stderr).toContain("no quorum");
    } finally {
      await c.cleanup();
    }
  });
});

describe("serve and the command line itself", () => {
  test("9: --bogus is named, --version is raftkv's, a port in use is said clearly and creates no data dir", async () => {
    const bogus = await raw(["--bogus"]);
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toContain('unknown option "--bogus"');
    const v = await raw(["--version"]);
    expect(v.stdout).toMatch(/^raftkv \d+\.\d+\.\d+$/);

    const dir = mkdtempSync(join(tmpdir(), "raftkv-port-"));
    const holder = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      writeFileSync(join(dir, "nodes.conf"), `0 127.0.0.1 ${holder.port}\n`);
      const r = await raw(["serve", "0", join(dir, "nodes.conf"), "--data-dir", join(dir, "d0")]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`port ${holder.port} on 127.0.0.1 is already in use`);
      expect(existsSync(join(dir, "d0"))).toBe(false);
      writeFileSync(join(dir, "afile"), "");
      const conf1 = join(dir, "one.conf");
      writeFileSync(conf1, `0 127.0.0.1 ${freePorts(1)[0]}\n`);
      const d = await raw(["serve", "0", conf1, "--data-dir", join(dir, "afile", "d")]);
      expect(d.code).toBe(2);
      expect(d.stderr).toContain("is a file, not a directory");
    } finally {
      holder.stop(true);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("10: cluster restarts a node killed with -9, passes serve options through, and leaves no orphans when killed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "raftkv-sup-"));
    const ports = freePorts(3);
    writeFileSync(join(dir, "nodes.conf"), ports.map((p, i) => `${i} 127.0.0.1 ${p}`).join("\n") + "\n");
    const sup = Bun.spawn([BIN, "cluster", join(dir, "nodes.conf"), "--data-root", join(dir, "data"), "--http-port", "0", "--", "--snapshot-entries", "77"], {
      stdout: "pipe",
      stderr: "pipe",
      stdin: "ignore",
    });
    let errText = "";
    void (async () => {
      for await (const chunk of sup.stderr) errText += new TextDecoder().decode(chunk);
    })();
    void new Response(sup.stdout).text();
    const endpoints = ports.map((p) => `127.0.0.1:${p}`).join(",");
    const nodes: number[] = [];
    const pids = async (): Promise<Map<number, number>> => {
      const out = Bun.spawnSync(["pgrep", "-P", String(sup.pid)]).stdout.toString().trim();
      const m = new Map<number, number>();
      for (const pid of out.split("\n").filter(Boolean).map(Number)) {
        const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
        const i = args.indexOf("serve");
        if (i >= 0) m.set(Number(args[i + 1]), pid);
      }
      return m;
    };
    try {
      const before = await waitFor("three nodes", async () => ((await pids()).size === 3 ? pids() : undefined));
      const args = readFileSync(`/proc/${before.get(1)}/cmdline`, "utf8");
      expect(args).toContain("--snapshot-entries\u000077");
      await waitFor("a leader", async () => (await raw(["status", "--endpoints", endpoints])).code === 0);
      process.kill(before.get(1)!, "SIGKILL");
      await waitFor("node 1 restarted", async () => {
        const now = await pids();
        return now.get(1) !== undefined && now.get(1) !== before.get(1);
      });
      expect(errText).toMatch(/node 1 \(pid \d+\) was killed by SIGKILL; restarting it in \d+ ms/);
      nodes.push(...(await pids()).values());
      process.kill(sup.pid, "SIGKILL");
      await sup.exited;
      await waitFor("every node gone after kill -9 of the cluster process", () => nodes.every((pid) => !alive(pid)), 10000);
    } finally {
      if (sup.exitCode === null) sup.kill("SIGKILL");
      await sup.exited;
      for (const pid of nodes) if (alive(pid)) process.kill(pid, "SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60000);
});
