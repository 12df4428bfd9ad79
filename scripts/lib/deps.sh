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
