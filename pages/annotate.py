"""Annotate: mark trades on the chart (click the entry candle, then the exit candle), list,
edit (side, note, entry and exit), delete, undo, export and import them.

The chart and the entry / exit / save controls are one fragment: a click on a candle reruns
that fragment alone, not the page. A save, an edit or an undo reruns the page so the list and
the chart's annotations show it."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from contract.vocab import SIDES
from db import annotations as annotation_rows
from db.accounts import Refused
from pages.common import (
    allowed,
    annotation_frame,
    annotation_layers,
    backtest_visible_chart,
    candle_layers,
    current_user,
    database,
    look_only,
    md_text,
    pick_candles,
    uploaded,
)

engine = database()
st.title("Annotate")
if allowed("annotation.create"):
    st.write(
        "Click a candle to set the **entry**, then another to set the **exit**; choose long or "
        "short and save (**Ctrl+Enter**). A third click starts over; **Esc** clears."
    )

row, df = pick_candles("ann", default_range="last 100")
if df.empty:
    st.stop()
symbol, timeframe = row.symbol, row.timeframe
state = st.session_state
key = f"{symbol}|{timeframe}"
if state.get("ann_current") != key:
    state.ann_current, state.ann_entry, state.ann_exit = key, None, None
state.setdefault("ann_saves", 0)  # part of the side / note keys: new widgets start blank
state.setdefault("ann_clicks", 0)  # part of the chart's key: a new chart forgets the last click
state.setdefault("ann_undo", [])  # what Undo reverses, newest last: (what, id, before)


def fmt(ts: int | None) -> str:
    return "—" if ts is None else f"{pd.Timestamp(ts, unit='ms', tz='UTC'):%Y-%m-%d %H:%M}"


def flash(message: str, error: bool = False) -> None:
    """A message shown once, after the rerun that follows a change."""
    state.ann_flash = (message, error)


def save_new() -> None:
    """Store the marked trade; reset the marks, side and note for the next one."""
    side = state[f"ann_side_{state.ann_saves}"]
    note = state[f"ann_note_{state.ann_saves}"]
    try:
        aid = annotation_rows.create(
            engine,
            annotation_rows.AnnotationIn(symbol, timeframe, state.ann_entry, state.ann_exit,
                                         side, note or None),
            author=current_user(),
        )  # fmt: skip
    except (annotation_rows.BadAnnotation, Refused) as exc:
        state.ann_error = str(exc)
        return
    lo, hi = sorted((state.ann_entry, state.ann_exit))
    state.ann_undo.append(("create", aid, None))
    flash(f"Saved annotation {aid}: {side} {fmt(lo)} → {fmt(hi)}.")
    state.ann_entry = state.ann_exit = None
    state.ann_saves += 1
    state.ann_changed = True


def clear_marks() -> None:
    state.ann_entry = state.ann_exit = None


def marking_chart(existing) -> alt.LayerChart:
    """Candles, stored annotations, and the entry / exit marked so far."""
    pick = alt.selection_point(name="candle", fields=["ts"], on="click", nearest=True, empty=False)
    wick, bars = candle_layers(
        df,
        stroke=alt.condition(pick, alt.value("black"), alt.value(None)),
        strokeWidth=alt.value(2),
    )
    layers = [*annotation_layers(annotation_frame(existing, df)), wick, bars.add_params(pick)]
    picked = pd.DataFrame(
        [{"time": pd.Timestamp(ts, unit="ms", tz="UTC"), "what": what}
         for ts, what in ((state.ann_entry, "entry"), (state.ann_exit, "exit")) if ts is not None]
    )  # fmt: skip
    if not picked.empty:
        layers.append(alt.Chart(picked).mark_rule(color="#1e88e5", strokeWidth=2)
                      .encode(x="time:T", tooltip=["what:N"]))  # fmt: skip
        layers.append(alt.Chart(picked).mark_text(color="#1e88e5", dy=-6, baseline="bottom")
                      .encode(x="time:T", y=alt.value(0), text="what:N"))  # fmt: skip
    return alt.layer(*layers).properties(
        height=420, width="container", title=f"{symbol} {timeframe}"
    )


def take_click(event) -> None:
    """Entry on the first click, exit on the second, a new entry on the third."""
    selection = event.get("selection", {}) if isinstance(event, dict) else event.selection
    clicked = selection.get("candle") or []
    if not clicked:
        return
    ts = int(clicked[0]["ts"])
    state.ann_clicks += (
        1  # the next chart starts with no selection: the same candle can be clicked again
    )
    if state.ann_entry is None or state.ann_exit is not None:
        state.ann_entry, state.ann_exit = ts, None
    elif ts != state.ann_entry:
        state.ann_exit = ts
    st.rerun(scope="fragment")


@st.fragment
def marker() -> None:
    if state.pop("ann_changed", False):
        st.rerun(scope="app")  # the list below and other pages' views show the new annotation
    existing = annotation_rows.list_for(engine, symbol, timeframe)
    if not allowed("annotation.create"):
        st.altair_chart(marking_chart(existing), width="stretch")
        look_only()
        return
    event = st.altair_chart(marking_chart(existing), on_select="rerun", key=f"ann_chart_{key}_{state.ann_clicks}",
                            selection_mode="candle", width="stretch")  # fmt: skip
    take_click(event)
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    c1.metric("Entry", fmt(state.ann_entry))
    c2.metric("Exit", fmt(state.ann_exit))
    c3.radio("Side", list(SIDES), horizontal=True, key=f"ann_side_{state.ann_saves}")
    c4.button("Clear", on_click=clear_marks, shortcut="Esc")
    st.text_input("Note", key=f"ann_note_{state.ann_saves}", placeholder="why this trade?")
    ready = state.ann_entry is not None and state.ann_exit is not None
    st.button("Save annotation", type="primary", disabled=not ready, on_click=save_new,
              shortcut="Ctrl+Enter")  # fmt: skip
    if error := state.pop("ann_error", None):
        st.error(md_text(error))


marker()
backtest_visible_chart(row, df, "ann")
if flashed := state.pop("ann_flash", None):
    message, error = flashed
    (st.error if error else st.success)(md_text(message))


def editable(rows) -> pd.DataFrame:
    """The list as the editor shows it: entry and exit as times a person can change."""
    table = annotation_rows.to_frame(rows)
    for col in ("start", "end"):
        table[col] = pd.to_datetime(table[col], utc=True)
    table["note"] = table["note"].fillna("")  # an empty note reads as empty, not "None"
    return table


def to_ms(value) -> int:
    """An editor cell's time (aware or naive UTC) as epoch ms."""
    ts = pd.Timestamp(value)
    return int((ts.tz_localize("UTC") if ts.tzinfo is None else ts).value // 1_000_000)


def changes_of(before, after) -> dict:
    """The fields of one row a person changed in the editor, as `annotation_rows.edit` takes."""
    out = {}
    if before.label != after.label:
        out["side"] = after.label
    if (before.note or "") != (after.note or ""):
        out["note"] = after.note or None
    if to_ms(before.start) != to_ms(after.start):
        out["entry_ts"] = to_ms(after.start)
    if to_ms(before.end) != to_ms(after.end):
        out["exit_ts"] = to_ms(after.end)
    return out


def save_edits(table: pd.DataFrame, edited: pd.DataFrame) -> None:
    """Apply every changed row, or none: each is checked before the first is written."""
    edits = []
    for before, after in zip(table.itertuples(), edited.itertuples(), strict=True):
        if fields := changes_of(before, after):
            prior = annotation_rows.get(engine, int(before.id))
            values = {"side": prior.side, "note": prior.note,
                      "entry_ts": prior.entry_ts, "exit_ts": prior.exit_ts}  # fmt: skip
            try:
                annotation_rows.AnnotationIn(symbol, timeframe, **{**values, **fields}).check()
            except annotation_rows.BadAnnotation as exc:
                raise annotation_rows.BadAnnotation(f"annotation {before.id}: {exc}") from None
            edits.append((int(before.id), fields, values))
    done = []
    for aid, fields, values in edits:
        try:
            annotation_rows.edit(engine, aid, by=current_user(), **fields)
        except Refused as exc:
            saved = f" (saved: {', '.join(done)})" if done else ""
            flash(f"Annotation {aid} not saved{saved}: {exc}", error=True)
            return
        state.ann_undo.append(("edit", aid, values))
        done.append(str(aid))
    flash(f"Updated annotation(s) {', '.join(done)}." if edits else "Nothing was changed.")


def undo() -> None:
    """Reverse this browser's latest save, edit or delete."""
    if not state.ann_undo:
        flash("Nothing to undo.")
        return
    what, aid, before = state.ann_undo.pop()
    try:
        if what == "create":
            annotation_rows.delete(engine, aid, by=current_user())
        elif what == "edit":
            annotation_rows.edit(engine, aid, by=current_user(), **before)
        else:
            annotation_rows.restore(engine, aid, by=current_user())
    except (annotation_rows.BadAnnotation, Refused) as exc:
        flash(f"Could not undo the {what} of annotation {aid}: {exc}", error=True)
        return
    flash(f"Undid the {what} of annotation {aid}.")


TIMES = {  # the list's entry and exit columns, in the editor and in the read-only table
    "start": st.column_config.DatetimeColumn("entry", format="YYYY-MM-DD HH:mm", timezone="UTC",
                                             required=True),
    "end": st.column_config.DatetimeColumn("exit", format="YYYY-MM-DD HH:mm", timezone="UTC",
                                           required=True),
}  # fmt: skip


def editor(rows) -> None:
    """The rows this account may change, editable, with Save edits and Delete."""
    table = editable(rows)
    edited = st.data_editor(
        table,
        hide_index=True,
        width="stretch",
        disabled=["id", "symbol", "timeframe", "author"],
        column_config={
            "label": st.column_config.SelectboxColumn("label", options=list(SIDES),
                                                      required=True),
            **TIMES,
        },
        key=f"ann_editor_{key}",
    )  # fmt: skip
    e1, e2, _ = st.columns(3)
    if e1.button("Save edits"):
        try:
            save_edits(table, edited)
        except annotation_rows.BadAnnotation as exc:
            flash(f"Nothing saved: {exc}", error=True)
        st.rerun()
    to_delete = e2.selectbox("Delete annotation", table["id"].tolist(), index=None,
                             placeholder="id…", label_visibility="collapsed")  # fmt: skip
    if e2.button("Delete", disabled=to_delete is None):
        delete(int(to_delete))


def delete(aid: int) -> None:
    """Hide one annotation (Undo brings it back), then redraw the page."""
    try:
        annotation_rows.delete(engine, aid, by=current_user())
    except Refused as exc:
        flash(str(exc), error=True)
    else:
        state.ann_undo.append(("delete", aid, None))
        flash(f"Deleted annotation {aid}. Undo brings it back.")
    st.rerun()


def annotation_list(rows) -> None:
    """Every annotation of this dataset: the ones this account may change in an editor (its
    own; all, for an admin), the others as a table."""
    ours = {r.id for r in rows if allowed("annotation.edit", owner=r.author)}
    others = [r for r in rows if r.id not in ours]
    if ours:
        editor([r for r in rows if r.id in ours])
    if others:
        if allowed("annotation.edit"):
            st.caption("Others' annotations: only their author or an admin can change them.")
        st.dataframe(editable(others), hide_index=True, width="stretch", column_config=TIMES)


st.subheader(f"Annotations · {symbol} {timeframe}")
existing = annotation_rows.list_for(engine, symbol, timeframe)
if existing:
    annotation_list(existing)
else:
    st.caption("None yet.")
if allowed("annotation.create") and st.button(
    "Undo",
    disabled=not state.ann_undo,
    help="Reverse your latest save, edit or delete on this page.",
):  # a viewer read why not under the chart
    undo()
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
upload = (
    uploaded("Import annotations (CSV or JSON exported here)", type=["csv", "json"],
             key="ann_import")
    if allowed("annotation.import")
    else None
)  # fmt: skip
if upload is not None and st.button("Import"):
    try:  # every file problem is a BadAnnotation naming the row; authored by who imports
        frame = annotation_rows.read_file(upload.getvalue(), upload.name)
        ids = annotation_rows.import_frame(engine, frame, author=current_user())
    except (annotation_rows.BadAnnotation, Refused) as exc:
        st.error(f"Nothing imported: {md_text(str(exc))}")
    else:
        st.success(
            f"Imported {len(ids)} annotation(s); {len(frame) - len(ids)} were already stored."
        )
