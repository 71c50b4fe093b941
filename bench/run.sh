#!/usr/bin/env bash
# ncghl's benchmark (SPEC §8), side by side with the peer (the source design
# in Python) on the same machine, same load generator, same body.
#
# usage: bench/run.sh [DURATION=10s]       (from the repository root, after make build)
# Prints a table and keeps the raw output in bench/results/. Server pinned to
# CPU 0, wrk and the fake upstreams to CPU 1, as the peer's own BENCH.md did.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${1:-10s}"
BIN="$ROOT/build/ncghl"
FAKE="$ROOT/build/ncghl_bench_fake"
PEER_SRC="$ROOT/../shared/peers/seed-fastapi"
OUT="$ROOT/bench/results"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RAW="$OUT/$STAMP.txt"
TMP="$(mktemp -d /tmp/ncghl-bench-XXXXXX)"
PORT=8101 FAKE_PORT=9202
mkdir -p "$OUT"
"$ROOT/scripts/deps.sh" --bench >/dev/null
[ -x "$BIN" ] && [ -x "$FAKE" ] || { echo "build first: make build" >&2; exit 1; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

log() { echo "$*" | tee -a "$RAW" >&2; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
wait_http() { for _ in $(seq 1 100); do curl -fs -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

start_fake() { # latency_ms
  taskset -c 1 "$FAKE" --port "$FAKE_PORT" --latency-ms "$1" > "$TMP/fake.out" 2>&1 &
  FAKE_PID=$!; pids+=("$FAKE_PID")
  wait_http "http://127.0.0.1:$FAKE_PORT/_stats"
}
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
creates() { curl -fs "http://127.0.0.1:$FAKE_PORT/_stats" | sed 's/.*"creates":\([0-9]*\).*/\1/'; }

start_ncghl() { # extra env...
  rm -rf "$TMP/db"; mkdir -p "$TMP/db"
  env -i PATH="$PATH" HOME="$HOME" HOST=127.0.0.1 PORT=$PORT DB_PATH="$TMP/db/ncghl.db" \
    MAPPINGS_DIR="$ROOT/mappings" LUA_DIR="$ROOT/lua" LOG_LEVEL=WARNING \
    GHL_BASE_URL="http://127.0.0.1:$FAKE_PORT" GHL_API_KEY=bench-token GHL_LOCATION_ID=bench-location \
    NOWCERTS_BASE_URL="http://127.0.0.1:$FAKE_PORT/api" NOWCERTS_POLL_INTERVAL=0 \
    GHL_RATE_LIMIT=0 RATE_LIMIT_PER_MINUTE=0 GHL_WEBHOOK_VERIFY=false "$@" \
    taskset -c 0 "$BIN" serve > "$TMP/ncghl.log" 2>&1 &
  NCGHL_PID=$!; pids+=("$NCGHL_PID")
  wait_http "http://127.0.0.1:$PORT/health"
}

run_wrk() { # name url -> sets RESULT line
  taskset -c 1 wrk -t2 -c32 -d"$DURATION" --latency -s "$ROOT/bench/unique.lua" "$2" -- "$1-$STAMP" > "$TMP/wrk.out" 2>&1
  cat "$TMP/wrk.out" >> "$RAW"
  grep '^RESULT' "$TMP/wrk.out"
}
field() { echo "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p"; }

rows=()
row() { rows+=("$(printf '| %s | %s | %s | %s | %s | %s |' "$@")"); }

# 1. ncghl, durable intake alone: answered after the commit, processed in the background.
start_fake 0
start_ncghl WEBHOOK_WAIT_MS=0 EVENT_CONCURRENCY=64
idle=$(rss_kib "$NCGHL_PID")
log "== ncghl intake (WEBHOOK_WAIT_MS=0), idle RSS ${idle} KiB"
r=$(run_wrk intake "http://127.0.0.1:$PORT")
row "ncghl durable intake (WEBHOOK_WAIT_MS=0)" "$(field "$r" rps)" "$(field "$r" p50) ms" "$(field "$r" p99) ms" "$(( $(hwm_kib "$NCGHL_PID") / 1024 )) MiB" "$(field "$r" statuses)"
stop_pid "$NCGHL_PID"; stop_pid "$FAKE_PID"

# 2. ncghl, full path: answered after delivery to a fake GHL that answers at once.
start_fake 0
start_ncghl WEBHOOK_WAIT_MS=3000 EVENT_CONCURRENCY=64
log "== ncghl full path (answered after delivery)"
r=$(run_wrk full "http://127.0.0.1:$PORT")
full_rps=$(field "$r" rps)
row "ncghl full path (answer after delivery)" "$full_rps" "$(field "$r" p50) ms" "$(field "$r" p99) ms" "$(( $(hwm_kib "$NCGHL_PID") / 1024 )) MiB" "$(field "$r" statuses)"
stop_pid "$NCGHL_PID"; stop_pid "$FAKE_PID"

# 3. ncghl end to end: the upstream answers in 20 ms. Events are accepted for
#    DURATION (acknowledged after commit), then the backlog drains; the rate is
#    the events delivered per second once intake has stopped (intake outranks
#    processing, so the flood itself says little about delivery).
start_fake 20
start_ncghl WEBHOOK_WAIT_MS=0 EVENT_CONCURRENCY=256
log "== ncghl end to end, fake GHL at 20 ms"
r=$(run_wrk e2e "http://127.0.0.1:$PORT")
accepted=$(echo "$r" | sed -n 's/.*202=\([0-9]*\).*/\1/p')
c0=$(creates); t0=$(date +%s.%N); last=$c0; still=0
while [ "$last" -lt "$accepted" ] && [ "$still" -lt 20 ]; do
  sleep 0.25; now=$(creates)
  if [ "$now" -eq "$last" ]; then still=$((still + 1)); else still=0; fi
  last=$now
done
t1=$(date +%s.%N)
e2e=$(awk -v a="$c0" -v b="$last" -v s="$t0" -v e="$t1" 'BEGIN {printf "%.0f", (b-a)/(e-s)}')
log "accepted $accepted, delivered $last; $((last - c0)) after intake stopped"
row "ncghl end to end, upstream 20 ms (events delivered/s)" "$e2e" "-" "-" "$(( $(hwm_kib "$NCGHL_PID") / 1024 )) MiB" "$accepted accepted, $last delivered"
stop_pid "$NCGHL_PID"; stop_pid "$FAKE_PID"

# 4. The peer, as its author ran it: uvicorn, one worker, its own fakes.
peer_rps=""
if [ -d "$PEER_SRC" ] && /usr/bin/python3 -c 'import fastapi, uvicorn, httpx' 2>/dev/null; then
  cp -r "$PEER_SRC" "$TMP/peer"; chmod -R u+w "$TMP/peer"
  (cd "$TMP/peer" && PEER_CPUS=0 FAKE_CPUS=1 LOG_LEVEL=INFO ./run.sh 8001 9101 9102 0 >/dev/null)
  for i in 1 2 3 4 5; do
    curl -s -o /dev/null -X POST http://127.0.0.1:8001/api/v1/webhooks/nowcerts -H 'Content-Type: application/json' \
      -d "{\"event_type\":\"INSURED_INSERT\",\"data\":{\"firstName\":\"Warm\",\"email\":\"warm-$i-$STAMP@example.com\"}}"
  done
  log "== peer (seed-fastapi), full path"
  r=$(run_wrk peer "http://127.0.0.1:8001")
  peer_rps=$(field "$r" rps)
  ppid=$(cat "$TMP/peer/run/peer.pid")
  row "peer (seed-fastapi) full path" "$peer_rps" "$(field "$r" p50) ms" "$(field "$r" p99) ms" "$(( $(hwm_kib "$ppid") / 1024 )) MiB" "$(field "$r" statuses)"
  (cd "$TMP/peer" && ./stop.sh >/dev/null 2>&1) || true
fi

{
  echo
  echo "ncghl benchmark, $STAMP, $(nproc) cores, wrk -t2 -c32 -d$DURATION, unique payloads"
  echo
  echo "| scenario | req/s | p50 | p99 | peak RSS | answers |"
  echo "| --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "idle RSS: $(( idle / 1024 )) MiB"
  if [ -n "$peer_rps" ]; then
    awk -v a="$full_rps" -v b="$peer_rps" 'BEGIN {printf "full path vs peer: %.1fx\n", a/b}'
  fi
} | tee -a "$RAW"
