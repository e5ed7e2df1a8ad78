#!/usr/bin/env bash
# Install everything the tests need and run them: lint, then the whole pytest suite
# (unit, real engine processes, real Chromium against the real app).
# Extra arguments go to pytest (e.g. -k csv, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is not installed (sudo apt-get install chromium): browser tests will be skipped" >&2
  fi
fi
# PostgreSQL for the tests that run the bus on it too (same code, DATABASE_URL).
if [ -z "${CANDLELAB_TEST_PG_URL:-}" ] && [ "$(id -u)" = 0 ]; then
  if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
  pg_ctlcluster $cluster start 2>/dev/null || true
  su postgres -c "psql -qtc \"SELECT 1 FROM pg_roles WHERE rolname='candlelab'\" | grep -q 1 || psql -qc \"CREATE ROLE candlelab LOGIN SUPERUSER PASSWORD 'candlelab'\""
  su postgres -c "psql -qtc \"SELECT 1 FROM pg_database WHERE datname='candlelab_test'\" | grep -q 1 || createdb -O candlelab candlelab_test"
  port=$(pg_lsclusters -h | awk 'NR==1 {print $3}')
  export CANDLELAB_TEST_PG_URL="postgresql://candlelab:candlelab@127.0.0.1:${port}/candlelab_test"
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -p no:cacheprovider -q -ra "$@"
