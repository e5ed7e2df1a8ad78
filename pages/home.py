"""Home: is the engine there, what is queued, what data we have, and a look at it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from db import annotations as annotation_rows
from db import bus, candles, engines, jobs
from db.models import utcnow
from pages.commands import answer, send
from pages.common import (
    allowed,
    annotation_frame,
    backtest_visible_chart,
    candle_chart,
    database,
    md_text,
    pick_candles,
)

engine = database()
st.title("Candle Lab")


@st.fragment(run_every=1)
def status_panel() -> None:
    s = engines.status(engine)
    fleet = engines.loads(engine) if s.online else []
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Engines", f"{len(fleet)} online" if s.online else "offline")
    age = f"{s.heartbeat_age_s:.1f} s" if s.heartbeat_age_s is not None else "never"
    c2.metric("Last heartbeat", age)
    c3.metric("Queue depth", bus.queue_depth(engine))
    c4.metric("Running jobs", jobs.running_count(engine))
    if s.online:
        st.dataframe(engine_table(fleet), hide_index=True, width="stretch")
    elif s.instance is None:
        st.warning("No engine has run on this database yet. Start one: `python -m engine`.")
    else:
        why = md_text(s.instance.stop_reason or "heartbeat lost")  # may quote an error's text
        st.warning(f"Engine offline: `{s.instance.id}` — {why}. Start it: `python -m engine`.")
    for row in engines.stopped_since(engine, minutes=10):
        st.caption(f"Engine **{md_text(row.name or row.id)}** (`{row.id}`) stopped at "
                   f"{row.stopped_at:%H:%M:%S} UTC: {md_text(row.stop_reason or '')}")  # fmt: skip


def engine_table(fleet: list[engines.Load]) -> pd.DataFrame:
    """One row per live engine: who it is and the work it owns."""

    def used(n: int, limit: int | None) -> str:
        return f"{n} of {limit}" if limit else str(n)

    now = utcnow()
    return pd.DataFrame(
        [
            {
                "engine": load.row.name or load.row.host,
                "host": load.row.host,
                "sessions": used(load.sessions, load.row.max_sessions),
                "jobs": used(load.jobs, load.row.max_jobs),
                "working models": load.working_models,
                "heartbeat": f"{(now - load.row.last_beat).total_seconds():.1f} s ago",
                "since": load.row.started_at,
                "version": load.row.version,
                "id": load.row.id,
            }
            for load in sorted(fleet, key=lambda load: (load.row.name or "", load.row.id))
        ]
    )


status_panel()

sets = candles.datasets(engine)
st.subheader("Datasets")
if sets.empty:
    st.info(
        "No candles yet. Start the engine (it loads the sample data on first run) or import a CSV on the Data page."
    )
    st.stop()
st.dataframe(
    sets[["symbol", "timeframe", "candles", "first", "last"]],
    hide_index=True,
    width="stretch",
)

st.subheader("Chart")
row, df = pick_candles("home")
if not df.empty:
    anns = annotation_frame(annotation_rows.list_for(engine, row.symbol, row.timeframe), df)
    st.altair_chart(
        candle_chart(df, title=f"{row.symbol} {row.timeframe}", annotations=anns), width="stretch"
    )
    backtest_visible_chart(row, df, "home")

st.subheader("Commands")
c1, c2 = st.columns([1, 4])
if allowed("ping") and c1.button("Ping engine", help="Send a ping through the command bus"):
    send("ping", {}, key="ping")
with c2:
    answer("ping", done=lambda r: f"pong from {r['engine_id']} (its time in the table below)")
recent = bus.recent(engine, limit=20)
if recent:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "id": c.id,
                    "kind": c.kind,
                    "status": c.status,
                    "by": c.created_by,
                    "created": c.created_at,
                    "took ms": round((c.finished_at - c.created_at).total_seconds() * 1000, 1)
                    if c.finished_at
                    else None,
                    "engine": c.claimed_by,
                    "error": c.error,
                }
                for c in recent
            ]
        ),
        hide_index=True,
        width="stretch",
    )
