#!/usr/bin/env bash
# Runs the whole test suite. Installs, idempotently, what the tests need
# beyond the Rust toolchain (procps, nginx for the benchmark's smoke test,
# esptool in a Python venv for the ESP image tests, libcurl/cJSON for the
# ESP-IDF client's host port, PostgreSQL), and starts what is down, so it
# works the same on a fresh machine and in CI.
#
# The server's API tests run twice: on the embedded default (SQLite and a
# local folder), then on PostgreSQL, in a database made for this run and
# dropped after it, with the firmware in an S3 bucket (s3s-fs, installed
# from crates.io into target/tools and started on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
. scripts/lib/postgres.sh
. scripts/lib/s3.sh
ensure_tools
ensure_esptool
ensure_c_client_deps
ensure_postgres
ensure_s3s_fs

# The ESP-IDF client's portable core: its C unit tests under ASan and UBSan.
# (The end-to-end tests against the server are in ota-server's API tests.)
make -s -C clients/esp-idf/host OUT="$PWD/target/esp-idf-host" test

cargo test --workspace --locked "$@"

echo "the server's API tests again, on PostgreSQL and S3"
# Whatever happens, the run's database goes and the S3 server stops.
trap 'drop_run_database; stop_s3' EXIT
create_run_database
start_s3
OTA_TEST_REQUIRE_S3=1 cargo test -p ota-server --locked --test api "$@"
