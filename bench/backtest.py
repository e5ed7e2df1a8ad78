"""Backtest speed, as ratios measured in one run.

    python bench/backtest.py [--candles 100000] [--sim-candles 1000000]

1. End to end on 100,000 candles (model pass + simulation + stats) vs the naive way a live
   session would do it, one candle at a time (predict_last + the account), timed on a 2,000
   candle sample: candles/s each, and the ratio.
2. The simulation alone on 1,000,000 candles with dense random signals (a third each of BUY,
   SELL, HOLD) and sparse (2 % BUY, 2 % SELL) random signals, no fees, vs backtesting.py 0.6
   (FractionalBacktest, the same signals and
   rules): seconds each, the ratio, and whether the trades are identical.
Candles: the packaged S&P 500 and NASDAQ daily series, each detrended, chained (each piece
rescaled to continue the last close) and repeated to the length asked, on hourly timestamps.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def chained(database, n: int) -> pd.DataFrame:
    from db import candles

    cols = ["open", "high", "low", "close", "volume"]
    pieces = []
    for s in ("SP500", "NASDAQ"):
        p = candles.load(database, s, "1d")[cols].to_numpy().copy()
        # Detrend each piece (scale candle i by (first / last)^(i / n)) so that repeating it does
        # not compound the price level into numbers no broker could size an order for.
        drift = (p[0, 0] / p[-1, 3]) ** (np.arange(len(p)) / (len(p) - 1))
        p[:, :4] *= drift[:, None]
        pieces.append(p)
    out, last = [], None
    while sum(len(p) for p in out) < n:
        for p in pieces:
            q = p.copy()
            if last is not None:
                q[:, :4] *= last / q[0, 0]
            out.append(q)
            last = q[-1, 3]
    x = np.concatenate(out)[:n]
    ts = 1_500_000_000_000 + np.arange(n, dtype=np.int64) * 3_600_000
    return pd.DataFrame({"ts": ts, **{c: x[:, i] for i, c in enumerate(cols)}})


CASH = 10_000.0
CHECK = 100_000  # candles on which trades are compared one by one


def compare(big: pd.DataFrame, actions: np.ndarray) -> tuple:
    """Our simulation vs backtesting.py on the same candles and signals, no fees (so random
    trading does not take equity below what a broker can size an order for)."""
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest

    from engine import backtest

    t0 = time.perf_counter()
    sim = backtest.simulate(big.ts, big.open, big.close, actions, fee_bps=0, cash=CASH)
    ours = time.perf_counter() - t0
    data = pd.DataFrame(
        {
            "Open": big.open,
            "High": big.high,
            "Low": big.low,
            "Close": big.close,
            "Volume": big.volume,
        }
    ).set_index(pd.to_datetime(big.ts, unit="ms"))

    class Signals(Strategy):
        def init(self):
            pass

        def next(self):
            a = actions[len(self.data) - 1]
            if a == 0 and not self.position.is_long:
                self.buy(size=0.999999999)
            elif a == 1 and not self.position.is_short:
                self.sell(size=0.999999999)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = FractionalBacktest(data, Signals, cash=CASH, commission=0.0, exclusive_orders=True,
                                finalize_trades=True, fractional_unit=1e-9)  # fmt: skip
        t0 = time.perf_counter()
        ref = bt.run()
        theirs = time.perf_counter() - t0
    t = ref._trades
    same = (
        len(t) == len(sim.trades)
        and np.array_equal(t.EntryBar.to_numpy(), sim.trades.entry_index.to_numpy())
        # every exit but the last: a trade still open at the end closes at the last close here,
        # at the last open in backtesting.py's finalize_trades
        and np.allclose(
            t.ExitPrice.to_numpy()[:-1], sim.trades.exit_price.to_numpy()[:-1], rtol=1e-12
        )
    )
    before_end = abs(sim.equity[-2] / ref._equity_curve["Equity"].to_numpy()[-2] - 1)
    return ours, theirs, same, before_end, len(sim.trades)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candles", type=int, default=100_000)
    ap.add_argument("--sim-candles", type=int, default=1_000_000)
    args = ap.parse_args()
    os.environ["CANDLELAB_HOME"] = tempfile.mkdtemp(prefix="candlelab-bench-")
    import db
    from contract.access import SYSTEM_ACCOUNT
    from db import candles
    from engine import backtest_run, checkpoints
    from engine.account import Account
    from engine.inference import predict_last
    from engine.model import CandleTransformer
    from market.importer import seed_samples

    database = db.init()
    seed_samples(database)
    frame = chained(database, args.candles)
    candles.store(database, frame, symbol="BENCH", timeframe="1h", source="bench", sha256="-",
                  format="bench", rows_in_file=len(frame), rows_skipped=0,
                  created_by=SYSTEM_ACCOUNT)  # fmt: skip
    cfg, state, _ = checkpoints.load(database, checkpoints.ensure_default(database))
    model = CandleTransformer(cfg).eval()
    model.load_state_dict(state)

    t0 = time.perf_counter()
    report = backtest_run.run(database, symbol="BENCH", timeframe="1h", model=model, fee_bps=10)
    batched = time.perf_counter() - t0
    ohlcv = frame[["open", "high", "low", "close", "volume"]].to_numpy()
    sample = 2_000
    acc = Account(fee_bps=10)
    t0 = time.perf_counter()
    for i in range(1_000, 1_000 + sample):
        acc.open_bar(int(frame.ts[i]), ohlcv[i, 0])
        acc.mark(ohlcv[i, 3])
        acc.signal(predict_last(model, ohlcv[: i + 1]).action)
    naive = (time.perf_counter() - t0) / sample
    rate_b, rate_n = len(frame) / batched, 1 / naive
    print(
        f"end to end, {len(frame):,} candles: batched {rate_b:,.0f} candles/s ({batched:.2f} s, "
        f"{report['metrics']['# Trades']} trades); per-candle loop {rate_n:,.0f} candles/s -> "
        f"{rate_b / rate_n:.0f}x"
    )

    big = chained(database, args.sim_candles)
    rng = np.random.default_rng(0)
    dense = rng.integers(0, 3, len(big))
    sparse = np.full(len(big), 2)
    pick = rng.random(len(big))
    sparse[pick < 0.02] = 0
    sparse[(pick >= 0.02) & (pick < 0.04)] = 1
    for name, actions in (("dense", dense), ("sparse", sparse)):
        actions[0] = 2  # backtesting.py never calls next() on the first candle
        ours, theirs, _, _, n = compare(big, actions)
        # Over a million random candles equity decays (volatility drag) until backtesting.py's
        # whole 1e-9 units stop matching exact fractions; trades are compared where it holds.
        _, _, same, diff, m = compare(big.iloc[:CHECK].reset_index(drop=True), actions[:CHECK])
        print(
            f"simulation, {len(big):,} candles, {name} signals ({n:,} trades): ours {ours:.3f} s, "
            f"backtesting.py {theirs:.1f} s -> {theirs / ours:.0f}x; on the first {CHECK:,} "
            f"candles ({m:,} trades) identical trades: {same}, equity before the last candle "
            f"within {diff:.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
