#!/usr/bin/env bash
# Install Candle Lab's runtime into .venv and start it: engine + Streamlit, on the embedded
# default (SQLite in $CANDLELAB_HOME, default ~/.candlelab, seeded with real market data on
# first run). Extra arguments go to scripts/start.py (e.g. --port 8502, --address 0.0.0.0).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
exec .venv/bin/python scripts/start.py "$@"
