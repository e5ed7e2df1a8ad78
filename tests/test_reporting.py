"""Chart and report helpers the pages use: long curves thinned for charts keep their shape;
annotations show on the candle chart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pages.reporting import thin
from tests.conftest import ROOT


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


ASCII_PUNCTUATION = r"!-/:-@\[-`{-~"


def test_typed_text_shows_as_itself_in_markdown():
    """md_text escapes every ASCII punctuation mark (CommonMark then shows it as itself), so an
    image, link, HTML tag, code span, emphasis or colour directive in a name stays text."""
    import re

    from pages.common import md_text

    cases = [
        "![x](http://127.0.0.1:9/p.png)",
        "[click](javascript:alert(1)) <https://example.com>",
        "<img src=x onerror=alert(1)><b>bold</b> &amp;",
        "`code` **strong** *em* _em_ [a][b] ~~gone~~ \\*",
        ":red[alarm] :smile: $x^2$ # not a heading | a | b |",
        "two\nlines\r\n- item\n> quote",
        "plain name 123 é 日本",
    ]
    for text in cases:
        out = md_text(text)
        assert re.fullmatch(rf"(?:\\[{ASCII_PUNCTUATION}]|[^{ASCII_PUNCTUATION}\n\r])*", out), out
        assert re.sub(r"\\(.)", r"\1", out) == " ".join(text.splitlines())
    assert md_text("![x](http://h/p.png)") == r"\!\[x\]\(http\:\/\/h\/p\.png\)"
    assert md_text(None) == "None" and md_text(12) == "12"


def test_the_comparison_chart_has_distinct_colours_and_years_on_its_axis():
    from pages.common import TIME_LABELS
    from pages.reporting import comparison_chart

    class Row:  # the fields a stored report gives the chart
        def __init__(self, i):
            self.id, self.name, self.symbol, self.timeframe = i, f"r{i}", "SP500", "1d"
            self.checkpoint_id, self.signals_name = i, None
            ts = pd.date_range("2024-01-01", periods=30, freq="D", tz="UTC").as_unit("ms").asi8
            self.equity = {"ts": ts.tolist(), "equity": np.linspace(100, 100 + i, 30).tolist()}

    spec = comparison_chart([Row(1), Row(2)]).to_dict()
    assert spec["encoding"]["color"]["scale"] == {"scheme": "tableau10"}
    assert spec["encoding"]["x"]["axis"]["labelExpr"] == TIME_LABELS
    assert "%Y" in TIME_LABELS and "%b %Y" in TIME_LABELS
    assert comparison_chart([]) is None


def test_the_report_page_shows_names_and_the_url_parameter_as_text(database):
    """A report named with Markdown, a signals file and a creator with HTML, and a link whose
    ?id= is an image: the page shows them as text, says the id is unknown, and says the model
    trained while it ran."""
    import re

    from streamlit.testing.v1 import AppTest

    from db import backtests

    ts = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC").as_unit("ms").asi8.tolist()
    bid = backtests.create(
        database, name="![x](http://127.0.0.1:9/p.png)", symbol="SP500", timeframe="1d",
        start_ts=ts[0], end_ts=ts[-1], signals_name="<img src=x>.csv", created_by="*ana*",
        settings={"fee_bps": 10, "train_mode": "pivots_only", "training_steps": 12},
    )  # fmt: skip
    backtests.finish(database, bid, "done", metrics={"Return [%]": 1.0, "# Trades": 0},
                     trades={"rows": []}, equity={"ts": ts, "equity": [1.0] * 5})  # fmt: skip
    page = AppTest.from_file(str(ROOT / "pages" / "report.py"), default_timeout=60)
    page.query_params["id"] = "![y](http://127.0.0.1:9/q.png)"
    page.run()
    assert not page.exception
    shown = [e.value for e in [*page.title, *page.caption, *page.error, *page.info]]
    unescaped = [re.sub(r"\\[!-/:-@\[-`{-~]", "", text) for text in shown]
    assert not any(bad in t for t in unescaped for bad in ("![", "](", "<img", "*ana*")), shown
    assert r"No report with id \!\[y\]" in page.error[0].value
    assert r"Backtest #1 · \!\[x\]\(http" in page.title[0].value
    assert r"\<img src\=x\>\.csv" in page.caption[0].value and r"\*ana\*" in page.caption[0].value
    assert any("Trained while backtesting" in e.value for e in page.info)


@pytest.mark.parametrize("raw", ["99999999999999999999", "-1", "0", "abc", ""])
def test_a_report_url_with_an_impossible_id_says_so(database, raw):
    from streamlit.testing.v1 import AppTest

    page = AppTest.from_file(str(ROOT / "pages" / "report.py"), default_timeout=60)
    page.query_params["id"] = raw
    page.run()
    assert not page.exception
    assert page.error and "No report with id" in page.error[0].value
