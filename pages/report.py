"""One backtest report at its own URL (?id=N): metrics, equity and drawdown, the candles with
entries and exits, the trades, and downloads."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from db import annotations as annotation_rows
from db import backtests, candles
from pages.common import annotation_frame, annotation_layers, candle_layers, database
from pages.reporting import (
    HEADLINE,
    equity_chart,
    equity_frame,
    label,
    report_html,
    report_json,
    table_labels,
    thin,
    trades_frame,
)

engine = database()
raw = st.query_params.get("id")
rows = backtests.all_(engine)
if not rows:
    st.title("Backtest report")
    st.info("No backtests yet: start one on the Backtest page or with 'Backtest Visible Chart'.")
    st.stop()
ids = [r.id for r in rows]
try:
    wanted = int(raw) if raw is not None else ids[0]
except ValueError:
    st.error(f"?id={raw!r} is not a backtest id.")
    st.stop()
if wanted not in ids:
    st.error(f"There is no backtest {wanted}.")
    st.stop()
chosen = st.selectbox(
    "Report", ids, index=ids.index(wanted), format_func=lambda i: label(backtests.get(engine, i))
)
if chosen != wanted:
    st.query_params["id"] = str(chosen)
row = backtests.get(engine, chosen)
st.title(f"Backtest #{row.id}" + (f" · {row.name}" if row.name else ""))
st.caption(
    f"{row.symbol} {row.timeframe} · {pd.Timestamp(row.start_ts, unit='ms', tz='UTC'):%Y-%m-%d} → "
    f"{pd.Timestamp(row.end_ts, unit='ms', tz='UTC'):%Y-%m-%d} · "
    + (f"checkpoint #{row.checkpoint_id}" if row.checkpoint_id else f"signals {row.signals_name}")
    + f" · fee {row.settings.get('fee_bps')} bps, slippage {row.settings.get('slippage_bps', 0)} bps"
    + (" · long only" if row.settings.get("long_only") else "")
    + f" · by {row.created_by} · status **{row.status}**"
)
if row.status == "running":
    st.info("Still running: see the Backtest page for progress.")
    st.stop()
if row.settings.get("signals_warning"):
    st.warning(row.settings["signals_warning"])
if not row.metrics:
    st.error("This backtest produced no report (it failed or was cancelled before any candle).")
    st.stop()
m = row.metrics
c = st.columns(6)
for col, key in zip(
    c,
    HEADLINE,
    strict=True,
):
    value = m.get(key)
    col.metric(
        key, "—" if value is None else (f"{value:,.2f}" if isinstance(value, float) else value)
    )
eq = equity_frame(row)
st.altair_chart(equity_chart(thin(eq)), width="stretch")

trades = trades_frame(row)
df = candles.load(engine, row.symbol, row.timeframe, row.start_ts, row.end_ts, last=3000)
in_range = len(eq) if len(eq) else len(df)
if in_range > len(df):
    st.caption(f"Candles: showing the last {len(df):,} of {in_range:,}.")
people = annotation_rows.list_for(engine, row.symbol, row.timeframe)  # on every chart
layers = [*annotation_layers(annotation_frame(people, df)), *candle_layers(df)]
if not trades.empty:
    marks = pd.concat(
        [
            pd.DataFrame(
                {
                    "time": pd.to_datetime(trades.entry_time, utc=True),
                    "price": trades.entry_price,
                    "what": "entry " + trades.side,
                }
            ),
            pd.DataFrame(
                {
                    "time": pd.to_datetime(trades.exit_time, utc=True),
                    "price": trades.exit_price,
                    "what": "exit " + trades.side,
                }
            ),
        ]
    )
    marks = marks[marks.time >= df.time.iloc[0]]
    layers.append(
        alt.Chart(marks).mark_point(filled=True, size=70).encode(
            x="time:T", y="price:Q",
            shape=alt.Shape("what:N", scale=alt.Scale(domain=["entry long", "exit long", "entry short", "exit short"], range=["triangle-up", "circle", "triangle-down", "circle"])),
            color=alt.Color("what:N", scale=alt.Scale(domain=["entry long", "exit long", "entry short", "exit short"], range=["#2e7d32", "#1b5e20", "#c62828", "#b71c1c"])),
            tooltip=["what:N", "price:Q", alt.Tooltip("time:T", format="%Y-%m-%d %H:%M")],
        )
    )  # fmt: skip
st.altair_chart(
    alt.layer(*layers)
    .properties(height=380, width="container", title="Candles with entries and exits")
    .interactive(bind_y=False),
    width="stretch",
)

st.subheader("Metrics")
st.table(
    pd.DataFrame(
        {
            "value": [
                ("—" if v is None else (f"{v:,.4f}" if isinstance(v, float) else str(v)))
                for v in m.values()
            ]
        },
        index=table_labels(m),
    )
)
st.subheader(f"Trades ({len(trades)})")
st.dataframe(trades, hide_index=True, width="stretch")
d1, d2, d3 = st.columns(3)
d1.download_button(
    "Download trades (CSV)",
    trades.to_csv(index=False),
    f"backtest-{row.id}-trades.csv",
    "text/csv",
    on_click="ignore",
)
# Built when clicked, not on every rerun: at 100k+ candles the JSON is several MB.
d2.download_button(
    "Download report (JSON)",
    lambda: report_json(row),
    f"backtest-{row.id}.json",
    "application/json",
    on_click="ignore",
)
d3.download_button(
    "Export as HTML",
    lambda: report_html(row),
    f"backtest-{row.id}.html",
    "text/html",
    on_click="ignore",  # a download needs no rerun
)
