"""A backtest's numbers, named and defined as backtesting.py (0.6) defines them, so a person
comparing a Candle Lab report with backtesting.py (or with its docs) reads the same quantity
under the same name. tests/test_backtest_sim.py checks every shared key against it.

The definitions, briefly (r: trade returns as fractions, pnl: trade P&L net of fees):
- Avg. Trade: geometric mean of r; Expectancy: arithmetic mean of r.
- Profit Factor: sum of positive r / |sum of negative r|.
- Exposure Time: share of candles from a trade's entry candle to its exit candle, inclusive.
- Annualised figures use "day" returns: the equity's last value per calendar day (per week,
  month or year for candles that long), compounded: Return (Ann.) = (1 + g)^P − 1 with g the
  geometric mean day return and P = 252 (365 where weekends trade, 52 / 12 / 1 for weekly /
  monthly / yearly candles); Volatility (Ann.) is the compounded variance; Sharpe = Return
  (Ann.) / Volatility (Ann.); Sortino = Return (Ann.) / (root mean square of negative day
  returns · √P); Calmar = Return (Ann.) / Max. Drawdown.
Undefined values (no trades, no losses, a flat curve) are None rather than NaN, so reports stay
valid JSON.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _number(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _geometric_mean(r: np.ndarray) -> float:
    growth = 1 + np.nan_to_num(r)
    if len(growth) == 0:
        return math.nan
    if (growth <= 0).any():
        return 0.0
    return float(np.exp(np.log(growth).mean()) - 1)


def _calendar(index: pd.DatetimeIndex) -> tuple[int, str]:
    """Periods a year and the resampling rule for "day" returns, from the candle spacing
    (median of the last 100 gaps) and whether weekends have candles."""
    days = pd.Series(index[-100:]).diff().dropna().median().days
    weekends = (index.day_of_week >= 5).mean() > 2 / 7 * 0.6
    periods = {7: 52, 31: 12, 365: 1}.get(days, 365 if weekends else 252)
    return periods, {7: "W", 31: "ME", 365: "YE"}.get(days, "D")


def stats(sim, close: np.ndarray, ts: np.ndarray) -> dict:
    """The report's metrics for a Simulation (engine/backtest.py) over candles `ts`."""
    t, eq = sim.trades, np.asarray(sim.equity, dtype=float)
    n = len(eq)
    index = pd.DatetimeIndex(pd.to_datetime(np.asarray(ts), unit="ms", utc=True))
    drawdown = 1 - eq / np.maximum.accumulate(eq)
    max_dd = float(drawdown.max())
    r = t["return_pct"].to_numpy(dtype=float) / 100 if len(t) else np.array([])
    pnl = t["pnl"].to_numpy(dtype=float) if len(t) else np.array([])

    exposed = np.zeros(n + 1, dtype=np.int64)  # entry .. exit candle inclusive, as a sweep
    if len(t):
        np.add.at(exposed, t["entry_index"].to_numpy(), 1)
        np.add.at(exposed, t["exit_index"].to_numpy() + 1, -1)
    exposure = (np.cumsum(exposed[:n]) > 0).mean() * 100

    periods, rule = _calendar(index) if n > 1 else (252, "D")
    day = pd.Series(eq, index=index).resample(rule).last().dropna().pct_change().dropna()
    g = _geometric_mean(day.to_numpy()) if len(day) else 0.0
    annual = (1 + g) ** periods - 1
    var = day.var(ddof=1) if len(day) > 1 else math.nan
    volatility = math.sqrt(max((var + (1 + g) ** 2) ** periods - (1 + g) ** (2 * periods), 0.0))
    downside = math.sqrt(np.mean(np.minimum(day.to_numpy(), 0) ** 2)) if len(day) else 0.0
    years = (index[-1] - index[0]).total_seconds() / 86_400 / 365.25
    wins, losses = r[r > 0].sum(), -r[r < 0].sum()
    win_rate = (pnl > 0).mean() if len(pnl) else math.nan
    avg_win = pnl[pnl > 0].mean() if (pnl > 0).any() else math.nan
    avg_loss = -pnl[pnl < 0].mean() if (pnl < 0).any() else math.nan

    def ratio(a: float, b: float) -> float | None:
        return _number(a / b) if b and math.isfinite(b) else None

    return {
        "Start": index[0].isoformat(),
        "End": index[-1].isoformat(),
        "Exposure Time [%]": float(exposure),
        "Equity Final [$]": float(eq[-1]),
        "Equity Peak [$]": float(eq.max()),
        "Commissions [$]": float(t.fees.sum()) if len(t) else 0.0,
        "Return [%]": float((eq[-1] / sim.cash - 1) * 100),
        "Buy & Hold Return [%]": float((close[-1] / close[0] - 1) * 100),
        "Return (Ann.) [%]": _number(annual * 100),
        "Volatility (Ann.) [%]": _number(volatility * 100),
        "CAGR [%]": _number(((eq[-1] / sim.cash) ** (1 / years) - 1) * 100) if years else None,
        "Sharpe Ratio": ratio(annual, volatility),
        "Sortino Ratio": ratio(annual, downside * math.sqrt(periods)),
        "Calmar Ratio": ratio(annual, max_dd),
        "Max. Drawdown [%]": -max_dd * 100,
        "# Trades": int(len(t)),
        "Win Rate [%]": _number(win_rate * 100),
        "Best Trade [%]": _number(r.max() * 100) if len(r) else None,
        "Worst Trade [%]": _number(r.min() * 100) if len(r) else None,
        "Avg. Trade [%]": _number(_geometric_mean(r) * 100),
        "Profit Factor": ratio(wins, losses),
        "Expectancy [%]": _number(r.mean() * 100) if len(r) else None,
        "SQN": ratio(math.sqrt(len(pnl)) * pnl.mean(), pnl.std(ddof=1)) if len(pnl) > 1 else None,
        "Kelly Criterion": _number(win_rate - (1 - win_rate) / (avg_win / avg_loss))
        if math.isfinite(avg_win / avg_loss)
        else None,
    }
