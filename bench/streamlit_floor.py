"""What Streamlit itself costs per tab: a minimal app shaped like the Live panel, its CPU with
10 Chromium tabs, for a few shapes of page.

    python bench/streamlit_floor.py [--tabs 10] [--seconds 25] [--rounds 2]
                                    [--variants empty,chart,strip,metrics] [--chromium-nice 19]

Each variant is one page whose fragment reruns every second (`st.fragment(run_every=1)`, as
the Live panel does), served by a plain `streamlit run` with this repository's settings that
matter here (no file watcher, no garbage collection after each run):
  - empty: the fragment draws nothing (Streamlit's floor for a rerun);
  - chart: a caption, a toggle, a 120-candle Vega-Lite chart and a caption;
  - strip: chart + twelve figures as one `st.html` element (pages/stats.py);
  - metrics: chart + twelve `st.metric`s in two sets of six columns (the Live panel before).
For each round and variant it opens the tabs (one Chromium context), waits for them to settle,
and reads the Streamlit process's CPU time (/proc) over `--seconds`. The tabs' Chromium runs
niced, as in bench/dashboard.py. It prints each variant's % of one core per round, their
medians, and each variant's cost over `empty`. Nothing here reads the database: it is
Streamlit's own work per element, which no read sharing can save.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

APP = """
import time
import numpy as np
import pandas as pd
import streamlit as st
from pages.stats import Stat, stat_strip

VARIANT = st.query_params.get("v", "empty")
N = 120
ts = np.arange(N) * 3_600_000 + 1_600_000_000_000
rng = np.random.default_rng(0)
candles = pd.DataFrame({"time": pd.to_datetime(ts, unit="ms", utc=True),
                        "low": rng.random(N), "high": rng.random(N) + 1})
SPEC = {"mark": "bar", "data": {"name": "candles"},
        "encoding": {"x": {"field": "time", "type": "temporal"},
                     "y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"}}}


@st.fragment(run_every=1)
def panel():
    now = f"{time.time():.2f}"
    if VARIANT == "metrics":
        for _ in range(2):
            columns = st.columns(6)
            for i in range(6):
                columns[i].metric(f"Figure {i}", now)
    elif VARIANT == "strip":
        stat_strip([Stat(f"Figure {i}", now) for i in range(12)])
    if VARIANT != "empty":
        st.caption("what is shown")
        st.toggle("Follow the latest candle", key="follow")
        st.vega_lite_chart({**SPEC, "datasets": {"candles": candles}}, width="stretch")
        st.caption("legend")


panel()
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tabs", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=25.0, help="measured time per variant")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="empty,chart,strip,metrics")
    ap.add_argument(
        "--chromium-nice",
        type=int,
        default=19,
        help="the tabs' Chromium's niceness, as in bench/dashboard.py",
    )
    args = ap.parse_args()
    variants = args.variants.split(",")

    from playwright.sync_api import sync_playwright

    from bench.dashboard import cpu_s, niced  # the Streamlit process's CPU seconds (/proc)
    from tests.browser import ARGS, CHROMIUM, free_port

    home = Path(tempfile.mkdtemp(prefix="candlelab-floor-"))
    app = home / "app.py"
    app.write_text(APP)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless=true",
         f"--server.port={port}", "--browser.gatherUsageStats=false",
         "--server.fileWatcherType=none", "--runner.postScriptGC=false"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    shares: dict[str, list[float]] = {v: [] for v in variants}
    try:
        time.sleep(5)
        with sync_playwright() as p:
            chromium = niced(CHROMIUM, args.chromium_nice, home)  # as bench/dashboard.py
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            for r in range(args.rounds):
                for variant in variants:
                    context = browser.new_context()
                    for _ in range(args.tabs):
                        context.new_page().goto(f"http://127.0.0.1:{port}/?v={variant}")
                    time.sleep(6)  # the first full runs are done
                    c0, t0 = cpu_s(server.pid), time.monotonic()
                    time.sleep(args.seconds)
                    share = 100 * (cpu_s(server.pid) - c0) / (time.monotonic() - t0)
                    shares[variant].append(share)
                    print(f"round {r + 1}: {variant:8s} {share:5.1f} % of a core", flush=True)
                    context.close()
                    time.sleep(2)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    floor = statistics.median(shares["empty"]) if "empty" in shares else 0.0
    print(f"\n{args.tabs} tabs, a fragment run a second each (% of one core, median of rounds):")
    for variant, values in shares.items():
        med = statistics.median(values)
        print(f"  {variant:8s} {med:5.1f} %  (rounds {', '.join(f'{v:.1f}' for v in values)})"
              + (f"  +{med - floor:.1f} over empty" if variant != "empty" else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
