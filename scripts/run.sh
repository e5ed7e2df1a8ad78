#!/usr/bin/env bash
# Install Candle Lab's runtime into .venv and start it: engine + Streamlit, on the embedded
# default (SQLite in $CANDLELAB_HOME, default ~/.candlelab, seeded with real market data on
# first run). Extra arguments go to scripts/start.py (e.g. --port 8502, --address 0.0.0.0).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# Install only when requirements.txt changed since the last install, and say what is going on:
# the first install takes a couple of minutes (torch).
stamp=.venv/.requirements.sha256
if ! sha256sum -c --status "$stamp" 2>/dev/null; then
  echo "Installing Candle Lab's requirements into .venv (first time: a couple of minutes)..."
  .venv/bin/pip install --disable-pip-version-check -r requirements.txt \
    | { grep -v '^Requirement already satisfied' || true; }  # pip's failure still stops us
  sha256sum requirements.txt > "$stamp"  # only after a complete install
  echo "Installed."
fi
exec .venv/bin/python scripts/start.py "$@"
