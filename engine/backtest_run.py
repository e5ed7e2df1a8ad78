"""One backtest from stored candles: a checkpoint's predictions or a signals file, through the
shared simulation (engine/backtest.py), to a report (metrics + trades).

The model path is honest by construction: the causal pass starts `context_size` candles before
the range so the first candle in range has the same context a live session would have had, and
every prediction at t is made from candles up to t (tests/test_backtest_sim.py checks the
simulation against backtesting.py trade for trade).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from contract.vocab import ACTIONS, CASH, EARLIEST_MS, FEE_BPS, LATEST_MS, PIVOT_LEFT, PIVOT_RIGHT
from db import candle_cache, candles, series
from engine import backtest, backtest_stats, pivots
from engine.device import training_device
from engine.inference import context_size, predict_all
from engine.online import OnlineLearner
from market import signals as market_signals
from market import timeframes


class BacktestError(ValueError):
    """A backtest request that cannot run; the message says why."""


def to_ms(value: str | int | None) -> int | None:
    """A date, ISO time, year ("2030", "20300101") or epoch milliseconds as epoch ms (UTC),
    between 1900 and 2200."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    digits = text.removeprefix("-")
    try:
        if isinstance(value, int) or (digits.isascii() and digits.isdecimal() and len(digits) > 8):
            ms = int(text)
        else:
            ts = pd.Timestamp(text)
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
            ms = int(ts.value // 1_000_000)
    except (ValueError, TypeError, OverflowError):
        raise BacktestError(
            f"{text[:40]!r} is not a date or time between 1900 and 2200: give e.g. 2018-01-01, "
            "2018-01-01T09:30 or epoch milliseconds"
        ) from None
    if not EARLIEST_MS <= ms <= LATEST_MS:
        raise BacktestError(f"{text[:40]!r} is outside 1900–2200: give a date or epoch ms")
    return ms


def signals_frame(signals: str | Path | list | pd.DataFrame) -> pd.DataFrame:
    """A signals CSV path, [[ts_ms, action], …] or a frame (ts, action) as a frame in time order."""
    if isinstance(signals, pd.DataFrame):
        frame = signals
    elif isinstance(signals, list):
        frame = pd.DataFrame(
            {"ts": [int(t) for t, _ in signals], "action": [str(a).upper() for _, a in signals]}
        )
    else:
        try:
            return market_signals.read(signals)
        except market_signals.SignalsError as exc:
            raise BacktestError(f"{signals}: {exc}") from None
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def signal_codes(
    signals: pd.DataFrame, ts: np.ndarray, timeframe: str
) -> tuple[np.ndarray, market_signals.Placement]:
    """Action codes for candles opening at `ts` (market/signals.py says where rows land)."""
    actions, placed = market_signals.place(signals, ts, timeframes.interval_ms(timeframe))
    codes = pd.Series(actions).map(backtest.ACTION_CODES).to_numpy(dtype=np.int8)
    return codes, placed


def _replay_learning(full: pd.DataFrame, first: int, learn: dict, progress) -> np.ndarray:
    """Predict then learn, candle by candle, over full[first:]; probabilities (k, 3)."""
    runner = learn["runner"]
    arr = full[["open", "high", "low", "close", "volume", "ts"]].to_numpy(dtype=float)
    learner = OnlineLearner(runner.config, learn.get("right", PIVOT_RIGHT))
    event = learn.get("event", {})
    out = []
    n = len(arr)
    for i in range(first, n):
        seen = arr[: i + 1]  # only candles that have closed
        pred = runner.snapshot.predict_last(seen[:, :5])
        out.append([pred.probs[a] for a in ACTIONS])
        found = pivots.confirmed_at(
            seen[:, 1],
            seen[:, 2],
            i + 1,
            learn.get("left", PIVOT_LEFT),
            learn.get("right", PIVOT_RIGHT),
        )
        for sample in learner.after_candle(learn["mode"], seen, found):
            # A private copy: nothing else holds its lock, so it trains in step with the replay.
            runner.train_step(sample.batch, operation="backtest training", source=sample.source,
                              **sample.event, **event)  # fmt: skip
        done = i + 1 - first
        if (
            progress is not None
            and (done % 25 == 0 or i == n - 1)
            and progress(done / (n - first)) is False
        ):
            break
    return np.array(out, dtype=np.float32).reshape(-1, len(ACTIONS))


def run(
    database: Engine,
    *,
    symbol: str,
    timeframe: str,
    start: str | int | None = None,
    end: str | int | None = None,
    model=None,
    signals: str | Path | list | None = None,
    fee_bps: float = FEE_BPS,
    slippage_bps: float = 0.0,
    long_only: bool = False,
    cash: float = CASH,
    progress=None,
    chunk: int | None = None,
    learn: dict | None = None,
) -> dict:
    """Backtest (symbol, timeframe) over [start, end] with `model` (a CandleTransformer) or
    signals (a CSV path, or [[ts_ms, action], …]); returns {"status", "metrics", "settings",
    "arrays"}. If `progress` returns False the model pass stops and
    the report covers the candles done, with status "cancelled". "arrays" are the per-candle
    {"ts", "equity", "probs"} (probs None for signals), or None when nothing was simulated.

    With `learn` = {"runner": a ModelRunner (a private copy), "mode": "pivots_only" |
    "every_candle", "left": 5, "right": 5, "event": {...}}, the range is replayed candle by
    candle as a live session would: predict from the copy's latest snapshot, then train it as
    the mode says (engine/online.py). The model passed as `model` is then ignored."""
    lo, hi = to_ms(start), to_ms(end)
    if lo is not None and hi is not None and lo > hi:
        raise BacktestError(f"end ({end}) is before start ({start})")
    if learn:
        model = learn["runner"].snapshot.model
    if (model is None) == (signals is None):
        raise BacktestError("give exactly one of a checkpoint or a signals file")
    stored = candle_cache.shared.dataset(database, symbol, timeframe)  # reruns skip the read
    in_range = stored.frame(lo, hi, None)
    if len(in_range) < 2:
        raise BacktestError(candles.too_few(database, symbol, timeframe, len(in_range)))
    ts = in_range.ts.to_numpy()
    note: dict = {}
    probs = None
    status = "done"
    if model is not None:
        before = stored.frame(None, int(ts[0]) - 1, context_size(model.cfg))
        full = pd.concat([before, in_range], ignore_index=True)
        ohlcv = full[["open", "high", "low", "close", "volume"]].to_numpy()
        if learn:
            probs = _replay_learning(full, len(before), learn, progress)
            note["train_mode"] = learn["mode"]
            note["training_steps"] = learn["runner"].steps
        else:
            probs, _ = predict_all(model, ohlcv, chunk, progress, training_device(), ghost=False)
            probs = probs[len(before) :]
        if len(probs) < len(in_range):  # cancelled: report what was done
            status = "cancelled"
            in_range, ts = in_range.iloc[: len(probs)], ts[: len(probs)]
            if len(in_range) < 2:
                return {"status": status, "metrics": None, "settings": {}, "arrays": None}
        codes = probs.argmax(axis=1).astype(np.int8)
    else:
        frame = signals_frame(signals)
        codes, placed = signal_codes(frame, ts, timeframe)
        trading = frame[frame.action != "HOLD"]
        if len(trading) and len(trading) in (placed.before_range, placed.after_range):
            first, last = market_signals.span(trading)
            raise BacktestError(
                f"none of the {len(trading):,} BUY / SELL signals fall on a {symbol} {timeframe} "
                f"candle from {pd.Timestamp(int(ts[0]), unit='ms', tz='UTC')} to "
                f"{pd.Timestamp(int(ts[-1]), unit='ms', tz='UTC')}; the signals run from {first} to "
                f"{last}. Check the symbol, timeframe and range, and the file's time zone."
            )
        note["signals"] = placed.as_dict()
        if placed.warning():
            note["signals_warning"] = placed.warning()
        if progress:
            progress(1.0)
    sim = backtest.simulate(
        ts, in_range.open, in_range.close, codes, fee_bps=fee_bps, long_only=long_only,
        cash=cash, slippage_bps=slippage_bps,
    )  # fmt: skip
    metrics = backtest_stats.stats(sim, in_range.close.to_numpy(), ts)
    return {
        "status": status,
        "metrics": metrics,
        "settings": {"symbol": symbol, "timeframe": timeframe, "start": metrics["Start"], "end": metrics["End"],
                     "fee_bps": fee_bps, "slippage_bps": slippage_bps, "long_only": long_only,
                     "cash": cash, "candles": len(ts), **note},
        # Whole arrays, kept as blobs beside the report row (db/series.py).
        "arrays": {"ts": ts, "equity": sim.equity, "probs": probs,
                   "trades": trade_columns(sim.trades, ts)},
    }  # fmt: skip


def trade_columns(trades: pd.DataFrame, ts: np.ndarray) -> dict[str, np.ndarray]:
    """A run's trades as the report keeps them (db/series.py): times as epoch ms, side ±1."""
    ts = np.asarray(ts)
    return {
        "entry_time": ts[trades.entry_index.to_numpy()],
        "exit_time": ts[trades.exit_index.to_numpy()],
        "side": np.where(trades.side.to_numpy() == "long", 1, -1).astype(np.int8),
        **{c: trades[c].to_numpy() for c in series.TRADE_COLUMNS[3:]},
    }
