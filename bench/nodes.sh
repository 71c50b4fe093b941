#!/usr/bin/env bash
# One node against two (SPEC §13), side by side: the same unique-person load
# on one ncghl over SQLite, one over PostgreSQL, and two over one PostgreSQL
# database, each row on a fresh store; after each row, the events by status
# (read from the store itself) and the fake's creates, so a row that lost or
# doubled a delivery says so.
#
# usage: bench/nodes.sh [DURATION=10s] [REPEAT=1]   (repository root, after make build)
# Placement: the ncghl nodes and PostgreSQL on CPU 0, wrk and the fake on
# CPU 1, as bench/run.sh places one node. On this 2-core machine a second
# node shares the first one's core: the rows measure what sharing the work
# through the database costs, not what a second machine would add.
# Rows: "full" answers after delivery (WEBHOOK_WAIT_MS=3000); "intake"
# answers after the commit (WEBHOOK_WAIT_MS=0) and is then drained.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${1:-10s}"
REPEAT="${2:-1}"
OUT="$ROOT/bench/results"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RAW="$OUT/nodes-$STAMP.txt"
TMP="$(mktemp -d /tmp/ncghl-nodes-XXXXXX)"
mkdir -p "$OUT"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
[ -x "$BIN" ] && [ -x "$FAKE" ] || { echo "build first: make build" >&2; exit 1; }
PG_PORT="${BENCH_PG_PORT:-5499}"
PORT2=$((PORT + 1))
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server not installed (scripts/deps.sh)" >&2; exit 1; }

pg_stop() { [ -d "$TMP/pg" ] && as_pg "$PGBIN/pg_ctl" -D "$TMP/pg/data" -m immediate stop >/dev/null 2>&1 || true; }
trap 'pg_stop; cleanup' EXIT
# PostgreSQL refuses to run as root: the cluster belongs to the postgres
# user the Debian package creates (or to the caller when not root).
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# A throwaway cluster on loopback, trusted (nothing leaves the machine),
# fsync on: a commit costs what it costs in production.
pg_start() {
  port_free "$PG_PORT" || { echo "port $PG_PORT is taken (set BENCH_PG_PORT)" >&2; exit 1; }
  mkdir -p "$TMP/pg/sock"; chmod 755 "$TMP"
  [ "$(id -u)" -eq 0 ] && chown -R postgres "$TMP/pg"
  as_pg "$PGBIN/initdb" -D "$TMP/pg/data" -A trust -U postgres >/dev/null
  as_pg taskset -c 0 "$PGBIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/log" -w \
    -o "-p $PG_PORT -k $TMP/pg/sock -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
}
psql_q() { as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -At -F ' ' "$@"; }
fresh_db() { psql_q -c "DROP DATABASE IF EXISTS ncghl" >/dev/null 2>&1; psql_q -c "CREATE DATABASE ncghl" >/dev/null; }

# start_node PORT STORE [env...]: one ncghl on CPU 0 (bench/lib.sh's settings).
start_node() {
  local port=$1 store=$2; shift 2
  port_free "$port" || { echo "port $port is taken" >&2; exit 1; }
  env -i PATH="$PATH" HOME="$HOME" HOST=127.0.0.1 PORT="$port" DB_PATH="$TMP/db/ncghl.db" STORE_URL="$store" \
    MAPPINGS_DIR="$ROOT/mappings" LUA_DIR="$ROOT/lua" LOG_LEVEL=WARNING DOCTOR_AT_START=false \
    GHL_BASE_URL="http://127.0.0.1:$FAKE_PORT" GHL_API_KEY=bench-token GHL_LOCATION_ID=bench-location \
    NOWCERTS_BASE_URL="http://127.0.0.1:$FAKE_PORT/api" NOWCERTS_POLL_INTERVAL=0 \
    GHL_RATE_LIMIT=0 RATE_LIMIT_PER_MINUTE=0 GHL_WEBHOOK_VERIFY=false EVENT_CONCURRENCY=64 "$@" \
    taskset -c 0 "$BIN" serve >> "$TMP/ncghl-$port.log" 2>&1 &
  pids+=("$!"); echo "$!"
  wait_http "http://127.0.0.1:$port/health" >/dev/null
}

# stop_node PID: the node is not our child (started in $(...)): signal it
# and wait until it is gone and its port free.
stop_node() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
  kill -9 "$1" 2>/dev/null || true
}

# by_status STORE: "done N, pending N, ..." read from the store itself
# (two nodes' /metrics each count only their own rows).
by_status() {
  if [ -z "$1" ]; then
    sqlite3 "$TMP/db/ncghl.db" "SELECT status, count(*) FROM events GROUP BY status" | tr '|' ' '
  else
    psql_q -d ncghl -c "SELECT status, count(*) FROM events GROUP BY status"
  fi | awk 'BEGIN {split("pending running done retry_wait dead", n, " ")} {printf "%s%s %s", sep, n[$1+1], $2; sep=", "}'
}
unfinished() { by_status "$1" | grep -Eo '(pending|running|retry_wait) [0-9]+' | awk '{s += $2} END {print s + 0}'; }

rows=()
# one_row NAME NODES STORE WAIT_MS
one_row() {
  local name=$1 nodes=$2 store=$3 wait_ms=$4 best="" bestinfo="" i
  for i in $(seq 1 "$REPEAT"); do
    rm -rf "$TMP/db"; mkdir -p "$TMP/db"
    [ -n "$store" ] && fresh_db
    start_fake --latency-ms 0
    local n1 n2="" r r2="" total acc
    n1=$(start_node "$PORT" "$store" WEBHOOK_WAIT_MS="$wait_ms")
    [ "$nodes" -eq 2 ] && n2=$(start_node "$PORT2" "$store" WEBHOOK_WAIT_MS="$wait_ms")
    log "== $name ($i/$REPEAT)"
    if [ "$nodes" -eq 2 ]; then
      # Two wrk processes, 16 connections each: the same 32 in all.
      (run_wrk "n1-$i" "http://127.0.0.1:$PORT" "$DURATION" 16 > "$TMP/r1") &
      local w1=$!
      TMP_SAVE=$TMP; (TMP="$TMP/w2"; mkdir -p "$TMP"; run_wrk "n2-$i" "http://127.0.0.1:$PORT2" "$DURATION" 16 > "$TMP_SAVE/r2") &
      wait $w1 $!
      r=$(cat "$TMP/r1"); r2=$(cat "$TMP/r2")
    else
      r=$(run_wrk "n1-$i" "http://127.0.0.1:$PORT" "$DURATION" 32)
    fi
    total=$(awk -v a="$(field "$r" rps)" -v b="$(field "$r2" rps)" 'BEGIN {printf "%.0f", a + b}')
    local p99; p99=$(awk -v a="$(field "$r" p99)" -v b="$(field "$r2" p99)" 'BEGIN {printf "%s", (b > a ? b : a)}')
    # Accepted = answered 200/202 (answered after delivery or after commit).
    acc=$(for x in "$r" "$r2"; do field "$x" statuses | tr ',' '\n'; done | awk -F= '$1 ~ /^20[02]$/ {s += $2} END {print s + 0}')
    local end=$(( $(date +%s) + 120 ))
    while [ "$(unfinished "$store")" -gt 0 ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.5; done
    local st creates; st=$(by_status "$store"); creates=$(fake_stat create)
    log "$r"; [ -n "$r2" ] && log "$r2"
    log "accepted $acc; store: $st; fake creates $creates"
    if [ -z "$best" ] || [ "$total" -gt "$(echo "$best" | cut -d' ' -f1)" ]; then
      best="$total $p99"; bestinfo="accepted $acc, store: $st, GHL creates $creates"
    fi
    stop_node "$n1"; [ -n "$n2" ] && stop_node "$n2"; stop_pid "$FAKE_PID"
  done
  rows+=("| $name | $(echo "$best" | cut -d' ' -f1) | $(echo "$best" | cut -d' ' -f2) ms | $bestinfo |")
}

log "ncghl nodes benchmark $STAMP on $(nproc) cores; load: $(uptime | sed 's/.*load average: //')"
pg_start
PGURL="postgresql://postgres@127.0.0.1:$PG_PORT/ncghl"
for mode in full intake; do
  w=3000; [ "$mode" = intake ] && w=0
  one_row "$mode, 1 node, SQLite" 1 "" "$w"
  one_row "$mode, 1 node, PostgreSQL" 1 "$PGURL" "$w"
  one_row "$mode, 2 nodes, one PostgreSQL" 2 "$PGURL" "$w"
done
{
  echo
  echo "ncghl nodes benchmark, $STAMP, $(nproc) cores, wrk -c32 in all -d$DURATION, unique people, best of $REPEAT"
  echo
  echo "| row | req/s (all nodes) | p99 (worst node) | what the store and the fake hold after the drain |"
  echo "| --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
} | tee -a "$RAW"
