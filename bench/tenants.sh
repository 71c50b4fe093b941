#!/usr/bin/env bash
# SPEC §8's tenants target, measured: one node serving N tenants (default
# 500), each with its own store, its own mappings overlay and its poller on
# the default interval; its memory once every poller has run, and whether one
# tenant's backlog slows another tenant's webhooks.
#
# usage: bench/tenants.sh [TENANTS=500] [DURATION=10s]   (repository root, after make build)
# Placement as bench/run.sh: ncghl on CPU 0, wrk and the fakes on CPU 1.
# Rows:
#   start          time until /health answers with every tenant started
#   after polls    RSS once every tenant's poller has read its three lists
#                  at least once (the fake answers "nothing changed")
#   alone          tenant t1's webhooks (full path, wrk -c4) with nothing else
#   beside backlog the same once tenant t0 holds a backlog (flooded for
#                  DURATION with WEBHOOK_WAIT_MS=0 while its GHL never
#                  answers, so its events stay pending)
#   beside flood   the same while t0 is being flooded (for information:
#                  the two then share the one core)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${1:-500}"
DURATION="${2:-10s}"
OUT="$ROOT/bench/results"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RAW="$OUT/tenants-$STAMP.txt"
TMP="$(mktemp -d /tmp/ncghl-tenants-XXXXXX)"
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
[ -x "$BIN" ] && [ -x "$FAKE" ] || { echo "build first: make build" >&2; exit 1; }
trap cleanup EXIT
HANG_PORT=$((FAKE_PORT + 1))

log "ncghl tenants benchmark $STAMP: $N tenants on $(nproc) cores; load: $(uptime | sed 's/.*load average: //')"

# Each tenant's overlay: the shipped contacts map with one tag of its own,
# so every tenant really loads mappings of its own.
mkdir -p "$TMP/tenants.d"
for i in $(seq 0 $((N - 1))); do
  mkdir -p "$TMP/overlays/t$i"
  cat > "$TMP/overlays/t$i/contacts.lua" <<EOF
local contacts = require "defaults.contacts"
local shipped = contacts.insured_to_contact.tags
contacts.insured_to_contact.tags = function(insured)
  local tags = shipped(insured)
  tags[#tags + 1] = "agency-t$i"
  return tags
end
return contacts
EOF
  ghl_port=$FAKE_PORT extra=""
  # t0: its GHL never answers, and it answers after the commit, so its
  # backlog grows as fast as it is sent.
  [ "$i" -eq 0 ] && ghl_port=$HANG_PORT extra="WEBHOOK_WAIT_MS=0"
  cat > "$TMP/tenants.d/t$i.env" <<EOF
NOWCERTS_BASE_URL=http://127.0.0.1:$FAKE_PORT/api
NOWCERTS_USERNAME=user-t$i
NOWCERTS_PASSWORD=pass-t$i
GHL_BASE_URL=http://127.0.0.1:$ghl_port
GHL_API_KEY=key-t$i
GHL_LOCATION_ID=loc-t$i
MAPPINGS_DIR=$TMP/overlays/t$i
$extra
EOF
done

start_fake --latency-ms 0
taskset -c 1 "$FAKE" --port "$HANG_PORT" --hang > "$TMP/hang.out" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$HANG_PORT/_stats"

mkdir -p "$TMP/db"
t0=$(date +%s.%N)
env -i PATH="$PATH" HOME="$HOME" HOST=127.0.0.1 PORT=$PORT DB_PATH="$TMP/db/ncghl.db" \
  MAPPINGS_DIR="$ROOT/mappings" LUA_DIR="$ROOT/lua" LOG_LEVEL=WARNING DOCTOR_AT_START=false \
  TENANTS_DIR="$TMP/tenants.d" GHL_RATE_LIMIT=0 RATE_LIMIT_PER_MINUTE=0 GHL_WEBHOOK_VERIFY=false \
  EVENT_CONCURRENCY=16 UPSTREAM_TIMEOUT=3600 \
  taskset -c 0 "$BIN" serve > "$TMP/ncghl.log" 2>&1 &
NCGHL_PID=$!; pids+=("$NCGHL_PID")
for _ in $(seq 1 1200); do curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health" && break; sleep 0.1; done
t1=$(date +%s.%N)
start_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
rss_start=$(rss_kib "$NCGHL_PID")
log "started in $start_s s, RSS $((rss_start / 1024)) MiB"

# Every poller reads InsuredDetailList, PolicyDetailList and
# DeletedInsuredList once per cycle: wait for 3 reads per tenant.
end=$(( $(date +%s) + 300 ))
while [ "$(fake_stat nc_list)" -lt $((3 * N)) ] && [ "$(date +%s)" -lt "$end" ]; do sleep 1; done
lists=$(fake_stat nc_list)
rss_polled=$(rss_kib "$NCGHL_PID")
log "after $lists list reads: RSS $((rss_polled / 1024)) MiB"

# One tenant alone; beside another tenant's standing backlog (t0 flooded
# first, its GHL silent, so its events stay pending); and, for information,
# while t0 is being flooded (the two then share the one core).
r_alone=$(run_wrk t1-alone "http://127.0.0.1:$PORT/t/t1" "$DURATION" 4)
log "$r_alone"
r_fill=$(run_wrk t0-fill "http://127.0.0.1:$PORT/t/t0" "$DURATION" 28)
log "t0 filled: $r_fill"
t0_backlog=$(curl -fs "http://127.0.0.1:$PORT/metrics" | sed -n 's/^ncghl_events{tenant="t0",status="pending"} \([0-9]*\).*/\1/p')
r_backlog=$(run_wrk t1-backlog "http://127.0.0.1:$PORT/t/t1" "$DURATION" 4)
log "$r_backlog (t0 pending: $t0_backlog)"
( TMP="$TMP/flood"; mkdir -p "$TMP"
  run_wrk t0-flood "http://127.0.0.1:$PORT/t/t0" "$DURATION" 28 > "$TMP/../flood.result" ) &
flood=$!
sleep 1
r_beside=$(run_wrk t1-beside "http://127.0.0.1:$PORT/t/t1" "$DURATION" 4)
wait "$flood" || true
r_flood=$(cat "$TMP/flood.result")
log "$r_beside"; log "flood of t0: $r_flood"
hwm=$(hwm_kib "$NCGHL_PID")

{
  echo
  echo "ncghl tenants benchmark, $STAMP, $N tenants, $(nproc) cores, each with its overlay and its poller (60 s)"
  echo
  echo "| row | value |"
  echo "| --- | --- |"
  echo "| start, every tenant running | $start_s s |"
  echo "| RSS after start | $((rss_start / 1024)) MiB |"
  echo "| RSS once every poller ran ($lists list reads) | $((rss_polled / 1024)) MiB |"
  echo "| peak RSS (through the rows below) | $((hwm / 1024)) MiB |"
  echo "| t1 alone, full path, wrk -c4 | $(field "$r_alone" rps) req/s, p99 $(field "$r_alone" p99) ms, $(field "$r_alone" statuses) |"
  echo "| t1 beside t0's standing backlog (${t0_backlog:-?} pending), wrk -c4 | $(field "$r_backlog" rps) req/s, p99 $(field "$r_backlog" p99) ms, $(field "$r_backlog" statuses) |"
  echo "| t1 while t0 is flooded (one core shared), wrk -c4 | $(field "$r_beside" rps) req/s, p99 $(field "$r_beside" p99) ms, $(field "$r_beside" statuses) |"
  echo "| t0's flood meanwhile, wrk -c28, its GHL silent | $(field "$r_flood" rps) req/s accepted, p99 $(field "$r_flood" p99) ms |"
} | tee -a "$RAW"
