#!/usr/bin/env bash
# Runs the whole test suite. Installs, idempotently, what the tests need
# beyond the Rust toolchain (procps, and nginx for the benchmark's smoke
# test), so it works the same on a fresh machine and in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_tools

cargo test --workspace --locked "$@"
