"""The fill rule, defined once: what a fill costs, how big a position is, what a trade makes.

Live sessions apply it candle by candle (engine/account.py); backtests apply it to whole arrays
at once (engine/backtest.py). Every function here takes Python floats or numpy arrays alike, and
both callers evaluate the same expressions in the same order, so a live session and a backtest
given the same candles and signals get the same trades and equity to the last bit
(tests/test_backtest_sim.py replays one through the other).

- When: a signal computed at the close of candle t fills at the open of candle t + 1 (no
  look-ahead). BUY targets a long position (closing a short first), SELL a short one (closing a
  long first) or, when long-only, a flat one; HOLD keeps the position.
- Price: slippage moves every fill against the trade — a buy fills `slippage_bps` higher, a
  sell that much lower — entries, exits and the end-of-run close alike.
- Fee: `fee_bps` of the traded notional (units × fill price), charged on every fill.
- Size: the whole equity goes into each position, units = equity / (price · (1 + fee)), so the
  entry and its fee can always be paid for; a short's proceeds stay in cash.
- Equity while a position is open: cash + units × the price it is marked at (a candle's close).
- A trade multiplies the equity it started with by `growth` (below); its P&L is the change, and
  its return is the P&L over the entry notional, net of both fills' fees.
- End of run: a position still open after the last candle is closed at the last close (with
  slippage and fee), and marked so (`open_at_end`).
"""

from __future__ import annotations

BPS = 10_000  # basis points in 1


def targets(long_only: bool) -> dict[str, int]:
    """The position each signal aims for: BUY long (+1), SELL short (−1) or, long-only, flat
    (0). HOLD, absent here, keeps whatever is held."""
    return {"BUY": 1, "SELL": 0 if long_only else -1}


def rate(bps: float) -> float:
    """A rate in basis points as a fraction: 10 bps → 0.001."""
    return bps / BPS


def fill_price(price, direction, slippage_bps: float):
    """The price a fill gets at market `price`: `direction` +1 buys (pays more), −1 sells
    (gets less)."""
    if not slippage_bps:
        return price  # what price * 1.0 would be, without a pass over a backtest's fills
    return price * (1 + direction * rate(slippage_bps))


def fee(units, price, fee_bps: float):
    """The fee of a fill of `units` (either sign) at `price`: fee_bps of the notional."""
    return abs(units) * price * rate(fee_bps)


def size(equity, price, side, fee_bps: float):
    """Units a position on `side` (+1 long, −1 short) takes: the whole equity, fee included."""
    return side * equity / (price * (1 + rate(fee_bps)))


def cash_after_entry(equity, units, price, entry_fee):
    """Cash once `units` were bought (sold short) at `price` with `equity` and paid `entry_fee`:
    about 0 for a long, the equity plus the short's net proceeds for a short."""
    return equity - units * price - entry_fee


def growth(side, entry_price, exit_price, fee_bps: float):
    """Equity after a whole-equity trade over the equity before it, fees of both fills paid:
    long: exit (1 − f) / (entry (1 + f)); short: 2 / (1 + f) − exit / entry."""
    f = rate(fee_bps)
    return ((1 - side) + (side - f) * (exit_price / entry_price)) / (1 + f)


def pnl(equity_before, trade_growth):
    """A trade's profit or loss, net of fees, from the equity it started with."""
    return equity_before * (trade_growth - 1)


def return_pct(trade_growth, fee_bps: float):
    """A trade's return in percent of its entry notional, net of both fills' fees: its P&L over
    units × entry price, which is the equity it started with over (1 + fee)."""
    return (trade_growth - 1) * ((1 + rate(fee_bps)) * 100)


def end_of_run(close):
    """The market price a position still open after the last candle is closed at: the last
    close (slippage and fee apply as to any exit)."""
    return close[-1]
