#!/usr/bin/env bash
# CPU profile of a 3-node cluster under load: runs the nodes from source under `bun --cpu-prof-md`,
# drives them with `raftkv bench`, stops them (SIGTERM writes the profiles) and prints the top of the
# leader's profile. Usage: bench/profile.sh [workload=put] [clients=64] [requests=30000]
set -euo pipefail
cd "$(dirname "$0")/.."
WORKLOAD=${1:-put}; CLIENTS=${2:-64}; REQUESTS=${3:-30000}
BUN=node_modules/.bin/bun
TMP=$(mktemp -d /tmp/raftkv-prof-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
read -r -a P <<<"$("$BUN" -e 'const s = Array.from({ length: 3 }, () => Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } })); console.log(s.map((x) => x.port).join(" ")); for (const x of s) x.stop(true);')"
for i in 0 1 2; do echo "$i 127.0.0.1 ${P[$i]}"; done >"$TMP/nodes.conf"
for i in 0 1 2; do
  "$BUN" --cpu-prof-md --cpu-prof-dir="$TMP/prof-$i" src/main.ts serve "$i" "$TMP/nodes.conf" --data-dir "$TMP/d$i" --log-level warn >"$TMP/n$i.log" 2>&1 &
  PIDS+=($!)
done
EPS="127.0.0.1:${P[0]},127.0.0.1:${P[1]},127.0.0.1:${P[2]}"
for _ in $(seq 1 100); do "$BUN" src/main.ts status --endpoints "$EPS" --json 2>/dev/null | grep -q '"role":"leader"' && break; sleep 0.1; done
LEADER=$("$BUN" src/main.ts status --endpoints "$EPS" --json | "$BUN" -e 'const s = JSON.parse(await Bun.stdin.text()); console.log(s.find((x) => x.role === "leader").id)')
"$BUN" src/main.ts bench --endpoints "$EPS" --workload "$WORKLOAD" --clients "$CLIENTS" --requests "$REQUESTS"
for p in "${PIDS[@]}"; do kill -TERM "$p"; done
wait "${PIDS[@]}" 2>/dev/null || true
PROFILE=$(ls "$TMP/prof-$LEADER"/*.md)
echo; echo "leader (node $LEADER) profile: $PROFILE"
sed -n '1,/^## /p' "$PROFILE" | head -40
grep -A 45 -m1 -i "self time" "$PROFILE" | head -50
