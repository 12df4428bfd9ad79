#!/usr/bin/env bash
# Runs the whole test suite. Installs, idempotently, what the tests need
# beyond the Rust toolchain (procps, nginx for the benchmark's smoke test,
# and esptool in a Python venv for the ESP image tests), so it works the
# same on a fresh machine and in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_tools
ensure_esptool

cargo test --workspace --locked "$@"
