#!/usr/bin/env bash
# The one list of Debian packages ncghl needs to build, test and benchmark.
# Installs only what is missing, so a second run costs nothing.
set -euo pipefail
PACKAGES=(
  build-essential cmake pkg-config python3 curl
  liblua5.4-dev lua-cjson-dev libevent-dev libcurl4-openssl-dev
  libsqlite3-dev libssl-dev libcmocka-dev sqlite3 wrk lua-check
  # The store on PostgreSQL (STORE_URL): libpq to build, and the server the
  # suite starts itself (tests/pgcluster.py) to run unit_pg/ and integration_pg/.
  libpq-dev postgresql
  # tests/integration/test_ui.py drives the /ui page in a real headless browser.
  chromium chromium-driver python3-selenium
)
# Only the benchmark needs these: the peer (the source design in Python) it
# is compared against, and rsvg-convert to look at bench/curve.sh's SVGs as
# PNG. `scripts/deps.sh --bench` adds them.
BENCH_PACKAGES=(python3-fastapi python3-uvicorn python3-httpx python3-pydantic librsvg2-bin)
# Only `make fuzz` needs these: clang and its libFuzzer/sanitizer runtime
# (the suite replays the fuzz corpora with gcc). `scripts/deps.sh --fuzz`.
FUZZ_PACKAGES=(clang libclang-rt-14-dev)
for arg in "$@"; do
  case "$arg" in
  --bench) PACKAGES+=("${BENCH_PACKAGES[@]}") ;;
  --fuzz) PACKAGES+=("${FUZZ_PACKAGES[@]}") ;;
  esac
done
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
