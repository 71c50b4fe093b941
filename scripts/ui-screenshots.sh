#!/usr/bin/env bash
# Refreshes the screenshots of the /ui page under docs/ui/ (the README shows
# them): runs the browser test, which walks every view with real events and
# saves each one. Needs a built binary (make build) and scripts/deps.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export NCGHL_ROOT="$root"
export NCGHL_BIN="${NCGHL_BIN:-$root/build/ncghl}"
export NCGHL_UI_SCREENSHOTS=1
exec python3 "$root/tests/integration/test_ui.py" UIBrowser
