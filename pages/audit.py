"""Audit: who did what and how it ended, filtered, counted, charted and downloadable.

Actors, targets and details are text people typed (a failed sign-in records the name typed):
they are shown only as table data, never as Markdown."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import altair as alt
import pandas as pd
import streamlit as st
from sqlalchemy import select

from contract.vocab import AUDIT_OUTCOMES
from db import audit
from db.connection import readonly
from db.models import AuditEvent
from pages.common import allowed, database

engine = database()
st.title("Audit")
if not allowed("audit.read"):
    st.error("Only admins can read the audit log.")
    st.stop()

EVERYONE = "everyone"
ACTIONS = ["all", "signin", "signout", "password", "account", "quota", "session", "backtest",
           "train", "checkpoint", "model", "annotation", "data", "job", "ping", "debug"]  # fmt: skip
LIMITS = [200, 1000, 5000]
OUTCOME_COLORS = alt.Scale(domain=list(AUDIT_OUTCOMES), range=["#90a4ae", "#e53935", "#fb8c00"])
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell


def actors_seen() -> list[str]:
    """Every name the log records, for the filter (read-only; a small distinct query)."""
    q = select(AuditEvent.actor).where(AuditEvent.actor.is_not(None)).distinct()
    with readonly(engine).connect() as conn:
        return sorted(conn.scalars(q.order_by(AuditEvent.actor).limit(2000)))


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


def filters() -> tuple[audit.Filter, int]:
    """The filter row: account, action, outcome, days (UTC, both included) and how many rows."""
    c1, c2, c3, c4, c5, c6 = st.columns([2, 2, 1, 1.3, 1.3, 1])
    actor = c1.selectbox("Account", [EVERYONE, *actors_seen()])
    action = c2.selectbox("Action", ACTIONS, help="A prefix: session matches session.start, …")
    outcome = c3.selectbox("Outcome", ["all", *AUDIT_OUTCOMES])
    today = datetime.now(UTC).date()
    since = c4.date_input("Since (UTC)", today - timedelta(days=7), max_value=today)
    until = c5.date_input("Until (UTC)", today)
    limit = c6.selectbox("At most", LIMITS, index=1)
    if since > until:
        st.error(f"'Since' ({since}) is after 'Until' ({until}): pick a start before the end.")
        st.stop()
    where = audit.Filter(
        actor=None if actor == EVERYONE else actor,
        action=None if action == "all" else action,
        outcome=None if outcome == "all" else outcome,
        since=day_start(since),
        until=day_start(until + timedelta(days=1)),
    )
    return where, limit


def events_frame(rows) -> pd.DataFrame:
    frame = pd.DataFrame(
        [audit.as_dict(r) for r in rows],
        columns=["id", "at", "actor", "action", "target", "outcome", "detail", "address"],
    )
    frame["at"] = pd.to_datetime(frame["at"], utc=True, format="ISO8601")
    return frame


def marked(frame: pd.DataFrame):
    """The table with refusals and failures in capitals and colour, so they stand out."""
    shown = frame.assign(
        outcome=frame.outcome.where(frame.outcome == "ok", frame.outcome.str.upper())
    )
    colors = {"REFUSED": "color: #c62828; font-weight: bold", "FAILED": "color: #ef6c00"}
    return shown.style.map(lambda v: colors.get(v, ""), subset=["outcome"])


def per_day_chart(frame: pd.DataFrame) -> alt.Chart:
    per_day = (
        frame.assign(day=frame["at"].dt.strftime("%Y-%m-%d")).groupby(["day", "outcome"]).size()
    )
    return (
        alt.Chart(per_day.rename("events").reset_index())
        .mark_bar()
        .encode(
            x=alt.X("day:O", title=None, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("events:Q", title="events"),
            color=alt.Color("outcome:N", scale=OUTCOME_COLORS),
            tooltip=["day:O", "outcome:N", "events:Q"],
        )
        .properties(height=160, width="container")
    )


def safe_csv(frame: pd.DataFrame) -> str:
    """The rows as CSV, a cell that starts like a formula prefixed with ' so a spreadsheet
    shows it as text instead of running it (names and details are what people typed)."""
    text = frame.astype({"at": str}).astype(object)
    for col in ("actor", "action", "target", "detail", "address"):
        text[col] = text[col].map(
            lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v
        )
    return text.to_csv(index=False)


where, limit = filters()
frame = events_frame(audit.query(engine, where, limit=limit))
refused = int((frame.outcome == "refused").sum())
more = (
    f" (the newest {limit:,}: narrow the filters to see older ones)" if len(frame) == limit else ""
)
st.markdown(f"**{len(frame):,} events; {refused:,} refused**{more}")
if frame.empty:
    st.stop()
st.altair_chart(per_day_chart(frame), width="stretch")
st.dataframe(
    marked(frame.drop(columns=["id"])),
    hide_index=True,
    width="stretch",
    column_config={
        "at": st.column_config.DatetimeColumn(
            "time (UTC)", format="YYYY-MM-DD HH:mm:ss", timezone="UTC"
        ),
        "actor": "account",
    },  # fmt: skip
)
st.download_button("Download these events (CSV)", safe_csv(frame), "audit.csv", "text/csv",
                   on_click="ignore")  # fmt: skip
