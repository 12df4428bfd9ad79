#!/usr/bin/env bash
# How fast the ESP-IDF client's download path runs against the server:
# ota-host-client (the portable core and its libcurl port, built with -O2
# and no sanitizers) installing a 16 MiB ESP32-P4 image in Range pieces,
# next to the reference, one plain `curl` GET of the same signed link.
# Everything runs on 127.0.0.1; release builds; a fresh data folder.
#
#   scripts/bench-client.sh [RUNS]        (default 5 runs per row)
#
# Prints a Markdown table: MiB/s per row (median of the runs) and the ratio
# to the reference. On a device the radio, TLS and flash writes are the
# limit, not this; the figure shows what the Range pieces (one request per
# 64 KiB, as esp_https_ota sends them) cost the server and the client.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_c_client_deps
command -v curl >/dev/null 2>&1 || apt_install curl

runs="${1:-5}"
cargo build --release --locked -q -p ota-server -p ota-sim -p otactl
make -s -C clients/esp-idf/host OUT="$PWD/target/esp-idf-host-release" SAN= CFLAGS=-O2 \
  "$PWD/target/esp-idf-host-release/ota-host-client"
client="$PWD/target/esp-idf-host-release/ota-host-client"
bin="$PWD/target/release"

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export OTA_SERVER="http://127.0.0.1:$port"
OTA_LISTEN="127.0.0.1:$port" OTA_DATA_DIR="$work/data" OTA_LOG_LEVEL=warn \
  "$bin/ota-server" serve > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  curl -fsS "$OTA_SERVER/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
export OTA_ADMIN_TOKEN; OTA_ADMIN_TOKEN=$(cat "$work/data/secrets/admin_token")

"$bin/otactl" device-type create scales_bridge_tab5 --image-format esp-app --chip esp32p4 \
  --project-name scales_bridge >/dev/null
"$bin/ota-sim" make-image -o "$work/old.bin" --version 1.0.0 --project scales_bridge --size 1048576 >/dev/null
"$bin/ota-sim" make-image -o "$work/new.bin" --version 1.1.0 --project scales_bridge --size 16777216 >/dev/null
"$bin/otactl" firmware upload "$work/new.bin" -t scales_bridge_tab5 --register --stable --no-progress >/dev/null
size=$(stat -c %s "$work/new.bin")

token_for() {
  "$bin/otactl" device token "$1" -t scales_bridge_tab5 --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# seconds for one install by the host client with PIECE-byte pieces
client_run() {
  local piece=$1 n=$2 dir="$work/dev-$1-$2"
  mkdir -p "$dir" && cp "$work/old.bin" "$dir/slot0.bin"
  local token; token=$(token_for "bench-$piece-$n")
  local start end code=0
  start=$(date +%s.%N)
  OTA_DEVICE_TOKEN="$token" "$client" --server "$OTA_SERVER" --device-type scales_bridge_tab5 \
    --device-dir "$dir" --piece-size "$piece" --boots 1 > "$dir.log" 2>&1 || code=$?
  end=$(date +%s.%N)
  [ "$code" = 4 ] || { echo "ota-host-client exited $code (want 4: activated):" >&2; cat "$dir.log" >&2; exit 1; }
  cmp -s "$dir/slot1.bin" "$work/new.bin" || { echo "slot1.bin differs from the image" >&2; exit 1; }
  rm -rf "$dir"
  echo "$end - $start" | bc -l
}

# seconds for one plain GET of the signed link the check hands out
curl_run() {
  local token url; token=$(token_for "bench-curl-$1")
  url=$(curl -fsS "$OTA_SERVER/api/ota/check" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' \
    -d '{"device_type":"scales_bridge_tab5","current_version":"1.0.0"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["download_url"])')
  curl -fsS -o /dev/null -w '%{time_total}\n' "$url"
}

mib_s() { echo "$size / 1048576 / $1" | bc -l | xargs printf '%.0f'; }

command -v bc >/dev/null 2>&1 || apt_install bc
ref=$(for n in $(seq "$runs"); do curl_run "$n"; done | median)
echo "| download of a 16 MiB image, $runs runs, median | MiB/s | vs. reference |"
echo "|---|---|---|"
echo "| reference: one curl GET of the signed link | $(mib_s "$ref") | 1.00 |"
for piece in 65536 1048576; do
  t=$(for n in $(seq "$runs"); do client_run "$piece" "$n"; done | median)
  echo "| ota-host-client, $((piece / 1024)) KiB Range pieces (check, HEAD, pieces, NVS record per piece, SHA-256 read-back, reports) | $(mib_s "$t") | $(echo "$ref / $t" | bc -l | xargs printf '%.2f') |"
done
