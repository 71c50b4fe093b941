#!/usr/bin/env bash
# A steady load instead of a flood: wrk with 32 connections, each waiting
# DELAY ms between its requests (an offered rate of about 32000/(DELAY + the
# answer's time) webhooks/s), WEBHOOK_WAIT_MS=0, the fake GHL answering at
# once. Does processing keep up while intake is paced (src/pace.h)? Printed:
# the answers, the events still pending or running when the load stops, and
# how long they then took to run.
# usage: bench/steady.sh [DURATION=15s] [DELAY_MS...=25 18 12]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${1:-15s}"
shift || true
if [ $# -gt 0 ]; then DELAYS=("$@"); else DELAYS=(25 18 12); fi
OUT="$ROOT/bench/results"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RAW="$OUT/steady-$STAMP.txt"
TMP="$(mktemp -d /tmp/ncghl-bench-XXXXXX)"
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
[ -x "$BIN" ] && [ -x "$FAKE" ] || { echo "build first: make build" >&2; exit 1; }
trap cleanup EXIT

log "ncghl steady load $STAMP on $(nproc) cores; load: $(uptime | sed 's/.*load average: //')"
log "| think time | answered/s | p50 | p99 | answers by status | left when the load stopped | then run in |"
log "| --- | --- | --- | --- | --- | --- | --- |"
for d in "${DELAYS[@]}"; do
  start_fake --latency-ms 0
  start_ncghl WEBHOOK_WAIT_MS=0 EVENT_CONCURRENCY=64
  r=$(WRK_DELAY="$d" run_wrk "steady$d" "http://127.0.0.1:$PORT" "$DURATION" 32)
  left=$(backlog); t0=$(date +%s.%N)
  wait_drain 120
  t1=$(date +%s.%N)
  log "| $d ms | $(field "$r" rps) | $(field "$r" p50) ms | $(field "$r" p99) ms | $(field "$r" statuses) | $left | $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f s", b - a}') |"
  log "outcomes: $(outcomes); log warnings $(event_failures)"
  stop_pid "$NCGHL_PID"; stop_pid "$FAKE_PID"
done
log "raw: $RAW"
