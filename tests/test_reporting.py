"""Report helpers the pages use: thinning a long equity curve for a chart must keep its shape."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pages.reporting import thin


def curve(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    eq = 10_000 * np.cumprod(1 + rng.normal(0, 0.01, n))
    df = pd.DataFrame({"time": pd.date_range("2000", periods=n, freq="h"), "equity": eq})
    df["drawdown_pct"] = (df.equity / df.equity.cummax() - 1) * 100
    return df


def test_a_long_curve_keeps_its_extremes_ends_and_order():
    df = curve(200_000)
    small = thin(df)
    assert len(small) <= 8_000
    assert small.equity.max() == df.equity.max() and small.equity.min() == df.equity.min()
    assert small.drawdown_pct.min() == df.drawdown_pct.min()
    assert small.time.is_monotonic_increasing
    assert small.index[0] == 0 and small.index[-1] == len(df) - 1
    # every bucket of ~100 rows is represented: no stretch of the chart goes missing
    assert np.diff(small.index.to_numpy()).max() <= 2 * len(df) // 2_000


def test_a_short_curve_is_left_alone():
    df = curve(500)
    assert thin(df) is df
