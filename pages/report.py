"""One backtest report at its own URL (?id=N): metrics, equity and drawdown, the candles with
entries and exits, the trades, and downloads."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from db import annotations as annotation_rows
from db import backtests, candles
from pages.common import (
    TIME_LABELS,
    annotation_frame,
    annotation_layers,
    candle_layers,
    database,
    md_text,
)
from pages.reporting import (
    HEADLINE,
    equity_chart,
    equity_frame,
    label,
    report_html,
    table_labels,
    thin,
    trades_frame,
    trades_table,
)

engine = database()
raw = st.query_params.get("id")
rows = backtests.all_(engine)
by_id = {r.id: r for r in rows}
# An id that fits a database integer (longer digit strings are no report, not an overflow).
wanted = int(raw) if raw and raw.isascii() and raw.isdecimal() and len(raw) <= 9 else None
if wanted is not None and wanted not in by_id:  # older than the newest 500: still its own URL
    older = backtests.get(engine, wanted)
    by_id.update({wanted: older} if older is not None else {})
if raw is not None and wanted not in by_id:
    # Shown as text: the parameter is whatever the link said (Markdown in it must not render).
    st.error(f"No report with id {md_text(raw)}" + (": pick one below." if rows else "."))
    wanted = None
if not by_id:
    st.title("Backtest report")
    st.info("No backtests yet: start one on the Backtest page or with 'Backtest Visible Chart'.")
    st.stop()
ids = sorted(by_id, reverse=True)
chosen = st.selectbox(
    "Report", ids, index=ids.index(wanted or ids[0]), format_func=lambda i: label(by_id[i])
)
if str(chosen) != raw:
    st.query_params["id"] = str(chosen)
row = by_id[chosen]


def day(ms) -> str:
    return "?" if ms is None else f"{pd.Timestamp(ms, unit='ms', tz='UTC'):%Y-%m-%d}"


settings = row.settings or {}
source = (
    f"checkpoint #{row.checkpoint_id}"
    if row.checkpoint_id
    else f"signals {md_text(row.signals_name or '')}"
)
st.title(f"Backtest #{row.id}" + (f" · {md_text(row.name)}" if row.name else ""))
st.caption(
    f"{md_text(row.symbol)} {md_text(row.timeframe)} · {day(row.start_ts)} → {day(row.end_ts)} · "
    + source
    + f" · fee {settings.get('fee_bps')} bps, slippage {settings.get('slippage_bps', 0)} bps"
    + (" · long only" if settings.get("long_only") else "")
    + f" · by {md_text(row.created_by or 'unknown')} · status **{md_text(row.status)}**"
)
trained = backtests.training_note(settings)
if trained:  # the model learned from the candles it is scored on: say so before any figure
    st.info(md_text(trained[:1].upper() + trained[1:] + "."), icon=":material/model_training:")
if row.status == "running":
    st.info("Still running: see the Backtest page for progress.")
    st.stop()
if settings.get("signals_warning"):
    st.warning(md_text(settings["signals_warning"]))
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

trades = trades_frame(engine, row)
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
    .interactive(bind_y=False)
    .configure_axisTemporal(labelExpr=TIME_LABELS),  # ticks with the year
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
shown, columns = trades_table(trades)
st.dataframe(shown, hide_index=True, width="stretch", column_config=columns)
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
    lambda: backtests.report_json(backtests.report(engine, row.id)),  # as the CLI writes it
    f"backtest-{row.id}.json",
    "application/json",
    on_click="ignore",
)
d3.download_button(
    "Export as HTML",
    lambda: report_html(engine, row),
    f"backtest-{row.id}.html",
    "text/html",
    on_click="ignore",  # a download needs no rerun
)
