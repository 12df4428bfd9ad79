# Idempotent installation of the Debian packages the tests and benchmarks
# need. Sourced by scripts/test.sh and scripts/bench.sh.

# apt_install PACKAGE... : installs the packages without starting their
# services (nginx's package would otherwise start a server on port 80).
apt_install() {
  echo "installing: $*"
  local policy=/usr/sbin/policy-rc.d placed=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && placed=1
  fi
  local status=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } || status=$?
  if [ "$placed" = 1 ]; then rm -f "$policy"; fi
  return "$status"
}

# ensure_tools : installs what is missing of kill (procps), script
# (bsdutils: a terminal for otactl's progress bar), openssl (test
# certificates) and nginx (benchmark reference, TLS proxy in otactl's tests).
ensure_tools() {
  local need=()
  command -v kill >/dev/null 2>&1 || need+=(procps)
  command -v script >/dev/null 2>&1 || need+=(bsdutils)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  if [ ${#need[@]} -gt 0 ]; then
    apt_install "${need[@]}"
  fi
}

# ensure_esptool : esptool 5 (Espressif's image tool, on PyPI) in a Python
# venv at target/tools-venv: the reference the ESP image parser is tested
# against. Installs python3 and its venv module if missing. Exports
# OTA_ESPTOOL, where crates/ota-core/tests/esptool.rs looks first.
ensure_esptool() {
  local venv=target/tools-venv
  if [ ! -x "$venv/bin/esptool" ]; then
    local need=()
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then
      apt_install "${need[@]}"
    fi
    echo "installing esptool into $venv"
    # --clear: a venv left without esptool by an interrupted run starts over.
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'esptool>=5,<6'
  fi
  export OTA_ESPTOOL="$PWD/$venv/bin/esptool"
}

# ensure_c_client_deps : what the ESP-IDF client's host port builds with:
# gcc (with ASan/UBSan), make, pkg-config, libcurl and cJSON headers.
ensure_c_client_deps() {
  local need=()
  command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  command -v make >/dev/null 2>&1 || need+=(make)
  command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
  pkg-config --exists libcurl 2>/dev/null || need+=(libcurl4-openssl-dev)
  pkg-config --exists libcjson 2>/dev/null || need+=(libcjson-dev)
  if [ ${#need[@]} -gt 0 ]; then
    apt_install "${need[@]}"
  fi
}
