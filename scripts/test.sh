#!/usr/bin/env bash
# Runs the whole test suite. Installs, idempotently, what the tests need
# beyond the Rust toolchain, so it works the same on a fresh machine and in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v kill >/dev/null 2>&1 || need_apt+=(procps)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi

cargo test --workspace --locked "$@"
