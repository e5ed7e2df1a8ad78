"""Backtest simulation: signals → trades → equity, vectorised, with the fill rule live sessions
use (engine/account.py); engine/backtest_stats.py turns a run into the report's numbers.

Fill rule: a signal at the close of candle t fills at the open of t+1; BUY targets long, SELL
short (flat when long-only), HOLD keeps the position; fees are `fee_bps` of the traded notional
on every fill; the whole equity goes into each position (units = equity / (price · (1 + fee))).
A position still open after the last candle is closed at the last close and marked so.

Because the whole equity is in each position, a trade multiplies equity by a factor that
depends only on its two prices and the fee rate f:
    long:  g = p_out (1 − f) / (p_in (1 + f))
    short: g = 1 + (1 − f) / (1 + f) − p_out / p_in
so equity after k trades is a cumulative product, and the simulation never loops per candle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from contract.vocab import CASH

ACTION_CODES = {"BUY": 0, "SELL": 1, "HOLD": 2}


@dataclass
class Simulation:
    trades: (
        pd.DataFrame
    )  # entry/exit index, time and price, side, pnl, return_pct, fees, open_at_end
    equity: np.ndarray  # (n,) equity at each candle's close
    position: np.ndarray  # (n,) position held during each candle: −1, 0, 1
    cash: float
    fee_bps: float


def held_positions(actions: np.ndarray, long_only: bool) -> np.ndarray:
    """Position held during each candle (filled at its open from the previous close's signal)."""
    a = np.asarray(actions)
    target = np.full(len(a), np.nan)
    target[a == ACTION_CODES["BUY"]] = 1.0
    target[a == ACTION_CODES["SELL"]] = 0.0 if long_only else -1.0
    desired = pd.Series(target).ffill().fillna(0.0).to_numpy()  # after the signal at t
    held = np.zeros(len(a))
    held[1:] = desired[:-1]
    return held.astype(np.int8)


def simulate(
    ts: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    actions: np.ndarray,
    *,
    fee_bps: float = 0.0,
    long_only: bool = False,
    cash: float = CASH,
    slippage_bps: float = 0.0,
) -> Simulation:
    """Run the fill rule over a whole series at once. `actions` are codes (ACTION_CODES).
    `slippage_bps` moves every fill against the trade (buys higher, sells lower)."""
    n = len(close)
    o, c = np.asarray(open_, dtype=float), np.asarray(close, dtype=float)
    slip = slippage_bps / 10_000
    f = fee_bps / 10_000
    held = held_positions(actions, long_only)
    change = np.flatnonzero(np.diff(held, prepend=0) != 0)  # candles whose open has a fill
    starts = change[held[change] != 0]
    ends = np.append(change, n)  # the next change after each start, or the end
    exit_at = ends[np.searchsorted(ends, starts, side="right")]
    open_at_end = exit_at >= n
    side = held[starts].astype(float)
    p_in = o[starts] * (1 + side * slip)
    p_out = np.where(open_at_end, c[-1], o[np.minimum(exit_at, n - 1)]) * (1 - side * slip)
    growth = np.where(
        side > 0, p_out * (1 - f) / (p_in * (1 + f)), 1 + (1 - f) / (1 + f) - p_out / p_in
    )
    before = cash * np.concatenate([[1.0], np.cumprod(growth)[:-1]])  # equity entering each trade
    units = side * before / (p_in * (1 + f))
    fee_in = np.abs(units) * p_in * f
    fee_out = np.abs(units) * p_out * f
    pnl = before * (growth - 1)
    trades = pd.DataFrame(
        {
            "entry_index": starts,
            "exit_index": np.minimum(exit_at, n - 1),
            "entry_time": pd.to_datetime(np.asarray(ts)[starts], unit="ms", utc=True),
            "exit_time": pd.to_datetime(
                np.asarray(ts)[np.minimum(exit_at, n - 1)], unit="ms", utc=True
            ),
            "side": pd.Categorical.from_codes((side > 0).astype(np.int8), ["short", "long"]),
            "size": units,
            "entry_price": p_in,
            "exit_price": p_out,
            "pnl": pnl,
            "return_pct": pnl / (np.abs(units) * p_in) * 100,
            "fees": fee_in + fee_out,
            "open_at_end": open_at_end,
        }
    )
    # Equity at each close: flat stretches keep the equity after the trades closed so far;
    # candles inside a trade (held != 0) mark it to market.
    opened = np.zeros(n, dtype=np.int64)
    opened[starts] = 1
    trade_of = np.cumsum(opened) - 1  # the latest trade opened by each candle
    closed = np.zeros(n + 1, dtype=np.int64)
    np.add.at(closed, exit_at, 1)
    closed_before = np.cumsum(closed[:n])  # trades whose exit fill is at or before t's open
    after = cash * np.concatenate([[1.0], np.cumprod(growth)])  # equity after k trades
    equity = after[closed_before].astype(float)
    inside = held != 0
    k = trade_of[inside]
    equity[inside] = np.where(
        side[k] > 0,
        units[k] * c[inside],
        before[k] + before[k] * (1 - f) / (1 + f) + units[k] * c[inside],
    )
    if len(starts) and open_at_end[-1]:
        equity[-1] = after[-1]  # closed at the last close, exit fee paid
    return Simulation(trades, equity, held, cash, fee_bps)
