"""Backtest: start one on any range, watch it, list and compare every report."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pandas as pd
import streamlit as st

from contract import vocab
from db import backtests, candles, jobs
from market import signals as signals_file
from pages.commands import answer, send
from pages.common import (
    allowed,
    backtest_started,
    checkpoint_labels,
    current_user,
    database,
    look_only,
    md_text,
    refusal_shown,
    rerun_when_job_ends,
    uploaded,
    watch_backtest,
)
from pages.reporting import REPORTS_TABLE, comparison_chart, comparison_table, label, reports_frame

engine = database()
st.title("Backtest")


def from_checkpoint() -> dict:
    """Signals from a checkpoint, optionally trained while it backtests."""
    names, active = checkpoint_labels(engine)
    payload = {"checkpoint_id": st.selectbox(
        "Checkpoint", list(names), format_func=names.get,
        index=list(names).index(active) if active in names else 0,
    )}  # fmt: skip
    t1, t2 = st.columns(2)
    learn = t1.selectbox(
        "Train while backtesting",
        ["no", *vocab.BACKTEST_TRAIN_MODES],
        format_func=lambda m: "no" if m == "no" else vocab.MODE_SHORT[m],
        help="Replay the range candle by candle as a live session would, training a copy of "
        "the checkpoint; the checkpoint itself is untouched.",
    )
    if learn != "no":
        payload["train_mode"] = learn
        payload["save_trained"] = t2.checkbox("Save the trained copy as a checkpoint")
    return payload


def from_signals_file() -> dict:
    """Signals from an uploaded timestamp,action file; {} until a good one is there."""
    upload = uploaded(
        "Signals CSV: columns timestamp,action (BUY / SELL / HOLD); candles without a row are HOLD",
        type=["csv"],
        key="bt_signals",
    )
    if upload is None:
        return {}
    try:
        sig = signals_file.read(upload.getvalue())
    except signals_file.SignalsError as exc:
        st.error(f"Cannot use {md_text(upload.name)}: {md_text(str(exc))}")
        return {}
    trading = sig[sig.action != "HOLD"]
    first_last = signals_file.span(sig)
    st.caption(
        f"{len(sig):,} rows, {len(trading):,} BUY / SELL signals"
        + (f", {first_last[0]:%Y-%m-%d %H:%M} → {first_last[1]:%Y-%m-%d %H:%M} UTC"
           if first_last else "")
        + ". A row acts on the candle its time falls in; HOLD rows change nothing."
    )  # fmt: skip
    signals = [[int(t), a] for t, a in zip(trading.ts, trading.action, strict=True)]
    return {"signals": signals, "signals_name": upload.name}


def new_backtest() -> None:
    """The form that starts a backtest (traders and admins)."""
    with st.expander("New backtest", expanded=not backtests.all_(engine, limit=1)):
        sets = candles.datasets(engine)
        if sets.empty:
            st.info("No candles stored: import some on the Data page.")
            st.stop()
        labels = [f"{r.symbol} · {r.timeframe}" for r in sets.itertuples()]
        c1, c2, c3 = st.columns(3)
        pick = c1.selectbox("Dataset", labels, key="bt_dataset")
        row = sets.iloc[labels.index(pick)]
        first, last = row["first"].to_pydatetime(), row["last"].to_pydatetime()
        start = c2.date_input("From", value=max(first, last - timedelta(days=3 * 365)).date(),
                              min_value=first.date(), max_value=last.date(), key="bt_from")  # fmt: skip
        end = c3.date_input("To", value=last.date(), min_value=first.date(),
                            max_value=last.date(), key="bt_to")  # fmt: skip
        source = st.radio(
            "Signals from", ["A checkpoint", "A signals file (timestamp,action)"], horizontal=True
        )
        payload = from_checkpoint() if source == "A checkpoint" else from_signals_file()
        c1, c2, c3, c4, c5 = st.columns(5)
        fee = c1.number_input("Fee (bps per fill)", 0.0, 1000.0, vocab.FEE_BPS, 1.0)
        slip = c2.number_input("Slippage (bps)", 0.0, 1000.0, vocab.SLIPPAGE_BPS, 1.0)
        cash = c3.number_input("Initial cash", 1.0, 1e12, vocab.CASH, 1000.0)
        long_only = c4.checkbox("Long only")
        name = c5.text_input("Name (optional)")
        ready = source == "A checkpoint" or "signals" in payload
        if st.button("Run backtest", type="primary", disabled=not ready):
            payload.update(
                symbol=row.symbol, timeframe=row.timeframe,
                start=int(datetime.combine(start, time.min, UTC).timestamp() * 1000),
                end=int(datetime.combine(end, time.max, UTC).timestamp() * 1000),
                fee_bps=fee, slippage_bps=slip, cash=cash, long_only=long_only,
                name=name or None,
            )  # fmt: skip
            send("backtest.start", payload, key="backtest")
        answer("backtest", done=backtest_started, on_done=watch_backtest)


if allowed("backtest.start"):
    new_backtest()
else:
    look_only()


@st.fragment(run_every=1)
def progress() -> None:
    runs = jobs.recent_of(engine, "backtest", limit=1)
    job = (
        jobs.get(engine, st.session_state["bt_job"])
        if st.session_state.get("bt_job")
        else (runs[0] if runs else None)
    )
    if job is None:
        return
    rerun_when_job_ends(job)
    bid = (job.result or {}).get("backtest_id")
    st.progress(
        min(1.0, job.progress),
        text=f"Backtest {f'#{bid}' if bid else f'job {job.id}'} · {job.status} · "
        f"{job.progress:.0%} · {job.message or ''}",
    )
    cancel = job.status in jobs.UNFINISHED and allowed("job.cancel", owner=job.created_by)
    if cancel and st.button("Cancel backtest", key=f"bt_cancel_{job.id}"):
        with refusal_shown():
            jobs.request_cancel(engine, job.id, by=current_user())
    if bid and job.status not in jobs.UNFINISHED:
        st.page_link("pages/report.py", label=f"Open report #{bid}", query_params={"id": bid})


progress()

st.subheader("Reports")
rows = backtests.all_(engine)
if not rows:
    st.caption("None yet.")
    st.stop()
table = reports_frame(rows)
f1, f2 = st.columns(2)
symbols = f1.multiselect("Filter by symbol", sorted(table.symbol.unique()))
people = f2.multiselect("Filter by person", sorted(table.by.dropna().unique()))
mask = pd.Series(True, index=table.index)
if symbols:
    mask &= table.symbol.isin(symbols)
if people:
    mask &= table.by.isin(people)
shown = table[mask]
st.dataframe(shown, hide_index=True, width="stretch", **REPORTS_TABLE)

st.subheader("Compare")
picked = st.multiselect(
    "Reports to compare",
    shown.id.tolist(),
    default=shown.id.tolist()[:2],
    format_func=lambda i: label(backtests.get(engine, i)),
)
if len(picked) >= 2:
    compared = [backtests.get(engine, b) for b in picked]
    chart = comparison_chart(compared)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    st.table(comparison_table(compared))
