#!/usr/bin/env bash
# bench/compare-etcd.sh: raftkv against etcd on this machine. Same workloads, same client counts, same
# measuring code, both as 3-member clusters on loopback with their default durability (every
# acknowledged write fsynced on a majority) and default timeouts.
#
#   bench/compare-etcd.sh                 # about 2-3 minutes
#   DURATION_MS=5000 FAILOVER_ROUNDS=7 bench/compare-etcd.sh
#
# Workloads (each DURATION_MS long, 1000 keys of 8 bytes, 100-byte values):
#   put at 1 client, put at 64, linearizable get at 64, serializable get at 64, mixed 50/50 at 64;
#   then unavailability after kill -9 of the leader: one writer puts in a loop, the leader is killed
#   mid-put, and the figure is the time from the kill to the first successful put issued after it
#   (FAILOVER_ROUNDS rounds per system, median; the killed member is restarted between rounds).
#
# Load generators, both measured by src/bench/runner.ts (performance.now() around each request):
#   raftkv: `dist/raftkv bench --json`.
#   etcd:   bench/etcd-load.ts over etcd's HTTP/JSON gateway (POST /v3/kv/put, /v3/kv/range, /v3/kv/txn,
#           base64 keys) with Bun's fetch: no client dependency. The etcd3 npm package (gRPC through
#           grpc-js) was tried and was slower here, under Bun and under Node: the JS gRPC client itself
#           was the bottleneck. ETCD_TARGET=spread (default) gives client i endpoint i % 3, the way
#           etcd's own client balances; ETCD_TARGET=leader sends everything to the leader, as raftkv's
#           client does.
#
# Needs bun (node_modules/.bin/bun) and etcd + etcdctl: when they are missing and we are root, they are
# installed from Debian's packages etcd-server and etcd-client. Builds dist/raftkv if it is missing.
# Every process started here is stopped by PID on exit, and the temp dir is removed (KEEP_TMP=1 keeps
# it, with the logs and every JSON report).
#
# Other knobs: CLIENTS (64), FAILOVER_ROUNDS (5; 0 skips), ETCD_HEARTBEAT_MS / ETCD_ELECTION_MS
# (etcd's defaults 100 / 1000; raftkv's are 50 / 300, randomized up to 2x), ETCD_SHORT_ATTEMPT_MS (300;
# the extra etcd failover row, 0 skips it: a put a follower forwarded to the dead leader hangs until the
# client's attempt times out, so etcd's figure with raftkv's 2000 ms attempts is mostly that timeout).
# Benchmarks are not tests: this prints figures and asserts nothing about them.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DURATION_MS=${DURATION_MS:-3000}
CLIENTS=${CLIENTS:-64}
FAILOVER_ROUNDS=${FAILOVER_ROUNDS:-5}
ETCD_TARGET=${ETCD_TARGET:-spread}
ETCD_HEARTBEAT_MS=${ETCD_HEARTBEAT_MS:-100}
ETCD_ELECTION_MS=${ETCD_ELECTION_MS:-1000}

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- prerequisites -------------------------------------------------------------------------------

BUN=${BUN:-$ROOT/node_modules/.bin/bun}
[ -x "$BUN" ] || BUN=$(command -v bun || true)
[ -n "$BUN" ] && [ -x "$BUN" ] || die "bun not found: run npm install (bun is a devDependency) or put bun on PATH"

if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "etcd is not installed; as root: apt-get install etcd-server etcd-client"
  log "installing etcd from Debian packages (etcd-server, etcd-client)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi

RAFTKV=$ROOT/dist/raftkv
if [ ! -x "$RAFTKV" ]; then
  log "building dist/raftkv..."
  if command -v npm >/dev/null 2>&1; then npm run --silent build; else "$BUN" build.ts; fi
fi

# ---- processes and cleanup -----------------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-vs-etcd.XXXXXX")
OUT=$TMP/out
mkdir -p "$OUT"
declare -a ETCD_PID=() RAFT_PID=()

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  local pids=()
  for p in "${ETCD_PID[@]:-}" "${RAFT_PID[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && pids+=("$p"); done
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 30); do
      local alive=0
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ $alive = 0 ] && break
      sleep 0.1
    done
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit $code
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Nine free loopback ports: 3 raftkv, 3 etcd client, 3 etcd peer.
read -r -a PORTS <<<"$("$BUN" -e '
  const s = Array.from({ length: 9 }, () => Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }));
  console.log(s.map((x) => x.port).join(" "));
  for (const x of s) x.stop(true);
')"
RAFT_PORTS=("${PORTS[@]:0:3}")
ETCD_CPORTS=("${PORTS[@]:3:3}")
ETCD_PPORTS=("${PORTS[@]:6:3}")
RAFT_EPS=$(printf '127.0.0.1:%s,' "${RAFT_PORTS[@]}"); RAFT_EPS=${RAFT_EPS%,}
ETCD_EPS=$(printf '127.0.0.1:%s,' "${ETCD_CPORTS[@]}"); ETCD_EPS=${ETCD_EPS%,}
INITIAL_CLUSTER=$(for i in 0 1 2; do printf 'e%s=http://127.0.0.1:%s,' "$i" "${ETCD_PPORTS[$i]}"; done); INITIAL_CLUSTER=${INITIAL_CLUSTER%,}

for i in 0 1 2; do echo "$i 127.0.0.1 ${RAFT_PORTS[$i]}"; done >"$TMP/nodes.conf"

start_raftkv() {
  local i=$1
  "$RAFTKV" serve "$i" "$TMP/nodes.conf" --data-dir "$TMP/raftkv-$i" --log-level warn >>"$TMP/raftkv-$i.log" 2>&1 &
  RAFT_PID[$i]=$!
}

start_etcd() {
  local i=$1
  etcd --name "e$i" --data-dir "$TMP/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:${ETCD_CPORTS[$i]}" --advertise-client-urls "http://127.0.0.1:${ETCD_CPORTS[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${ETCD_PPORTS[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PPORTS[$i]}" \
    --initial-cluster "$INITIAL_CLUSTER" --initial-cluster-token raftkv-bench --initial-cluster-state new \
    --heartbeat-interval "$ETCD_HEARTBEAT_MS" --election-timeout "$ETCD_ELECTION_MS" \
    --logger zap --log-outputs stderr --log-level warn >>"$TMP/etcd-$i.log" 2>&1 &
  ETCD_PID[$i]=$!
}

# Ready = every member answers and one leader is known (up to 30 s).
wait_raftkv() {
  for _ in $(seq 1 300); do
    local s
    s=$("$RAFTKV" status --endpoints "$RAFT_EPS" --timeout 500 --json 2>/dev/null || true)
    if [ "$(grep -o '"role":"leader"' <<<"$s" | wc -l)" = 1 ] && ! grep -q '"reachable":false' <<<"$s"; then return 0; fi
    sleep 0.1
  done
  tail -n 20 "$TMP"/raftkv-*.log >&2
  die "raftkv cluster not ready after 30 s"
}

wait_etcd() {
  for _ in $(seq 1 300); do
    if etcdctl --endpoints "$ETCD_EPS" --dial-timeout 500ms endpoint health >/dev/null 2>&1 &&
      "$BUN" bench/etcd-load.ts leader --endpoints "$ETCD_EPS" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  tail -n 20 "$TMP"/etcd-*.log >&2
  die "etcd cluster not ready after 30 s"
}

# ---- load ----------------------------------------------------------------------------------------

# run_raftkv OUTFILE workload-args...: the binary's own `raftkv bench`, the same src/bench code.
run_raftkv() {
  local out=$1; shift
  "$RAFTKV" bench --endpoints "$RAFT_EPS" --duration "$DURATION_MS" --json "$@" >"$out" 2>>"$TMP/load.log"
}

run_etcd() {
  local out=$1; shift
  "$BUN" bench/etcd-load.ts run --endpoints "$ETCD_EPS" --target "$ETCD_TARGET" --duration-ms "$DURATION_MS" --json "$@" >"$out" 2>>"$TMP/load.log"
}

summary() { "$BUN" bench/etcd-load.ts summary "$1" 2>/dev/null || echo "no report"; }

ROWS=$OUT/rows.tsv
: >"$ROWS"
n=0
# pair LABEL workload-args...
pair() {
  local label=$1; shift
  n=$((n + 1))
  local r="$OUT/$n.raftkv.json" e="$OUT/$n.etcd.json"
  log "[$label]"
  run_raftkv "$r" "$@" || true
  log "  raftkv $(summary "$r")"
  run_etcd "$e" "$@" || true
  log "  etcd   $(summary "$e")"
  printf '%s\t%s\t%s\n' "$label" "$r" "$e" >>"$ROWS"
}

# ---- run -----------------------------------------------------------------------------------------

log "raftkv vs etcd: $(nproc) CPUs, temp dir on $(df -PT "$TMP" | awk 'NR==2 { print $2 }'), $(etcd --version | head -n 1), $("$RAFTKV" --version 2>/dev/null | awk '{ print $1 }')"
log "raftkv load: dist/raftkv bench; etcd load: HTTP gateway, target $ETCD_TARGET; $DURATION_MS ms per workload"
for i in 0 1 2; do start_raftkv "$i"; start_etcd "$i"; done
wait_raftkv
wait_etcd

pair "put, 1 client" --workload put --clients 1
pair "put, $CLIENTS clients" --workload put --clients "$CLIENTS"
pair "get linearizable, $CLIENTS" --workload get --clients "$CLIENTS"
pair "get serializable, $CLIENTS" --workload get --clients "$CLIENTS" --serializable
pair "mixed 50/50, $CLIENTS" --workload mixed --clients "$CLIENTS" --read-ratio 0.5

FAILOVER=$OUT/failover.tsv
: >"$FAILOVER"
# etcd: a put that a follower forwarded to the dead leader hangs until the client gives up on the
# attempt, so etcd's figure depends on the client's per-attempt timeout: measured with raftkv's client
# value (2000 ms) and, unless ETCD_SHORT_ATTEMPT_MS=0, with a short one.
SYSTEMS="raftkv etcd"
[ "${ETCD_SHORT_ATTEMPT_MS:-300}" -gt 0 ] && SYSTEMS="$SYSTEMS etcd-short"
if [ "$FAILOVER_ROUNDS" -gt 0 ]; then
  for system in $SYSTEMS; do
    label=$system
    [ $system = etcd-short ] && label="etcd, ${ETCD_SHORT_ATTEMPT_MS:-300} ms attempts"
    log "[kill -9 of the leader: $label, $FAILOVER_ROUNDS rounds]"
    for round in $(seq 1 "$FAILOVER_ROUNDS"); do
      if [ $system = raftkv ]; then
        idx=$("$BUN" bench/raftkv-load.ts leader --endpoints "$RAFT_EPS")
        pid=${RAFT_PID[$idx]}
        res=$("$BUN" bench/raftkv-load.ts failover --endpoints "$RAFT_EPS" --kill-pid "$pid" --timeout-ms 10000 2>>"$TMP/load.log" || true)
      else
        attempt=2000
        [ $system = etcd-short ] && attempt=${ETCD_SHORT_ATTEMPT_MS:-300}
        idx=$("$BUN" bench/etcd-load.ts leader --endpoints "$ETCD_EPS")
        pid=${ETCD_PID[$idx]}
        res=$("$BUN" bench/etcd-load.ts failover --endpoints "$ETCD_EPS" --target "$ETCD_TARGET" --attempt-timeout-ms "$attempt" \
          --kill-pid "$pid" --timeout-ms 10000 2>>"$TMP/load.log" || true)
      fi
      wait "$pid" 2>/dev/null || true
      ms=$(sed -nE 's/.*"unavailableMs":([0-9.]+|null).*/\1/p' <<<"$res")
      log "  round $round: killed member $idx (pid $pid); writes back after ${ms:-?} ms"
      printf '%s\t%s\n' "$label" "${ms:-null}" >>"$FAILOVER"
      if [ $system = raftkv ]; then start_raftkv "$idx"; wait_raftkv; else start_etcd "$idx"; wait_etcd; fi
      sleep 1
    done
  done
fi

echo
echo "raftkv vs etcd, 3 members each on loopback, $(nproc) CPUs; $DURATION_MS ms per workload; 1000 keys x 8 B, values 100 B"
"$BUN" bench/etcd-load.ts table --rows "$ROWS" $([ "$FAILOVER_ROUNDS" -gt 0 ] && echo --failover "$FAILOVER")
[ "$FAILOVER_ROUNDS" -gt 0 ] && echo "(failover: time from kill -9 of the leader to the first successful put issued after it, one writer;
 raftkv election timeout 300-600 ms, heartbeat 50 ms; etcd election timeout ${ETCD_ELECTION_MS} ms, heartbeat ${ETCD_HEARTBEAT_MS} ms;
 both clients retry with 2000 ms per attempt unless noted)"
exit 0
