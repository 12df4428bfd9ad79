#!/usr/bin/env bash
# Fuzzes ota-core with the cargo-fuzz targets in fuzz/ (docs/fuzzing.md).
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]  fuzz each target SECONDS (600)
#   scripts/fuzz.sh build                   build the targets only
#   scripts/fuzz.sh seeds                   regenerate fuzz/seeds/
#
# Installs cargo-fuzz if it is missing. Uses the nightly toolchain when
# rustup has one, otherwise stable with RUSTC_BOOTSTRAP=1 (FUZZ_NIGHTLY=0
# forces that). New inputs go to fuzz/corpus/TARGET, crashes to
# fuzz/artifacts/TARGET, the log to fuzz/target/fuzz-TARGET.log; only the
# seeds in fuzz/seeds/TARGET are kept in git. FUZZ_SANITIZER (default none:
# ota-core has no unsafe code) is passed to cargo fuzz -s. FUZZ_KEEP_GOING=1
# keeps fuzzing after a crash (libFuzzer -fork=1 -ignore_crashes=1), to
# look past a known one. Exits 1 when a target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(esp_image version)
SANITIZER=${FUZZ_SANITIZER:-none}

# The largest input each target is given: a signed image is 8 KiB.
max_len() {
  case "$1" in
    esp_image) echo 12288 ;;
    *) echo 256 ;;
  esac
}

ensure_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
}

# The cargo fuzz command: on nightly, or on stable allowed nightly flags.
if [ "${FUZZ_NIGHTLY:-1}" != 0 ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  CARGO_FUZZ=(cargo +nightly fuzz)
else
  CARGO_FUZZ=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
fi

make_seeds() {
  cargo run --manifest-path fuzz/Cargo.toml --example make_seeds -- fuzz/seeds
}

# run_target TARGET SECONDS : fuzzes, prints libFuzzer's final figures and
# returns 1 when the run crashed.
run_target() {
  local target=$1 seconds=$2
  local corpus=fuzz/corpus/$target artifacts=fuzz/artifacts/$target log=fuzz/target/fuzz-$target.log
  mkdir -p "$corpus" "$artifacts" fuzz/target
  local started=fuzz/target/fuzz-$target.started
  touch "$started"
  echo "== $target: $seconds s, log in $log"
  local command=("${CARGO_FUZZ[@]}" run -s "$SANITIZER" --debug-assertions "$target" "$corpus" "fuzz/seeds/$target"
    -- "-max_total_time=$seconds" "-max_len=$(max_len "$target")" -timeout=10 -print_final_stats=1)
  if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
    command+=(-fork=1 -ignore_crashes=1)
  fi
  echo "${command[*]}"
  local status=0
  "${command[@]}" >"$log" 2>&1 || status=$?

  local crashes
  crashes=$(find "$artifacts" -type f -newer "$started" \
    \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | sort)
  echo "-- libFuzzer's last status and final stats:"
  grep -E '^#[0-9]+:?[[:space:]]' "$log" | tail -n 1 || true
  grep -E '^(stat::|Done [0-9]+ runs|INFO: exiting)' "$log" || true
  local count
  count=$(printf '%s' "$crashes" | grep -c . || true)
  echo "-- $target: exit status $status, corpus files in $corpus: $(find "$corpus" -type f | wc -l), crashes: $count"
  if [ "$count" -gt 0 ]; then
    # The first three, run again for their panic message.
    local file
    for file in $(printf '%s\n' "$crashes" | head -n 3); do
      echo "crash input $file ($(wc -c <"$file") bytes, hex): $(od -An -v -tx1 "$file" | tr -d ' \n' | cut -c1-512)"
      "${CARGO_FUZZ[@]}" run -s "$SANITIZER" --debug-assertions "$target" "$file" 2>&1 |
        grep -A1 -m1 'panicked at' | cut -c1-600 || true
    done
    if [ "$count" -gt 3 ]; then echo "... and $((count - 3)) more in $artifacts"; fi
    return 1
  fi
  if [ "$status" != 0 ]; then
    echo "cargo fuzz failed; the end of $log:"
    tail -n 30 "$log"
    return 1
  fi
}

what=${1:-all}
seconds=${2:-600}
case "$what" in
  seeds)
    make_seeds
    exit 0
    ;;
  build)
    ensure_cargo_fuzz
    "${CARGO_FUZZ[@]}" build -s "$SANITIZER" --debug-assertions
    exit 0
    ;;
  all) targets=("${TARGETS[@]}") ;;
  *)
    if [[ ! " ${TARGETS[*]} " == *" $what "* ]]; then
      echo "usage: scripts/fuzz.sh [esp_image|version|all|build|seeds] [SECONDS]" >&2
      exit 2
    fi
    targets=("$what")
    ;;
esac

ensure_cargo_fuzz
crashed=0
for target in "${targets[@]}"; do
  run_target "$target" "$seconds" || crashed=1
done
exit "$crashed"
