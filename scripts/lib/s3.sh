# An S3-compatible server for the tests: s3s-fs (crates.io), installed into
# target/tools and run on 127.0.0.1 with a data folder under target/.
# Sourced by scripts; every function is idempotent.
#
#   . scripts/lib/s3.sh
#   ensure_s3s_fs
#   start_s3        # exports AWS_* and OTA_TEST_STORAGE_URL=s3://ota-test
#   cargo test -p ota-server --test api
#   stop_s3         # optional: the server otherwise outlives the script

OTA_S3S_FS_VERSION=0.14.1
OTA_S3_ROOT=${OTA_S3_ROOT:-target/tools}
OTA_S3_DATA=${OTA_S3_DATA:-target/s3-data}
# Below the kernel's ephemeral range (32768-60999 by default), so that no
# outgoing connection of the tests can hold it when s3s-fs starts.
OTA_S3_PORT=${OTA_S3_PORT:-19000}
OTA_S3_BUCKET=${OTA_S3_BUCKET:-ota-test}
# Test-only credentials, known to the tests: the server listens on loopback.
OTA_S3_ACCESS_KEY=ota-test-access-key
OTA_S3_SECRET_KEY=ota-test-secret-key-0123456789

# ensure_s3s_fs : installs s3s-fs $OTA_S3S_FS_VERSION into $OTA_S3_ROOT
# unless that version is already there. Exports OTA_S3S_FS (the binary).
ensure_s3s_fs() {
  OTA_S3S_FS="$PWD/$OTA_S3_ROOT/bin/s3s-fs"
  export OTA_S3S_FS
  if [ -x "$OTA_S3S_FS" ] && grep -q "^\"s3s-fs $OTA_S3S_FS_VERSION " "$OTA_S3_ROOT/.crates.toml" 2>/dev/null; then
    return 0
  fi
  echo "installing s3s-fs $OTA_S3S_FS_VERSION into $OTA_S3_ROOT"
  cargo install s3s-fs --version "$OTA_S3S_FS_VERSION" --features binary --locked \
    --root "$OTA_S3_ROOT" --quiet
}

# s3_answers : whether something answers HTTP on the S3 port.
s3_answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$OTA_S3_PORT") 2>/dev/null
}

# start_s3 : starts s3s-fs on 127.0.0.1:$OTA_S3_PORT (unless it answers
# already), serving $OTA_S3_DATA, in which each folder is a bucket (emptied
# when a new server starts); makes the test bucket; exports what the server
# (AWS_*) and the API tests (OTA_TEST_STORAGE_URL) need. Its log is
# $OTA_S3_DATA.log.
start_s3() {
  ensure_s3s_fs
  if ! s3_answers; then
    echo "starting s3s-fs on 127.0.0.1:$OTA_S3_PORT"
    rm -rf "$OTA_S3_DATA"
    mkdir -p "$OTA_S3_DATA/$OTA_S3_BUCKET"
    nohup "$OTA_S3S_FS" --host 127.0.0.1 --port "$OTA_S3_PORT" \
      --access-key "$OTA_S3_ACCESS_KEY" --secret-key "$OTA_S3_SECRET_KEY" \
      "$OTA_S3_DATA" >"$OTA_S3_DATA.log" 2>&1 &
    echo $! >"$OTA_S3_DATA.pid"
    for _ in $(seq 1 100); do
      s3_answers && break
      sleep 0.1
    done
    if ! s3_answers; then
      echo "s3s-fs did not start; its log:" >&2
      cat "$OTA_S3_DATA.log" >&2
      return 1
    fi
  fi
  mkdir -p "$OTA_S3_DATA/$OTA_S3_BUCKET"
  export AWS_ACCESS_KEY_ID="$OTA_S3_ACCESS_KEY"
  export AWS_SECRET_ACCESS_KEY="$OTA_S3_SECRET_KEY"
  export AWS_REGION=us-east-1
  export AWS_ENDPOINT_URL="http://127.0.0.1:$OTA_S3_PORT"
  export AWS_ALLOW_HTTP=true
  export AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
  export OTA_TEST_STORAGE_URL="s3://$OTA_S3_BUCKET"
}

# stop_s3 : stops the s3s-fs that start_s3 started, if it still runs.
stop_s3() {
  if [ -f "$OTA_S3_DATA.pid" ]; then
    kill "$(cat "$OTA_S3_DATA.pid")" 2>/dev/null || true
    rm -f "$OTA_S3_DATA.pid"
  fi
}
