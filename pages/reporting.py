"""Helpers the backtest pages share: loading a report into frames, charts, the HTML export."""

from __future__ import annotations

import html
import json

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from db import backtests
from pages.common import TIME_LABELS, md_text

HEADLINE = ["Return [%]", "Buy & Hold Return [%]", "Max. Drawdown [%]", "# Trades", "Win Rate [%]",
            "Sharpe Ratio"]  # fmt: skip


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


def trades_frame(engine, row) -> pd.DataFrame:
    return backtests.trades(engine, row.id)


def label(row) -> str:
    source = (
        f"checkpoint #{row.checkpoint_id}"
        if row.checkpoint_id
        else f"signals {row.signals_name or ''}"
    )
    return f"#{row.id} {row.name or ''} {row.symbol} {row.timeframe} · {source}".replace("  ", " ")


# Tick labels that always carry the year ("Mar 2024", "05 Mar 2024", "2024"); Vega's default
# ("March", "Fri 05") drops it, and a chart over months cannot be placed in time. Sub-day ticks
# show day and hour. Local-time functions, as the time scale places the ticks in local time.
def time_axis() -> alt.Axis:
    return alt.Axis(labelExpr=TIME_LABELS)


def equity_chart(df: pd.DataFrame) -> alt.VConcatChart:
    base = alt.Chart(df).encode(x=alt.X("time:T", title=None, axis=time_axis()))
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


def comparison_chart(rows) -> alt.Chart | None:
    """Equity of several reports on one axis (start = 100), one clearly different colour each
    (tableau10: Vega's default range gave two reports near-identical blues), None when no
    report has a curve."""
    curves = []
    for r in rows:
        eq = thin(equity_frame(r))
        if not eq.empty:
            curves.append(eq.assign(report=label(r), growth=eq.equity / eq.equity.iloc[0] * 100))
    if not curves:
        return None
    return (
        alt.Chart(pd.concat(curves))
        .mark_line()
        .encode(
            x=alt.X("time:T", title=None, axis=time_axis()),
            y=alt.Y("growth:Q", title="equity (start = 100)", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "report:N",
                scale=alt.Scale(scheme="tableau10"),
                legend=alt.Legend(orient="bottom", title=None, labelLimit=420, columns=2),
            ),
            tooltip=[
                "report:N",
                alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"),
                alt.Tooltip("growth:Q", format=",.2f"),
            ],  # fmt: skip
        )
        .properties(height=320, width="container")
    )


def comparison_table(rows) -> pd.DataFrame:
    """Metrics side by side, one column per report, for st.table (which reads headers and
    labels as Markdown: report names are escaped)."""
    table = pd.DataFrame({md_text(label(r)): (r.metrics or {}) for r in rows}).map(
        lambda v: "—" if v is None else (f"{v:,.3f}" if isinstance(v, float) else str(v))
    )
    table.index = table_labels(table.index)
    return table


def reports_frame(rows) -> pd.DataFrame:
    """The reports list: one row per report, few enough columns to fit a page without
    scrolling sideways (`REPORTS_TABLE` hides `id` and says how wide each is)."""
    return pd.DataFrame(
        [
            {"report": f"report?id={r.id}", "id": r.id, "name": r.name or "", "by": r.created_by,
             "symbol": r.symbol, "timeframe": r.timeframe,
             "range": f"{_day(r.start_ts)} → {_day(r.end_ts)}", "source": backtests.source(r),
             "status": r.status, "return %": (r.metrics or {}).get("Return [%]"),
             "trades": (r.metrics or {}).get("# Trades")}
            for r in rows
        ],
        columns=["report", "id", "name", "by", "symbol", "timeframe", "range", "source", "status",
                 "return %", "trades"],
    )  # fmt: skip


def _day(ms) -> str:
    return "?" if ms is None else f"{pd.Timestamp(ms, unit='ms', tz='UTC'):%Y-%m-%d}"


REPORTS_TABLE = {
    "column_order": ["report", "name", "by", "symbol", "timeframe", "range", "source", "status",
                     "return %", "trades"],
    "column_config": {
        "report": st.column_config.LinkColumn("report", display_text=r"report\?id=(\d+)", width=70),
        "name": st.column_config.TextColumn(width="medium"),
        "by": st.column_config.TextColumn(width="small"),
        "symbol": st.column_config.TextColumn(width="small"),
        "timeframe": st.column_config.TextColumn("tf", width=40),
        "range": st.column_config.TextColumn(width="medium"),
        "source": st.column_config.TextColumn(width="medium"),
        "status": st.column_config.TextColumn(width="small"),
        "return %": st.column_config.NumberColumn(format="%.2f", width="small"),
        "trades": st.column_config.NumberColumn(width="small"),
    },
}  # fmt: skip


def trades_table(trades: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The trades as the report page shows them: times as times (the ISO text with its zone
    made the table scroll sideways) and short figures; returns (frame, column_config)."""
    shown = trades.assign(
        entry_time=pd.to_datetime(trades.entry_time, utc=True),
        exit_time=pd.to_datetime(trades.exit_time, utc=True),
    )
    when = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", width="small")
    price = st.column_config.NumberColumn(format="%.4f", width="small")
    return shown, {
        "entry_time": when, "exit_time": when, "side": st.column_config.TextColumn(width=50),
        "entry_price": price, "exit_price": price,
        "pnl": st.column_config.NumberColumn(format="%.2f", width="small"),
        "return_pct": st.column_config.NumberColumn("return %", format="%.2f", width="small"),
        "fees": st.column_config.NumberColumn(format="%.2f", width="small"),
        "open_at_end": st.column_config.CheckboxColumn("open", width=50),
    }  # fmt: skip


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


def report_html(engine, row) -> str:
    """A self-contained page (no scripts, no network): metrics, equity and drawdown, trades."""
    eq = equity_frame(row)
    trades = trades_frame(engine, row)
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
