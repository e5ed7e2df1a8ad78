"""Annotate: mark trades on the chart (click the entry candle, then the exit candle), list,
edit, delete with undo, export and import them."""

from __future__ import annotations

import io
import json

import altair as alt
import pandas as pd
import streamlit as st

from db import annotations as annotation_rows
from pages.common import (
    annotation_frame,
    annotation_layers,
    backtest_visible_chart,
    candle_layers,
    current_user,
    database,
    pick_candles,
)

engine = database()
st.title("Annotate")
st.write(
    "Click a candle to set the **entry**, then another to set the **exit**; choose long or short and save. A third click starts over."
)

row, df = pick_candles("ann", default_range="last 100")
if df.empty:
    st.stop()
symbol, timeframe = row.symbol, row.timeframe
state = st.session_state
key = f"{symbol}|{timeframe}"
if state.get("ann_current") != key:
    state.ann_current, state.ann_entry, state.ann_exit, state.ann_last_click = key, None, None, None

existing = annotation_rows.list_for(engine, symbol, timeframe)
ann = annotation_frame(existing, df)

pick = alt.selection_point(name="candle", fields=["ts"], on="click", nearest=True, empty=False)
wick, bars = candle_layers(
    df, stroke=alt.condition(pick, alt.value("black"), alt.value(None)), strokeWidth=alt.value(2)
)
bars = bars.add_params(pick)
layers = [*annotation_layers(ann), wick, bars]
marks = [(state.ann_entry, "entry"), (state.ann_exit, "exit")]
picked = pd.DataFrame(
    [
        {"time": pd.Timestamp(ts, unit="ms", tz="UTC"), "what": what}
        for ts, what in marks
        if ts is not None
    ]
)
if not picked.empty:
    layers.append(
        alt.Chart(picked)
        .mark_rule(color="#1e88e5", strokeWidth=2)
        .encode(x="time:T", tooltip=["what:N"])
    )
    layers.append(
        alt.Chart(picked)
        .mark_text(color="#1e88e5", dy=-6, baseline="bottom")
        .encode(x="time:T", y=alt.value(0), text="what:N")
    )
chart = alt.layer(*layers).properties(height=420, width="container", title=f"{symbol} {timeframe}")
event = st.altair_chart(
    chart, on_select="rerun", key=f"ann_chart_{key}", selection_mode="candle", width="stretch"
)

backtest_visible_chart(row, df, "ann")
clicked = (event.get("selection", {}) if isinstance(event, dict) else event.selection).get(
    "candle"
) or []
if clicked:
    ts = int(clicked[0]["ts"])
    if ts != state.ann_last_click:
        state.ann_last_click = ts
        if state.ann_entry is None or state.ann_exit is not None:
            state.ann_entry, state.ann_exit = ts, None
        elif ts != state.ann_entry:
            state.ann_exit = ts
        st.rerun()


def fmt(ts: int | None) -> str:
    return "—" if ts is None else f"{pd.Timestamp(ts, unit='ms', tz='UTC'):%Y-%m-%d %H:%M}"


c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
c1.metric("Entry", fmt(state.ann_entry))
c2.metric("Exit", fmt(state.ann_exit))
side = c3.radio("Side", ["long", "short"], horizontal=True, key="ann_side")
if c4.button("Clear"):
    state.ann_entry = state.ann_exit = None
    st.rerun()
note = st.text_input("Note", key="ann_note", placeholder="why this trade?")
who = current_user()
ready = state.ann_entry is not None and state.ann_exit is not None
if st.button(
    "Save annotation",
    type="primary",
    disabled=not (ready and who),
    help=None if who else "Enter your name in the sidebar first.",
):
    try:
        aid = annotation_rows.create(
            engine,
            annotation_rows.AnnotationIn(
                symbol, timeframe, state.ann_entry, state.ann_exit, side, note or None
            ),
            author=who,
        )
    except annotation_rows.BadAnnotation as exc:
        st.error(str(exc))
    else:
        state.ann_entry = state.ann_exit = None
        state.ann_flash = f"Saved annotation {aid}: {side} {fmt(min(marks[0][0], marks[1][0]))} → {fmt(max(marks[0][0], marks[1][0]))}."
        st.rerun()
if flash := state.pop("ann_flash", None):
    st.success(flash)

st.subheader(f"Annotations · {symbol} {timeframe}")
table = annotation_rows.to_frame(existing)
if table.empty:
    st.caption("None yet.")
else:
    edited = st.data_editor(
        table,
        hide_index=True,
        width="stretch",
        disabled=["id", "start", "end", "symbol", "timeframe", "author"],
        column_config={
            "label": st.column_config.SelectboxColumn(
                "label", options=["long", "short"], required=True
            )
        },
        key=f"ann_editor_{key}",
    )
    e1, e2, e3 = st.columns(3)
    if e1.button("Save edits", disabled=not who):
        changed = 0
        for before, after in zip(table.itertuples(), edited.itertuples(), strict=True):
            if (before.label, before.note or "") != (after.label, after.note or ""):
                annotation_rows.edit(
                    engine, int(before.id), side=after.label, note=after.note or None
                )
                changed += 1
        st.success(f"{changed} annotation(s) updated.")
        st.rerun()
    to_delete = e2.selectbox(
        "Delete annotation",
        table["id"].tolist(),
        index=None,
        placeholder="id…",
        label_visibility="collapsed",
    )
    if e2.button("Delete", disabled=to_delete is None or not who):
        annotation_rows.delete(engine, int(to_delete), by=who)
        state.ann_flash = f"Deleted annotation {to_delete}. Use Undo to bring it back."
        st.rerun()
    if e3.button("Undo last delete", disabled=not who):
        restored = annotation_rows.undo_delete(engine, by=who)
        state.ann_flash = f"Restored annotation {restored}." if restored else "Nothing to undo."
        st.rerun()

st.subheader("Export / import")
everything = annotation_rows.to_frame(annotation_rows.list_for(engine)).drop(columns=["id"])
x1, x2 = st.columns(2)
x1.download_button(
    "Download all as CSV",
    everything.to_csv(index=False),
    "annotations.csv",
    "text/csv",
    on_click="ignore",
)
x2.download_button(
    "Download all as JSON",
    json.dumps(everything.to_dict("records"), indent=1),
    "annotations.json",
    "application/json",
    on_click="ignore",
)
upload = st.file_uploader(
    "Import annotations (CSV or JSON exported here)", type=["csv", "json"], key="ann_import"
)
if upload is not None and st.button("Import", disabled=not who):
    try:
        frame = (
            pd.DataFrame(json.loads(upload.getvalue()))
            if upload.name.endswith(".json")
            else pd.read_csv(io.BytesIO(upload.getvalue()))
        )
        ids = annotation_rows.import_frame(engine, frame, author=who)
    except (annotation_rows.BadAnnotation, ValueError) as exc:
        st.error(f"Nothing imported: {exc}")
    else:
        st.success(
            f"Imported {len(ids)} annotation(s); {len(frame) - len(ids)} were already stored."
        )
