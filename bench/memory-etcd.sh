#!/usr/bin/env bash
# Resident memory of each member of a local 3-member etcd cluster holding N keys of 100-byte values,
# for comparison with bench/memory.ts (raftkv). Usage: bench/memory-etcd.sh [keys=1000000]
# Needs etcd (Debian package etcd-server; installed when missing and root). Loads through etcd's
# HTTP/JSON gateway with 64 concurrent writers; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-1000000}
BUN=node_modules/.bin/bun
if ! command -v etcd >/dev/null; then apt-get update -qq && apt-get install -y -qq etcd-server etcd-client >/dev/null; fi
TMP=$(mktemp -d /tmp/raftkv-etcdmem-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
read -r -a P <<<"$("$BUN" -e 'const s = Array.from({ length: 6 }, () => Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } })); console.log(s.map((x) => x.port).join(" ")); for (const x of s) x.stop(true);')"
CLUSTER="e0=http://127.0.0.1:${P[3]},e1=http://127.0.0.1:${P[4]},e2=http://127.0.0.1:${P[5]}"
for i in 0 1 2; do
  etcd --name "e$i" --data-dir "$TMP/e$i" --listen-client-urls "http://127.0.0.1:${P[$i]}" --advertise-client-urls "http://127.0.0.1:${P[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${P[$((i + 3))]}" --initial-advertise-peer-urls "http://127.0.0.1:${P[$((i + 3))]}" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --log-level warn --logger zap >"$TMP/e$i.log" 2>&1 &
  PIDS+=($!)
done
sleep 3
rss() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
echo "RSS before (MiB): $(rss "${PIDS[0]}"), $(rss "${PIDS[1]}"), $(rss "${PIDS[2]}")"
"$BUN" -e '
  const [keys, ...ports] = process.argv.slice(1).map(Number);
  const b64 = (s) => Buffer.from(s).toString("base64");
  const value = b64("v".repeat(100));
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 64 }, async (_, w) => {
    const url = `http://127.0.0.1:${ports[w % 3]}/v3/kv/put`;
    for (let i = next++; i < keys; i = next++) {
      for (;;) {
        const r = await fetch(url, { method: "POST", body: JSON.stringify({ key: b64(`key${String(i).padStart(8, "0")}`), value }) }).catch(() => null);
        if (r && r.ok) { await r.arrayBuffer(); break; }
        await Bun.sleep(50);
      }
    }
  }));
  const s = (performance.now() - t0) / 1000;
  console.log(`loaded ${keys} keys in ${s.toFixed(0)} s (${(keys / s).toFixed(0)} puts/s)`);
' "$KEYS" "${P[0]}" "${P[1]}" "${P[2]}"
sleep 5
echo "RSS after (MiB): $(rss "${PIDS[0]}"), $(rss "${PIDS[1]}"), $(rss "${PIDS[2]}")"
echo "data dir: $(du -sm "$TMP/e0" | cut -f1) MiB per member"
