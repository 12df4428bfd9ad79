# PostgreSQL for the tests: the machine's server on 127.0.0.1:5432 (trust
# auth, user postgres), started if it is down, and a database of this run's
# own. Sourced by scripts/test.sh.

OTA_PG_ADMIN_URL=${OTA_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}

# ensure_postgres : installs PostgreSQL if missing and starts the cluster if
# it does not answer.
ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting PostgreSQL"
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 60); do
      pg_isready -q -h 127.0.0.1 -p 5432 && break
      sleep 0.5
    done
    pg_isready -h 127.0.0.1 -p 5432
  fi
  # The tests connect as postgres over 127.0.0.1 without a password, as on
  # this project's machines. A fresh install asks for one (scram-sha-256):
  # on such a test machine, trust that one user from loopback, first in
  # pg_hba.conf, and reload.
  if ! psql -q "$OTA_PG_ADMIN_URL" -c 'SELECT 1' >/dev/null 2>&1; then
    local version hba
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    echo "letting postgres in from 127.0.0.1 without a password ($hba)"
    sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    sleep 1
    psql -q "$OTA_PG_ADMIN_URL" -c 'SELECT 1' >/dev/null
  fi
  # The outage test runs a private cluster with these binaries.
  OTA_PG_BINDIR=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  export OTA_PG_BINDIR
}

# create_run_database : a fresh database for this run; drop_run_database
# drops it (scripts/test.sh calls it on exit). Exports
# OTA_TEST_DATABASE_URL, which the API tests read.
create_run_database() {
  OTA_RUN_DATABASE="ota_test_$(date +%s)_$$"
  psql -q "$OTA_PG_ADMIN_URL" -c "CREATE DATABASE $OTA_RUN_DATABASE"
  export OTA_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$OTA_RUN_DATABASE"
}

drop_run_database() {
  if [ -n "${OTA_RUN_DATABASE:-}" ]; then
    psql -q "$OTA_PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $OTA_RUN_DATABASE WITH (FORCE)" || true
  fi
}
