"""The Live page's reads and drawing per refresh, on a session with 60,000 predictions.

    python bench/live_page.py [--predictions 60000] [--repeats 7] [--refreshes 30]

Builds, on a fresh SQLite database under a temporary CANDLELAB_HOME, one `every_candle` session
with N candles, N predictions (ghost candles included), a pivot every 10 candles, a trade every
25, one training event per candle (every 50th a manual label), then times what the panel of
pages/live.py reads and draws each second, with the functions it calls:

  - before: the reads the page made until now (every prediction, pivot and trade of the
    session, the training-step count, the last 120 candles)
  - first load: `sessions.keep_up` from nothing (what a browser opening the page reads once),
    the chart's drawing (`pages.live_chart.draw`, following: the last 120 candles read, the
    datasets built), the annotations under it, the model line
  - refresh: one new candle stored (as the engine stores it: `sessions.record_candle`, plus its
    training event), then the same with `keep_up` from what was kept and the drawing from the
    candles drawn last: only the new rows and the new candle read

Prints medians and the ratio first load / refresh. Target: a refresh ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEP = 60_000  # 1m candles
T0 = 1_600_000_000_000


def build(database, n: int, extra: int) -> tuple[int, pd.DataFrame]:
    """A session that has seen `n` candles, and `extra` stored candles it has not seen yet."""
    from sqlalchemy import insert

    from contract.access import SYSTEM_ACCOUNT
    from db import candles, checkpoints
    from db import sessions as session_rows
    from db import working_models as working_rows
    from db.models import PivotRow, PredictionRow, TradeRow, TrainingEvent, utcnow

    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n + extra)))
    ts = T0 + STEP * np.arange(n + extra)
    frame = pd.DataFrame({"ts": ts, "open": close * 0.999, "high": close * 1.002,
                          "low": close * 0.997, "close": close, "volume": 1.0})  # fmt: skip
    candles.store(database, frame, symbol="BENCH", timeframe="1m", source="bench", sha256="b",
                  format="generic", rows_in_file=n + extra, rows_skipped=0,
                  created_by=SYSTEM_ACCOUNT)  # fmt: skip
    ckpt = checkpoints.insert(database, name="bench", feature_version=1, config={}, file="x.pt")
    wm = working_rows.create(database, name="bench", base_checkpoint_id=ckpt, created_by="bench",
                             engine_id=None)  # fmt: skip
    sid = session_rows.create(database, symbol="BENCH", timeframe="1m", checkpoint_id=ckpt,
                              working_model_id=wm, mode="every_candle", feed={"kind": "replay"},
                              settings={}, created_by="bench")  # fmt: skip
    ghost = {"ohlc": [[1.0, 1.1, 0.9, 1.05]] * 5}
    actions = np.array(["BUY", "SELL", "HOLD"])[rng.integers(0, 3, n)]
    now = utcnow()
    preds = [
        {"session_id": sid, "ts": int(ts[i]), "action": str(actions[i]), "p_buy": 0.4,
         "p_sell": 0.3, "p_hold": 0.3, "confidence": 0.4, "ghost": ghost, "model_step": i,
         "latency_ms": 5.0, "created_at": now}
        for i in range(n)
    ]  # fmt: skip
    events = [
        {"model_key": "wm", "source": "manual" if i % 50 == 0 else "every_candle",
         "working_model_id": wm, "session_id": sid, "step": i + 1, "samples": 1,
         "candle_ts": int(ts[i]), "label": str(actions[i]), "skipped": i % 97 == 0,
         "created_at": now}
        for i in range(n)
    ]  # fmt: skip
    pivots = [{"session_id": sid, "ts": int(ts[i]), "kind": "HL"[i % 2], "price": float(close[i]),
               "confirmed_ts": int(ts[min(i + 3, n - 1)])} for i in range(0, n, 10)]  # fmt: skip
    trades = [{"session_id": sid, "side": "long", "entry_ts": int(ts[i]),
               "entry_price": float(close[i]), "exit_ts": int(ts[i + 10]),
               "exit_price": float(close[i + 10]), "pnl": 1.0, "return_pct": 0.1, "fees": 0.1}
              for i in range(0, n - 10, 25)]  # fmt: skip
    with database.begin() as conn:
        for table, rows in ((PredictionRow, preds), (TrainingEvent, events), (PivotRow, pivots),
                            (TradeRow, trades)):  # fmt: skip
            for k in range(0, len(rows), 5000):
                conn.execute(insert(table.__table__), rows[k : k + 5000])
    session_rows.update_row(database, sid, last_ts=int(ts[n - 1]), candles=n,
                            state={"position": 1, "equity": 1000.0, "unrealized": 1.0})  # fmt: skip
    return sid, frame


def page_reads(database, sid: int, kept):
    """What pages/live.py's panel reads per refresh, in its order (following the latest candle;
    no Train on Current Candle request pending)."""
    from db import annotations as annotation_rows
    from db import checkpoints as checkpoint_rows
    from db import sessions as session_rows
    from db import working_models as working_rows
    from pages.live_chart import draw

    kept = session_rows.keep_up(database, sid, kept)
    sess = kept.session
    drawn = draw(database, sess, kept, None)  # following the latest candle
    annotation_rows.overlapping(database, sess.symbol, sess.timeframe, *drawn.span)
    checkpoint_rows.get(database, sess.checkpoint_id)  # the model line (its step: kept)
    working_rows.get(database, sess.working_model_id)
    return kept


def old_reads(database, sid: int) -> None:
    from db import candles, training
    from db import sessions as session_rows

    sess = session_rows.get(database, sid)
    session_rows.predictions(database, sid)
    session_rows.pivots(database, sid)
    session_rows.trades(database, sid)
    training.count(database, session_id=sid, skipped=False)
    candles.load(database, sess.symbol, sess.timeframe, end_ms=sess.last_ts, last=120)


def new_candle(database, sid: int, frame: pd.DataFrame, i: int) -> None:
    """Candle i stored as a session stores it (the candle row already exists: a replay)."""
    from db import sessions as session_rows
    from db import training

    ts = int(frame.ts.iloc[i])
    session_rows.record_candle(
        database, sid, received=time.monotonic(), last_ts=ts,
        state={"position": 1, "equity": 1000.0, "unrealized": 1.0}, trades=[], pivots=[],
        prediction={"ts": ts, "action": "BUY", "p_buy": 0.5, "p_sell": 0.2, "p_hold": 0.3,
                    "confidence": 0.5, "ghost": {"ohlc": [[1.0, 1.1, 0.9, 1.05]] * 5},
                    "model_step": i},
    )  # fmt: skip
    training.record(database, model_key="wm", source="every_candle", session_id=sid, step=i + 1,
                    candle_ts=ts, label="BUY")  # fmt: skip


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictions", type=int, default=60_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--refreshes", type=int, default=30)
    args = ap.parse_args()
    os.environ["CANDLELAB_HOME"] = tempfile.mkdtemp(prefix="candlelab-bench-")
    os.environ.pop("DATABASE_URL", None)
    import db

    database = db.init()
    t = time.perf_counter()
    sid, frame = build(database, args.predictions, args.refreshes)
    n = args.predictions
    print(f"built session #{sid}: {n:,} candles, predictions and training events "
          f"in {time.perf_counter() - t:.1f} s ({os.environ['CANDLELAB_HOME']})")  # fmt: skip

    before = [timed(lambda: old_reads(database, sid))[0] for _ in range(args.repeats)]
    first = []
    kept = None
    for _ in range(args.repeats):
        ms, kept = timed(lambda: page_reads(database, sid, None))
        first.append(ms)
    refresh = []
    for k in range(args.refreshes):
        new_candle(database, sid, frame, n + k)
        ms, kept = timed(lambda kept=kept: page_reads(database, sid, kept))
        refresh.append(ms)
    idle = [timed(lambda: page_reads(database, sid, kept))[0] for _ in range(args.repeats)]
    assert len(kept.predictions["ts"]) == n + len(refresh), len(kept.predictions["ts"])
    assert kept.seen.prediction_ts == int(frame.ts.iloc[n + len(refresh) - 1])

    med = statistics.median
    print(f"before (every row each refresh, median of {len(before)}): {med(before):8.1f} ms")
    print(f"first load (median of {len(first)}):                   {med(first):8.1f} ms")
    print(f"refresh, 1 new candle (median of {len(refresh)}):       {med(refresh):8.1f} ms"
          f"   (max {max(refresh):.1f} ms)")  # fmt: skip
    print(f"refresh, nothing new (median of {len(idle)}):         {med(idle):8.1f} ms")
    print(f"first load / refresh: {med(first) / med(refresh):.0f}×;"
          f" before / refresh: {med(before) / med(refresh):.0f}×")  # fmt: skip
    ok = med(refresh) <= 50
    print(f"target: refresh ≤ 50 ms: {'met' if ok else 'NOT met'}")
    db.connection.dispose_all()
    shutil.rmtree(os.environ["CANDLELAB_HOME"], ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
