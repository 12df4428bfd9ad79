#!/usr/bin/env bash
# Runs the whole test suite. Installs, idempotently, what the tests need
# beyond the Rust toolchain (procps, nginx for the benchmark's smoke test,
# esptool in a Python venv for the ESP image tests, and libcurl/cJSON for
# the ESP-IDF client's host port), so it works the same on a fresh machine
# and in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_tools
ensure_esptool
ensure_c_client_deps

# The ESP-IDF client's portable core: its C unit tests under ASan and UBSan.
# (The end-to-end tests against the server are in ota-server's API tests.)
make -s -C clients/esp-idf/host OUT="$PWD/target/esp-idf-host" test

cargo test --workspace --locked "$@"
