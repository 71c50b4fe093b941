# Shared by bench/run.sh and bench/curve.sh (sourced, not run): starting
# ncghl, the fast fake and the peer pinned as SPEC §8 places them (server on
# CPU 0, wrk and fakes on CPU 1), running wrk, and reading the outcomes back
# from the service's /metrics and the fake's /_stats.
# The caller sets ROOT, TMP, RAW (raw log file) and STAMP, and traps cleanup.

BIN="$ROOT/build/ncghl"
FAKE="$ROOT/build/ncghl_bench_fake"
PEER_SRC="${PEER_SRC:-$ROOT/../shared/peers/seed-fastapi}"
[ -d "$PEER_SRC" ] || PEER_SRC=/work/shared/peers/seed-fastapi
PORT="${BENCH_PORT:-8101}" FAKE_PORT="${BENCH_FAKE_PORT:-9202}"
PEER_PORT="${BENCH_PEER_PORT:-8111}" PEER_NC_PORT=$((PEER_PORT + 1000)) PEER_GHL_PORT=$((PEER_PORT + 1001))
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -d "$TMP/peer" ] && (cd "$TMP/peer" && ./stop.sh >/dev/null 2>&1) || true
  rm -rf "$TMP"
}

log() { echo "$*" | tee -a "$RAW" >&2; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_http() { for _ in $(seq 1 100); do curl -fs -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
port_free() { ! ss -ltn "sport = :$1" | grep -q LISTEN; }

start_fake() { # fastfake arguments (--latency-ms N | --hang)
  port_free "$FAKE_PORT" || { echo "port $FAKE_PORT is taken (set BENCH_FAKE_PORT)" >&2; exit 1; }
  taskset -c 1 "$FAKE" --port "$FAKE_PORT" "$@" > "$TMP/fake.out" 2>&1 &
  FAKE_PID=$!; pids+=("$FAKE_PID")
  wait_http "http://127.0.0.1:$FAKE_PORT/_stats"
}
# fake_stat NAME: one counter of the fake's /_stats (requests, 2xx, 4xx,
# held, search, create, get, update, tags_add, tags_remove, unknown).
fake_stat() { curl -fs "http://127.0.0.1:$FAKE_PORT/_stats" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }

start_ncghl() { # extra env...
  port_free "$PORT" || { echo "port $PORT is taken (set BENCH_PORT)" >&2; exit 1; }
  rm -rf "$TMP/db"; mkdir -p "$TMP/db"
  # DOCTOR_AT_START=false: the preflight's reads of the location, pipelines
  # and custom fields are not what is measured, and the fake does not model them.
  env -i PATH="$PATH" HOME="$HOME" HOST=127.0.0.1 PORT=$PORT DB_PATH="$TMP/db/ncghl.db" \
    MAPPINGS_DIR="$ROOT/mappings" LUA_DIR="$ROOT/lua" LOG_LEVEL=WARNING DOCTOR_AT_START=false \
    GHL_BASE_URL="http://127.0.0.1:$FAKE_PORT" GHL_API_KEY=bench-token GHL_LOCATION_ID=bench-location \
    NOWCERTS_BASE_URL="http://127.0.0.1:$FAKE_PORT/api" NOWCERTS_POLL_INTERVAL=0 \
    GHL_RATE_LIMIT=0 RATE_LIMIT_PER_MINUTE=0 GHL_WEBHOOK_VERIFY=false "$@" \
    taskset -c 0 "$BIN" serve > "$TMP/ncghl.log" 2>&1 &
  NCGHL_PID=$!; pids+=("$NCGHL_PID")
  wait_http "http://127.0.0.1:$PORT/health"
}

# events STATUS: ncghl's ncghl_events{status=...} gauge (pending, running, done,
# retry_wait, dead).
events() { curl -fs "http://127.0.0.1:$PORT/metrics" | sed -n "s/^ncghl_events{status=\"$1\"} \([0-9]*\).*/\1/p"; }
backlog() { echo $(( $(events pending) + $(events running) + $(events retry_wait) )); }

# wait_drain MAX_S: until nothing is pending, running or waiting to retry,
# or MAX_S seconds pass.
wait_drain() {
  local end=$(( $(date +%s) + $1 ))
  while [ "$(backlog)" -gt 0 ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.5; done
}

# outcomes: the events by final status and the fake's calls by route, one line.
outcomes() {
  printf 'done %s, retry_wait %s, dead %s, pending %s, running %s; GHL calls: search %s, create %s, get %s, update %s, tags +%s/-%s, unanswered %s, held %s' \
    "$(events done)" "$(events retry_wait)" "$(events dead)" "$(events pending)" "$(events running)" \
    "$(fake_stat search)" "$(fake_stat create)" "$(fake_stat get)" "$(fake_stat update)" \
    "$(fake_stat tags_add)" "$(fake_stat tags_remove)" "$(fake_stat unknown)" "$(fake_stat held)"
}

# ncghl's own WARNING/ERROR lines about events (none expected).
event_failures() { grep -c -E 'WARNING|ERROR' "$TMP/ncghl.log" || true; }

start_peer() {
  /usr/bin/python3 -c 'import fastapi, uvicorn, httpx' 2>/dev/null || { echo "peer needs scripts/deps.sh --bench" >&2; return 1; }
  rm -rf "$TMP/peer"; cp -r "$PEER_SRC" "$TMP/peer"; chmod -R u+w "$TMP/peer"; rm -rf "$TMP/peer/run"
  (cd "$TMP/peer" && PEER_CPUS=0 FAKE_CPUS=1 LOG_LEVEL=INFO ./run.sh "$PEER_PORT" "$PEER_NC_PORT" "$PEER_GHL_PORT" 0 >/dev/null)
  PEER_PID=$(cat "$TMP/peer/run/peer.pid")
  local i
  for i in 1 2 3 4 5; do
    curl -s -o /dev/null -X POST "http://127.0.0.1:$PEER_PORT/api/v1/webhooks/nowcerts" -H 'Content-Type: application/json' \
      -d "{\"event_type\":\"INSURED_INSERT\",\"data\":{\"firstName\":\"Warm\",\"email\":\"warm-$i-$STAMP@example.com\"}}"
  done
}
stop_peer() { (cd "$TMP/peer" && ./stop.sh >/dev/null 2>&1) || true; }

# run_wrk NAME URL DURATION CONNECTIONS [PAD_BYTES [SERIES]] -> prints the
# RESULT line (see bench/unique.lua).
# Every request is a new person: a unique e-mail and a unique phone.
run_wrk() {
  local t=2; [ "$4" -lt 2 ] && t=1
  # --timeout 10s: a slow answer is counted in the latency, not dropped as
  # an error (wrk's default, 2 s, would hide the peer's tail at 256).
  taskset -c 1 wrk -t"$t" -c"$4" -d"$3" --timeout 10s --latency -s "$ROOT/bench/unique.lua" "$2" -- "$1-$STAMP" "${5:-0}" "${6:-0}" > "$TMP/wrk.out" 2>&1 || true
  { echo "-- wrk $1 $2 -d$3 -c$4 pad=${5:-0}"; cat "$TMP/wrk.out"; } >> "$RAW"
  grep '^RESULT' "$TMP/wrk.out" || echo "RESULT rps=0 p50=0 p99=0 max=0 requests=0 errors=0 statuses=none unique=0 body=0"
}
# better A B: the RESULT line with more requests/s.
better() {
  if [ -z "$2" ] || awk -v a="$(field "$1" rps)" -v b="$(field "$2" rps)" 'BEGIN {exit !(a > b)}'; then echo "$1"; else echo "$2"; fi
}
field() { echo "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p"; }
