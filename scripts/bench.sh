#!/usr/bin/env bash
# Runs every `ota-sim bench` scenario against release builds, next to nginx
# (Debian's package, installed if missing and started by the scenarios on
# loopback), and writes the Markdown table to the file given (default
# bench-results.md). Takes about five minutes on two cores.
#
#   scripts/bench.sh [OUTPUT.md] [ota-sim bench options, e.g. check download]
#
# Scenarios (all by default): check download slow status inventory upload.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_tools

out="${1:-bench-results.md}"
shift || true
cargo build --release --locked -p ota-server -p ota-sim
{
  echo "# ota-sim bench, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -r)."
  echo "Server: ota-server $(git describe --always --dirty 2>/dev/null || echo unknown); reference: $(/usr/sbin/nginx -v 2>&1)."
  echo
} > "$out"
status=0
target/release/ota-sim bench --server-bin target/release/ota-server --markdown "$out.table" "$@" || status=$?
[ -f "$out.table" ] && cat "$out.table" >> "$out"
rm -f "$out.table"
echo "wrote $out"
exit "$status"
