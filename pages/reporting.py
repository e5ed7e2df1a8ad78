"""Helpers the backtest pages share: loading a report into frames, charts, the HTML export."""

from __future__ import annotations

import html
import json

import altair as alt
import numpy as np
import pandas as pd

from db import backtests

HEADLINE = ["Return [%]", "Buy & Hold Return [%]", "Max. Drawdown [%]", "# Trades", "Win Rate [%]",
            "Sharpe Ratio"]  # fmt: skip
TRADE_COLUMNS = ["entry_time", "exit_time", "side", "entry_price", "exit_price", "pnl",
                 "return_pct", "fees", "open_at_end"]  # fmt: skip


def table_labels(labels) -> list[str]:
    """Metric names as st.table shows them: it reads labels as Markdown ("# Trades")."""
    return [str(k).replace("#", "\\#") for k in labels]


def equity_frame(row) -> pd.DataFrame:
    eq = row.equity or {"ts": [], "equity": []}
    df = pd.DataFrame(
        {"time": pd.to_datetime(eq["ts"], unit="ms", utc=True), "equity": eq["equity"]}
    )
    if not df.empty:
        df["drawdown_pct"] = (df.equity / df.equity.cummax() - 1) * 100
    return df


def thin(df: pd.DataFrame, points: int = 2_000) -> pd.DataFrame:
    """At most about 3 × `points` rows of a time series for a chart: per bucket of rows the
    first, the highest and the lowest equity and the deepest drawdown, in time order. A chart
    a thousand pixels wide shows the same shape, peaks and troughs included, and a 200k-candle
    report draws in a moment instead of sending every point to the browser."""
    if len(df) <= 3 * points:
        return df
    bucket = np.arange(len(df)) * points // len(df)
    groups = pd.Series(np.arange(len(df))).groupby(bucket)
    keep = [groups.first()]
    for column, pick in (("equity", "idxmax"), ("equity", "idxmin"), ("drawdown_pct", "idxmin")):
        if column in df:
            values = pd.Series(df[column].to_numpy())
            keep.append(getattr(values.groupby(bucket), pick)())
    keep.append(pd.Series([len(df) - 1]))
    return df.iloc[np.unique(np.concatenate([k.to_numpy() for k in keep]))]


def trades_frame(row) -> pd.DataFrame:
    return pd.DataFrame((row.trades or {}).get("rows", []), columns=TRADE_COLUMNS)


def label(row) -> str:
    source = (
        f"checkpoint #{row.checkpoint_id}"
        if row.checkpoint_id
        else f"signals {row.signals_name or ''}"
    )
    return f"#{row.id} {row.name or ''} {row.symbol} {row.timeframe} · {source}".replace("  ", " ")


def equity_chart(df: pd.DataFrame) -> alt.VConcatChart:
    base = alt.Chart(df).encode(x=alt.X("time:T", title=None, axis=alt.Axis(format="%Y-%m-%d")))
    eq = base.mark_line(color="#1e88e5").encode(
        y=alt.Y("equity:Q", scale=alt.Scale(zero=False), title="equity")
    )
    dd = base.mark_area(color="#ef5350", opacity=0.5).encode(
        y=alt.Y("drawdown_pct:Q", title="drawdown %")
    )
    return alt.vconcat(
        eq.properties(height=260, width="container", title="Equity"),
        dd.properties(height=110, width="container"),
        spacing=4,
    ).resolve_scale(x="shared")


def report_json(row) -> str:
    return json.dumps(
        {
            "id": row.id, "name": row.name, "symbol": row.symbol, "timeframe": row.timeframe,
            "checkpoint_id": row.checkpoint_id, "signals": row.signals_name, "settings": row.settings,
            "status": row.status, "created_by": row.created_by, "created_at": row.created_at.isoformat(),
            "metrics": row.metrics, "trades": (row.trades or {}).get("rows", []),
            "equity": row.equity,
        },
        indent=1, default=str,
    )  # fmt: skip


def _svg_line(values: np.ndarray, width: int, height: int, color: str) -> str:
    if len(values) < 2:
        return ""
    step = max(1, len(values) // 2000)
    v = values[::step]
    lo, hi = float(np.min(v)), float(np.max(v))
    span = hi - lo or 1.0
    xs = np.linspace(0, width, len(v))
    ys = height - (v - lo) / span * height
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/></svg>'
            f'<div class="axis">{lo:,.2f} – {hi:,.2f}</div>')  # fmt: skip


def report_html(row) -> str:
    """A self-contained page (no scripts, no network): metrics, equity and drawdown, trades."""
    eq = equity_frame(row)
    trades = trades_frame(row)
    metrics = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(f'{v:,.4f}' if isinstance(v, float) else str(v))}</td></tr>"
        for k, v in (row.metrics or {}).items()
    )
    table = trades.to_html(index=False, float_format=lambda x: f"{x:,.4f}", border=0)
    settings = html.escape(json.dumps(row.settings))
    title = html.escape(label(row))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Backtest {title}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;font-size:13px}}
th,td{{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}} th{{text-align:left}}
.axis{{color:#777;font-size:12px}} h2{{margin-top:1.5em}}</style></head><body>
<h1>Backtest {title}</h1><p>Status {html.escape(row.status)} · by {html.escape(str(row.created_by))} ·
{row.created_at:%Y-%m-%d %H:%M} UTC · settings {settings}</p>
<h2>Metrics</h2><table>{metrics}</table>
<h2>Equity</h2>{_svg_line(eq.equity.to_numpy(), 900, 220, "#1e88e5") if not eq.empty else ""}
<h2>Drawdown %</h2>{_svg_line(eq.drawdown_pct.to_numpy(), 900, 100, "#ef5350") if not eq.empty else ""}
<h2>Trades ({len(trades)})</h2>{table}</body></html>"""


def load(engine, backtest_id: int):
    return backtests.get(engine, backtest_id)
