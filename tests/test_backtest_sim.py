"""The vectorised backtest equals the live sessions' account, and backtesting.py, trade for trade."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from db import candles
from engine.account import Account
from engine.backtest import ACTION_CODES, simulate
from engine.backtest_stats import stats
from market.importer import seed_samples

NAMES = {v: k for k, v in ACTION_CODES.items()}


@pytest.fixture(scope="module")
def sp500(tmp_path_factory):
    import os

    import db
    from db import connection

    old = os.environ.get("CANDLELAB_HOME")
    os.environ["CANDLELAB_HOME"] = str(tmp_path_factory.mktemp("bt"))
    database = db.init()
    seed_samples(database)
    df = candles.load(database, "SP500", "1d")
    connection.dispose_all()
    os.environ.pop("CANDLELAB_HOME") if old is None else os.environ.update(CANDLELAB_HOME=old)
    return df


def signal_sets(n: int):
    rng = np.random.default_rng(7)
    dense = rng.integers(0, 3, n)
    sparse = np.full(n, 2)
    sparse[rng.choice(n, n // 50, replace=False)] = rng.integers(0, 2, n // 50)
    flips = np.tile([0, 1], n // 2 + 1)[:n]  # a flip every candle
    sets = {"dense": dense, "sparse": sparse, "flips": flips}
    for a in sets.values():
        a[0] = 2  # backtesting.py never calls next() on the first candle
    return sets


def account_loop(df, actions, fee_bps, long_only, slippage_bps=0.0):
    """The live sessions' way: one candle at a time through an Account, the end-of-run close
    after the last candle. Returns its closed trades, and its position during each candle and
    equity at each close."""
    acc = Account(fee_bps=fee_bps, long_only=long_only, slippage_bps=slippage_bps, cash=10_000.0)
    trades, position, equity = [], [], []
    for row, action in zip(df.itertuples(), actions, strict=True):
        trades += acc.open_bar(row.ts, row.open)
        acc.mark(row.close)
        acc.signal(NAMES[int(action)])
        position.append(acc.position)
        equity.append(acc.equity)
    trades += acc.close_out(int(df.ts.iloc[-1]), float(df.close.iloc[-1]))
    equity[-1] = acc.equity
    return trades, np.array(position), np.array(equity)


def assert_same_run(sim, df, trades, position, equity):
    """The vectorised run and the candle-by-candle one agree to the last bit."""
    ts = df.ts.to_numpy()
    got = sim.trades
    assert len(got) == len(trades)
    want = pd.DataFrame(trades, columns=["side", "entry_ts", "entry_price", "exit_ts",
                                         "exit_price", "pnl", "return_pct", "fees"])  # fmt: skip
    assert got.side.astype(str).tolist() == want.side.tolist()
    np.testing.assert_array_equal(ts[got.entry_index], want.entry_ts.to_numpy(dtype=np.int64))
    np.testing.assert_array_equal(ts[got.exit_index], want.exit_ts.to_numpy(dtype=np.int64))
    for column in ("entry_price", "exit_price", "pnl", "return_pct", "fees"):
        np.testing.assert_array_equal(got[column].to_numpy(), want[column].to_numpy(), column)
    np.testing.assert_array_equal(sim.position, position)
    np.testing.assert_array_equal(sim.equity, equity)


@pytest.mark.parametrize("long_only", [False, True])
@pytest.mark.parametrize("costs", [(0.0, 0.0), (10.0, 0.0), (10.0, 5.0), (0.0, 25.0)])
@pytest.mark.parametrize("kind", ["dense", "sparse", "flips"])
def test_vectorised_simulation_equals_the_live_account(sp500, kind, costs, long_only):
    fee_bps, slippage_bps = costs
    df = sp500.iloc[:1500]
    actions = signal_sets(len(df))[kind]
    actions[-6:] = [ACTION_CODES[a] for a in ("SELL", "BUY", "HOLD", "HOLD", "HOLD", "HOLD")]
    sim = simulate(df.ts, df.open, df.close, actions, fee_bps=fee_bps, long_only=long_only,
                   slippage_bps=slippage_bps)  # fmt: skip
    assert sim.trades.open_at_end.iloc[-1]  # a long still open after the last candle
    assert_same_run(sim, df, *account_loop(df, actions, fee_bps, long_only, slippage_bps))


@settings(max_examples=50, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 120),
    fee_bps=st.floats(0, 100),
    slippage_bps=st.floats(0, 100),
    long_only=st.booleans(),
)
def test_any_candles_signals_and_costs_give_the_same_run_live_and_vectorised(
    data, n, fee_bps, slippage_bps, long_only
):
    # Prices within a factor 1.7 of each other: a short can lose at most what it holds.
    price = st.floats(60, 100)
    df = pd.DataFrame({
        "ts": 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 3_600_000,
        "open": data.draw(st.lists(price, min_size=n, max_size=n)),
        "close": data.draw(st.lists(price, min_size=n, max_size=n)),
    })  # fmt: skip
    actions = np.array(data.draw(st.lists(st.sampled_from([0, 1, 2]), min_size=n, max_size=n)))
    sim = simulate(df.ts, df.open, df.close, actions, fee_bps=fee_bps, long_only=long_only,
                   slippage_bps=slippage_bps)  # fmt: skip
    assert_same_run(sim, df, *account_loop(df, actions, fee_bps, long_only, slippage_bps))


def test_slippage_moves_every_fill_against_the_trade():
    df = pd.DataFrame({"ts": np.arange(5) * 60_000, "open": [100.0, 100, 110, 120, 130],
                       "close": [100.0, 105, 115, 125, 140]})  # fmt: skip
    buy, sell, hold = ACTION_CODES["BUY"], ACTION_CODES["SELL"], ACTION_CODES["HOLD"]
    sim = simulate(df.ts, df.open, df.close, [buy, hold, sell, hold, hold], slippage_bps=50)
    long, short = sim.trades.itertuples()
    assert (long.side, long.entry_price, long.exit_price) == ("long", 100 * 1.005, 120 * 0.995)
    # the short is still open after the last candle: bought back at the last close, higher
    assert (short.side, short.entry_price, short.exit_price) == ("short", 120 * 0.995, 140 * 1.005)
    assert short.open_at_end and sim.equity[-1] == pytest.approx(
        10_000 * long.exit_price / long.entry_price * (2 - short.exit_price / short.entry_price)
    )


def backtesting_py(df: pd.DataFrame, actions: np.ndarray, fee_bps: float, long_only: bool):
    """backtesting.py 0.6's stats for the same candles and signals, all-in sizing."""
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest

    data = pd.DataFrame(
        {"Open": df.open.to_numpy(), "High": df.high.to_numpy(), "Low": df.low.to_numpy(),
         "Close": df.close.to_numpy(), "Volume": df.volume.to_numpy()},
        index=pd.DatetimeIndex(pd.to_datetime(df.ts.to_numpy(), unit="ms")),
    )  # fmt: skip

    class Signals(Strategy):
        def init(self):
            pass

        def next(self):
            a = actions[len(self.data) - 1]
            if a == ACTION_CODES["BUY"] and not self.position.is_long:
                self.buy(size=0.999999999)
            elif a == ACTION_CODES["SELL"]:
                if long_only:
                    if self.position.is_long:
                        self.position.close()
                elif not self.position.is_short:
                    self.sell(size=0.999999999)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = FractionalBacktest(data, Signals, cash=10_000, commission=fee_bps / 10_000,
                                exclusive_orders=True, finalize_trades=True, fractional_unit=1e-9)  # fmt: skip
        return bt.run()


@pytest.mark.parametrize("long_only", [False, True])
@pytest.mark.parametrize("fee_bps", [0.0, 10.0])
@pytest.mark.parametrize("kind", ["dense", "sparse", "flips"])
def test_matches_backtesting_py_trade_for_trade(sp500, kind, fee_bps, long_only):
    df = sp500.iloc[:1200].reset_index(drop=True)
    actions = signal_sets(len(df))[kind]
    ref = backtesting_py(df, actions, fee_bps, long_only)
    sim = simulate(df.ts, df.open, df.close, actions, fee_bps=fee_bps, long_only=long_only)
    theirs = ref._trades
    assert len(sim.trades) == len(theirs)
    np.testing.assert_array_equal(sim.trades.entry_index, theirs.EntryBar)
    np.testing.assert_allclose(sim.trades.entry_price, theirs.EntryPrice, rtol=1e-12)
    # A trade still open at the end: we close it at the last close (the rule);
    # backtesting.py's finalize_trades fills it at the last bar's open. Everything before
    # the last candle must agree exactly.
    done = ~sim.trades.open_at_end.to_numpy()
    np.testing.assert_array_equal(sim.trades.exit_index[done], theirs.ExitBar[done])
    np.testing.assert_allclose(sim.trades.exit_price[done], theirs.ExitPrice[done], rtol=1e-12)
    curve = ref._equity_curve["Equity"].to_numpy()
    np.testing.assert_allclose(sim.equity[:-1], curve[:-1], rtol=1e-6)
    if not sim.trades.open_at_end.any():
        assert sim.equity[-1] == pytest.approx(ref["Equity Final [$]"], rel=1e-6)
    mine = stats(sim, df.close.to_numpy(), df.ts.to_numpy())
    assert mine["# Trades"] == ref["# Trades"]
    assert mine["Buy & Hold Return [%]"] == pytest.approx(ref["Buy & Hold Return [%]"], rel=1e-9)


def as_calendar(df: pd.DataFrame, step: str) -> pd.DataFrame:
    """The same prices on another clock: hourly around the week (crypto) or weekly."""
    start = pd.Timestamp("2020-01-06", tz="UTC")
    times = pd.date_range(start, periods=len(df), freq=step)
    return df.assign(ts=times.as_unit("ms").asi8)


@pytest.mark.parametrize("clock", ["daily stocks", "hourly 24/7", "weekly"])
@pytest.mark.parametrize("fee_bps", [0.0, 10.0])
@pytest.mark.parametrize("kind", ["dense", "sparse", "flips"])
def test_every_metric_backtesting_py_has_equals_its_value(sp500, kind, fee_bps, clock):
    df = sp500.iloc[:1200].reset_index(drop=True)
    if clock != "daily stocks":
        df = as_calendar(df, {"hourly 24/7": "h", "weekly": "W-MON"}[clock])
    actions = signal_sets(len(df))[kind]
    actions[-3:] = ACTION_CODES["SELL"]  # long only and flat at the end: no finalize difference
    ref = backtesting_py(df, actions, fee_bps, long_only=True)
    sim = simulate(df.ts, df.open, df.close, actions, fee_bps=fee_bps, long_only=True)
    mine = stats(sim, df.close.to_numpy(), df.ts.to_numpy())
    shared = [k for k in mine if k in ref.index and k not in ("Start", "End")]
    assert len(shared) >= 21, shared  # Commissions too when there are fees
    for key in shared:
        want = ref[key]
        want = None if want is None or not np.isfinite(float(want)) else float(want)
        if want is None or mine[key] is None:
            assert mine[key] == want, key
        else:
            assert mine[key] == pytest.approx(want, rel=1e-6, abs=1e-9), key


def test_headless_backtest_with_a_signals_file_writes_the_report(database, home, tmp_path):
    import json

    from tests.conftest import run_cli

    seed_samples(database)
    signals = tmp_path / "signals.csv"
    signals.write_text("timestamp,action\n2015-01-02,BUY\n2016-01-04,SELL\n2017-01-03,BUY\n")
    out = tmp_path / "report.json"
    done = run_cli(home, "backtest", "--symbol", "SP500", "--timeframe", "1d", "--start", "2015-01-01",
                   "--signals", str(signals), "--long-only", "--fee-bps", "10", "--json", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["metrics"]["# Trades"] == 2
    from db import backtests

    (kept,) = backtests.all_(database)  # the team sees it on the Report page too
    assert kept.signals_name == "signals.csv" and kept.status == "done"
    kept_trades = backtests.trades(database, kept.id).to_dict("records")
    assert kept.metrics == report["metrics"] and kept_trades == report["trades"]
    assert f"kept as report #{kept.id}" in done.stdout
    first, last = report["trades"]
    assert (first["entry_time"][:10], first["exit_time"][:10]) == ("2015-01-05", "2016-01-05")
    # (exit / entry − 1) in percent, net of both fills' fees (10 bps each, on the notional)
    ratio = first["exit_price"] / first["entry_price"]
    assert first["return_pct"] == pytest.approx((ratio * (1 - 1e-3) - (1 + 1e-3)) * 100)
    assert last["open_at_end"] and last["exit_time"][:10] == "2018-12-31"
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,action\n2015-01-02,FLY\n")
    refused = run_cli(
        home, "backtest", "--symbol", "SP500", "--timeframe", "1d", "--signals", str(bad)
    )
    assert refused.returncode == 2 and "row 2" in refused.stderr and "FLY" in refused.stderr
    backwards = run_cli(home, "backtest", "--symbol", "SP500", "--timeframe", "1d", "--start", "2016",
                        "--end", "2015", "--signals", str(signals))  # fmt: skip
    assert backwards.returncode == 2 and "before start" in backwards.stderr
    # The same strategy written by another tool: New York dates, other column names, one row
    # past the range; the same trades, and a note about the row it could not use.
    zoned = tmp_path / "zoned.csv"
    zoned.write_text("Date,Signal\n2015-01-02 00:00-05:00,buy\n2016-01-04 00:00-05:00,sell\n"
                     "2017-01-03 00:00-05:00,buy\n2030-01-02,SELL\n")  # fmt: skip
    out2 = tmp_path / "zoned.json"
    again = run_cli(home, "backtest", "--symbol", "SP500", "--timeframe", "1d", "--start", "2015-01-01",
                    "--signals", str(zoned), "--long-only", "--json", str(out2), "--no-save")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(out2.read_text())["trades"] == report["trades"]
    assert "1 outside the range (0 before, 1 after)" in again.stderr
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("timestamp,action\n2030-01-02,BUY\n2030-02-03,SELL\n")
    refused = run_cli(
        home, "backtest", "--symbol", "SP500", "--timeframe", "1d", "--signals", str(elsewhere)
    )
    assert refused.returncode == 2 and "none of the 2 BUY / SELL signals" in refused.stderr
