"""What every page shares: the database handle, who is at the keyboard, engine status, and the
candlestick chart. Views import `db` and `market`, never the engine's internals."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

import db
from db import engines

UP, DOWN = "#26a69a", "#ef5350"


@st.cache_resource
def database():
    """The process-wide SQLAlchemy engine, schema upgraded (idempotent)."""
    return db.init()


def current_user() -> str | None:
    """The name this browser session gave, or None."""
    name = (st.session_state.get("user_name") or "").strip()
    return name or None


def sidebar() -> None:
    """The name prompt and the engine badge, on every page."""
    with st.sidebar:
        st.text_input(
            "Your name",
            key="user_name",
            placeholder="who is at the desk?",
            help="Given once per browser session; recorded on the commands and data you create.",
        )
        if not current_user():
            st.caption("Enter your name to import data or send commands.")
        engine_badge()


@st.fragment(run_every=2)
def engine_badge() -> None:
    st_ = engines.status(database())
    if st_.online:
        st.markdown(f":green[● engine online] · `{st_.instance.id}`")
    else:
        st.markdown(":red[● engine offline]")


def candle_chart(df: pd.DataFrame, height: int = 380, title: str | None = None) -> alt.VConcatChart:
    """Candles (low–high wick, open–close body) over a volume panel, sharing a zoomable time
    axis. `df` needs columns time, open, high, low, close, volume."""
    n = max(len(df), 1)
    body = max(1.0, min(10.0, 900.0 / n))
    color = alt.condition("datum.open <= datum.close", alt.value(UP), alt.value(DOWN))
    zoom = alt.selection_interval(bind="scales", encodings=["x"])
    base = alt.Chart(df).encode(
        x=alt.X("time:T", title=None),
        tooltip=[
            alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"),
            *(alt.Tooltip(f"{c}:Q", format=",.4~f") for c in ("open", "high", "low", "close")),
            alt.Tooltip("volume:Q", format=",.0f"),
        ],
    )
    wick = base.mark_rule().encode(
        y=alt.Y("low:Q", scale=alt.Scale(zero=False), title="price"), y2="high:Q", color=color
    )
    candles = base.mark_bar(size=body).encode(y="open:Q", y2="close:Q", color=color)
    price = (
        (wick + candles)
        .add_params(zoom)
        .properties(height=height, width="container", title=title or "")
    )
    volume = (
        base.mark_bar(size=body, opacity=0.6)
        .encode(y=alt.Y("volume:Q", title="volume", axis=alt.Axis(format="~s")), color=color)
        .properties(height=max(60, height // 4), width="container")
    )
    return alt.vconcat(price, volume, spacing=4).resolve_scale(x="shared")
