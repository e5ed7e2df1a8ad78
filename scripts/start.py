"""Start Candle Lab: the engine and the Streamlit app, stopped together on Ctrl-C / SIGTERM.

    python scripts/start.py [--port 8501] [--address 127.0.0.1] [--no-engine]

Uses the data directory and database from CANDLELAB_HOME / DATABASE_URL. The engine is not
restarted if it dies: the app then shows it offline, as it would in production.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=int(os.environ.get("CANDLELAB_PORT", "8501")))
    p.add_argument("--address", default=os.environ.get("CANDLELAB_ADDRESS", "127.0.0.1"))
    p.add_argument("--no-engine", action="store_true", help="run only the app (engine elsewhere)")
    args = p.parse_args()

    py = sys.executable
    subprocess.run([py, "-m", "engine", "migrate"], cwd=ROOT, check=True)
    url = f"http://{args.address}:{args.port}"
    # A fresh install: create the first admin and print a one-time sign-in link (once anyone
    # has signed in, this prints nothing).
    subprocess.run([py, "-m", "engine", "user", "first-admin"], cwd=ROOT, check=True,
                   env={"CANDLELAB_APP_URL": url, **os.environ})  # fmt: skip
    procs: list[subprocess.Popen] = []
    if not args.no_engine:
        procs.append(subprocess.Popen([py, "-m", "engine", "serve"], cwd=ROOT))
    procs.append(
        subprocess.Popen(
            [
                py, "scripts/streamlit_server.py",
                "--server.headless", "true",
                "--server.address", args.address,
                "--server.port", str(args.port),
                "--browser.gatherUsageStats", "false",
                "--server.fileWatcherType", "none",
            ],
            cwd=ROOT,
        )
    )  # fmt: skip
    print(f"Candle Lab: {url}  (Ctrl-C stops engine and app)", flush=True)

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    app = procs[-1]
    while not stopping and app.poll() is None:
        time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
