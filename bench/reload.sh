#!/usr/bin/env bash
# SPEC §8, reload: "a SIGHUP under load drops no request and swaps in <=
# 50 ms". The full path under wrk (32 connections, unique people, fake GHL
# answering at once) for DURATION, with SIGHUPS SIGHUPs spread over it; then
# every answer counted by status (none may be other than 200, no wrk error)
# and each reload's own account from the store's history: its time from
# reading the scripts to the swap, the mapping test cases it ran included.
# usage: bench/reload.sh [DURATION=10s] [SIGHUPS=3]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${1:-10s}"
SIGHUPS="${2:-3}"
OUT="$ROOT/bench/results"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RAW="$OUT/reload-$STAMP.txt"
TMP="$(mktemp -d /tmp/ncghl-bench-XXXXXX)"
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
[ -x "$BIN" ] && [ -x "$FAKE" ] || { echo "build first: make build" >&2; exit 1; }
trap cleanup EXIT

log "ncghl reload under load $STAMP on $(nproc) cores; load: $(uptime | sed 's/.*load average: //')"
start_fake --latency-ms 0
start_ncghl WEBHOOK_WAIT_MS=3000 EVENT_CONCURRENCY=64
secs=${DURATION%s}
( for i in $(seq 1 "$SIGHUPS"); do
    sleep "$(awk -v d="$secs" -v n="$SIGHUPS" 'BEGIN {print d / (n + 1)}')"
    kill -HUP "$NCGHL_PID"
  done ) &
hups=$!
r=$(run_wrk reload "http://127.0.0.1:$PORT" "$DURATION" 32)
wait "$hups"
sleep 1
log "$r"
log "reloads (ok, message), from the store:"
python3 - "$TMP/db/ncghl.db" <<'PY' | tee -a "$RAW" >&2
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
for ok, msg in db.execute("SELECT ok, message FROM reloads ORDER BY seq"):
    print(f"  {'ok' if ok else 'FAILED'}: {msg}")
PY
log "log warnings: $(event_failures)"
stop_pid "$NCGHL_PID"; stop_pid "$FAKE_PID"
