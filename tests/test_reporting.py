"""Chart and report helpers the pages use: long curves thinned for charts keep their shape;
annotations show on the candle chart."""

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


def test_the_candle_chart_shades_annotated_trades():
    from pages.common import annotation_frame, candle_chart

    n = 50
    t = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    df = pd.DataFrame({"ts": t.as_unit("ms").asi8, "time": t, "open": 1.0, "high": 2.0,
                       "low": 0.5, "close": 1.5, "volume": 10.0})  # fmt: skip

    class Ann:  # the fields annotation_frame reads from a stored annotation
        id, side, note, author = 1, "long", "", "ana"
        entry_ts, exit_ts = int(df.ts.iloc[10]), int(df.ts.iloc[20])

    def marks(chart) -> list[str]:
        spec = chart.to_dict()
        found = []

        def walk(node):
            if isinstance(node, dict):
                mark = node.get("mark")
                if mark is not None:
                    found.append(mark if isinstance(mark, str) else mark["type"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(spec)
        return found

    assert "rect" not in marks(candle_chart(df))
    shaded = candle_chart(df, annotations=annotation_frame([Ann], df))
    assert marks(shaded).count("rect") == 1 and marks(shaded).count("bar") == 2
