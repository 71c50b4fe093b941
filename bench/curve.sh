#!/usr/bin/env bash
# The scaling curve (issue 10, item 5): throughput and p99 of the full path
# (answered after delivery) against wrk connections and against body size,
# for ncghl and the peer, placed as SPEC §8 says (servers on CPU 0, wrk and
# fakes on CPU 1). Writes docs/scaling-connections.svg,
# docs/scaling-payload.svg and docs/scaling-curve.md (the numbers) with
# bench/plot_svg.py (python3 standard library only); raw wrk output goes to
# bench/results/curve-STAMP.txt.
#
# usage: bench/curve.sh [SECONDS_PER_POINT=4] [REPEAT=2]   (after make build)
# Each point runs REPEAT times and keeps the run with the most requests/s
# (the machine may be shared).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-4}"
REPEAT="${2:-2}"
CONNS="${CURVE_CONNS:-1 2 4 8 16 32 64 128 256}"
SIZES="${CURVE_SIZES_KIB:-0.25 1 4 16 64}"
PAYLOAD_CONNS=32
OUT="$ROOT/bench/results"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RAW="$OUT/curve-$STAMP.txt"
TMP="$(mktemp -d /tmp/ncghl-curve-XXXXXX)"
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
"$ROOT/scripts/deps.sh" --bench >/dev/null
[ -x "$BIN" ] && [ -x "$FAKE" ] || { echo "build first: make build" >&2; exit 1; }
trap cleanup EXIT
TSV="$TMP/curve.tsv"
printf 'system\tseries\tx\tconns\tbody\trps\tp50\tp99\terrors\tstatuses\toutcome\n' > "$TSV"
log "ncghl scaling curve $STAMP on $(nproc) cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)); load: $(uptime | sed 's/.*load average: //'); ${SECS}s per point"

pad_for() { # KiB -> bytes of padding over the ~260-byte base body
  awk -v k="$1" 'BEGIN {p = int(k * 1024) - 260; print (p > 0 ? p : 0)}'
}
record() { # system series x conns result outcome
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(field "$5" body)" "$(field "$5" rps)" \
    "$(field "$5" p50)" "$(field "$5" p99)" "$(field "$5" errors)" "$(field "$5" statuses)" "$6" >> "$TSV"
  log "$1 $2=$3: $(echo "$5" | cut -d' ' -f2-) | $6"
}

# ncghl: a fresh server and store per point, so no point inherits the last
# one's backlog or database.
ncghl_point() { # series x conns pad
  local best="" best_o="" r o i
  for i in $(seq 1 "$REPEAT"); do
    start_fake --latency-ms 0
    start_ncghl WEBHOOK_WAIT_MS=3000 EVENT_CONCURRENCY=64
    r=$(run_wrk "ncghl-$1-$2-$i" "http://127.0.0.1:$PORT" "${SECS}s" "$3" "$4")
    wait_drain 20
    o="done $(events done) dead $(events dead) retry $(events retry_wait) unanswered $(fake_stat unknown)"
    [ "$(better "$r" "$best")" = "$r" ] && { best="$r"; best_o="$o"; }
    stop_pid "$NCGHL_PID"; stop_pid "$FAKE_PID"
  done
  record ncghl "$1" "$2" "$3" "$best" "$best_o"
}
for c in $CONNS; do ncghl_point conns "$c" "$c" 0; done
for k in $SIZES; do ncghl_point payload "$k" "$PAYLOAD_CONNS" "$(pad_for "$k")"; done

# The peer, like ncghl, gets a fresh process per run: with one process kept
# across all points it answered about 200 req/s at 32 connections after a
# dozen points against about 390 fresh (not told apart from the shared
# machine's noise, but a fresh start is the fair case either way). Every run
# still has its own run id and phone series.
series=1
if /usr/bin/python3 -c 'import fastapi, uvicorn, httpx' 2>/dev/null; then
  peer_point() { # series x conns pad
    local best="" r i
    for i in $(seq 1 "$REPEAT"); do
      start_peer
      r=$(run_wrk "peer-$1-$2-$i" "http://127.0.0.1:$PEER_PORT" "${SECS}s" "$3" "$4" "$series")
      series=$((series + 1)); best=$(better "$r" "$best")
      stop_peer
    done
    record peer "$1" "$2" "$3" "$best" "-"
  }
  for c in $CONNS; do peer_point conns "$c" "$c" 0; done
  for k in $SIZES; do peer_point payload "$k" "$PAYLOAD_CONNS" "$(pad_for "$k")"; done
else
  log "peer not run: scripts/deps.sh --bench installs what it needs"
fi

cp "$TSV" "$OUT/curve-$STAMP.tsv"
python3 "$ROOT/bench/plot_svg.py" "$TSV" "$ROOT/docs" \
  "$STAMP, $(nproc) cores, ${SECS} s per point, best of $REPEAT, load $(uptime | sed 's/.*load average: //')"
log "wrote docs/scaling-connections.svg docs/scaling-payload.svg docs/scaling-curve.md"
