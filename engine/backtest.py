"""Backtest simulation: signals → trades → equity over a whole series at once, with the fill
rule live sessions use (engine/fills.py: when a signal fills, at what price, fees, slippage,
sizing, the end-of-run close); engine/backtest_stats.py turns a run into the report's numbers.

Because the whole equity goes into each position, a trade multiplies equity by a factor that
depends only on its two fill prices and the fee (fills.growth), so equity after k trades is a
cumulative product and the simulation never loops per candle: it finds the candles whose open
has a fill (where the targeted position changes), prices every trade at once, and spreads each
stretch's cash and units over its candles. Plain numpy, no JIT: the first call is as fast as
the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from contract.vocab import CASH
from engine import fills

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


def _fills(actions: np.ndarray, long_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """The candles whose open has a fill, and the position held from each: a signal at t fills
    at t + 1 when it targets another position than the signal before it did."""
    a = np.asarray(actions)
    aims = np.zeros(max(ACTION_CODES.values()) + 1, dtype=np.int8)
    for action, position in fills.targets(long_only).items():
        aims[ACTION_CODES[action]] = position
    signal = a != ACTION_CODES["HOLD"]  # HOLD keeps the position
    signal[-1:] = False  # a signal at the last close has no next open to fill at
    aim = aims.take(a)[signal]  # the position each signal targets, in order
    moved = np.empty(len(aim), dtype=bool)
    moved[:1] = aim[:1] != 0  # flat before the first signal
    np.not_equal(aim[1:], aim[:-1], out=moved[1:])
    fill = np.zeros(len(a), dtype=bool)
    fill[signal] = moved
    return np.flatnonzero(fill) + 1, aim[moved]


_UTC = pd.DatetimeTZDtype("us", "UTC")


def _times(ts: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Epoch ms as UTC times, as pd.to_datetime(ts, unit="ms", utc=True) gives them."""
    return pd.array((ts * 1000).view("M8[us]"), dtype=_UTC)


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
    """Run the fill rule (engine/fills.py) over a whole series at once. `actions` are codes
    (ACTION_CODES); `slippage_bps` moves every fill against the trade (buys higher, sells
    lower), in backtests as in live sessions."""
    o, c = np.asarray(open_, dtype=float), np.asarray(close, dtype=float)
    n = len(c)
    at, pos = _fills(actions, long_only)
    following = np.append(at, n)  # each fill's next fill, or the end of the run
    opening = np.flatnonzero(pos)  # fills that open a position (long-only: not those to flat)
    if len(opening) == len(pos):  # every fill opens one: each trade ends at the next fill
        starts, exit_index, side = at, following[1:], pos
    else:
        starts, exit_index, side = at[opening], following[opening + 1], pos[opening]
    open_at_end = np.zeros(len(starts), dtype=bool)
    open_at_end[-1:] = exit_index[-1:] == n  # only the last trade can be
    exit_index[open_at_end] = n - 1
    market_out = o.take(exit_index)
    market_out[open_at_end] = fills.end_of_run(c)
    p_in = fills.fill_price(o.take(starts), side, slippage_bps)
    p_out = fills.fill_price(market_out, -side, slippage_bps)
    growth = fills.growth(side, p_in, p_out, fee_bps)
    after = np.cumprod(np.concatenate([[cash], growth]))  # equity after k trades, in order
    before = after[:-1]
    units = fills.size(before, p_in, side, fee_bps)
    fee_in = fills.fee(units, p_in, fee_bps)
    cash_in = fills.cash_after_entry(before, units, p_in, fee_in)
    pnl = fills.pnl(before, growth)
    ts = np.asarray(ts, dtype=np.int64)
    trades = pd.DataFrame(
        {
            "entry_index": starts,
            "exit_index": exit_index,
            "entry_time": _times(ts.take(starts)),
            "exit_time": _times(ts.take(exit_index)),
            "side": pd.Categorical.from_codes((side > 0).view(np.int8), ["short", "long"]),
            "size": units,
            "entry_price": p_in,
            "exit_price": p_out,
            "pnl": pnl,
            "return_pct": fills.return_pct(pnl, units, p_in),
            "fees": fee_in + fills.fee(units, p_out, fee_bps),
            "open_at_end": open_at_end,
        },
        copy=False,
    )
    # Equity at each close is cash + units × close, with each stretch's cash and units: a
    # trade's cash after its entry, or flat, the equity after the trades closed before it.
    seg_pos = np.concatenate([np.zeros(1, np.int8), pos])  # stretch j: from fill j − 1 on
    trade_stretch = opening + 1
    seg_cash = after.take(np.cumsum(seg_pos != 0) - (seg_pos != 0))
    seg_cash[trade_stretch] = cash_in
    seg_units = np.zeros(len(seg_pos))
    seg_units[trade_stretch] = units
    stretch = np.zeros(n, dtype=np.intp)  # each candle's stretch: the fills before it
    stretch[at] = 1
    np.cumsum(stretch, out=stretch)
    equity = seg_units.take(stretch)
    equity *= c
    equity += seg_cash.take(stretch)
    if open_at_end[-1:].any():
        equity[-1] = after[-1]  # closed at the last close, exit fee paid
    return Simulation(trades, equity, seg_pos.take(stretch), cash, fee_bps)
