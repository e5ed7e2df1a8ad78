"""Live sessions: candle in → prediction committed, sustainable pace, four sessions at once.

    python bench/live.py [--candles 500] [--four-seconds 30]

Runs sessions inside this process with the engine's own classes (SessionManager, ModelPool),
replaying the packaged S&P 500 daily candles, on a fresh SQLite database:
  1. one session in `none`, as fast as it goes: latency p50 / p99 and candles/s
  2. one session in `every_candle`, as fast as it goes: the same
  3. four sessions at once (none, pivots_only, every_candle, manual) on one model at one
     candle a second: how many candles each handled and the worst lag behind the schedule
Latency = from the moment the feed hands over a completed candle to the commit of its
prediction row (`predictions.latency_ms`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candles", type=int, default=500)
    ap.add_argument("--four-seconds", type=float, default=30)
    args = ap.parse_args()
    os.environ["CANDLELAB_HOME"] = tempfile.mkdtemp(prefix="candlelab-bench-")
    import db
    from db import candles, training
    from db import sessions as rows
    from engine import checkpoints, priority
    from engine.pool import ModelPool
    from engine.service import EngineContext, Settings
    from engine.sessions import SessionManager
    from market.importer import seed_samples

    priority.configure_process()
    database = db.init()
    seed_samples(database)
    ctx = EngineContext(database, "bench", Settings())
    ctx.models = ModelPool(database)
    ctx.sessions = SessionManager(ctx)
    cid = checkpoints.ensure_default(database)
    ts = candles.load(database, "SP500", "1d").ts.to_numpy()

    def launch(mode: str, n: int, pace: float):
        sid = rows.create(
            database, symbol="SP500", timeframe="1d", checkpoint_id=cid, mode=mode,
            feed={"kind": "replay", "pace_s": pace, "start_ts": int(ts[-n])},
            settings={"fee_bps": 10, "long_only": False, "pivot_left": 5, "pivot_right": 5},
            created_by="bench", engine_id="bench",
        )  # fmt: skip
        return sid, ctx.sessions.launch(rows.get(database, sid))

    for mode in ("none", "every_candle"):
        t0 = time.perf_counter()
        sid, session = launch(mode, args.candles, 0.0)
        session.thread.join()
        wall = time.perf_counter() - t0
        lat = rows.predictions(database, sid).latency_ms.to_numpy()
        steps = training.count(database, session_id=sid, skipped=False)
        print(
            f"{mode:<13} {len(lat)} candles: candle -> committed prediction p50 "
            f"{np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms; "
            f"{len(lat) / wall:.0f} candles/s as fast as it goes ({steps} training steps), "
            f"so it keeps up with a pace down to {wall / len(lat) * 1000:.0f} ms per candle"
        )

    n = int(args.four_seconds) + 5
    started = time.monotonic()
    four = [launch(m, n, 1.0) for m in ("none", "pivots_only", "every_candle", "manual")]
    time.sleep(args.four_seconds)
    elapsed = time.monotonic() - started
    for _, s in four:
        s.stop()
    for _, s in four:
        s.thread.join()
    print(f"four sessions at 1 candle/s for {elapsed:.0f} s on one model:")
    for (sid, _s), mode in zip(
        four, ("none", "pivots_only", "every_candle", "manual"), strict=True
    ):
        p = rows.predictions(database, sid)
        made = p.created_at.map(lambda t: t.timestamp()).to_numpy()
        lag = made - (made[0] + np.arange(len(made)))  # behind a one-per-second schedule
        lat = p.latency_ms.to_numpy()
        print(
            f"  {mode:<13} {len(p)} candles (schedule allowed {int(elapsed) + 1}), worst lag "
            f"behind schedule {lag.max() * 1000:.0f} ms, latency p99 {np.percentile(lat, 99):.1f} ms, "
            f"training steps {training.count(database, session_id=sid, skipped=False)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
