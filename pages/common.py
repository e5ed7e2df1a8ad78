"""What every page shares: the database handle, who is at the keyboard, engine status, and the
candlestick chart. Views import `db` and `market`, never the engine's internals."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from time import monotonic
from typing import TypeVar

import altair as alt
import pandas as pd
import streamlit as st

import db
from contract.access import Actor, can, may_touch
from db import accounts, candles, engines, jobs, quotas
from db import checkpoints as checkpoint_rows
from db import sessions as session_rows
from db import working_models as working_rows
from db.accounts import Refused
from market.files import upload_limit_mb

UP, DOWN = "#26a69a", "#ef5350"
# Time-axis tick labels that carry the year: "05 Mar 2024", "Mar 2024", "2024", or day and hour.
TIME_LABELS = (
    "hours(datum.value) || minutes(datum.value) ? timeFormat(datum.value, '%d %b %H:%M')"
    " : date(datum.value) != 1 ? timeFormat(datum.value, '%d %b %Y')"
    " : month(datum.value) ? timeFormat(datum.value, '%b %Y') : timeFormat(datum.value, '%Y')"
)
VIEWER_NOTE = "Viewers can look but not change anything; ask an admin for the trader role."
MB = 1024 * 1024  # Streamlit's MB, as market/files.py counts it
MAX_CHART_CANDLES = 20_000
PRESETS = {"last 100": 100, "last 250": 250, "last 500": 500, "last 1,000": 1000, "all": None}


@st.cache_resource
def database():
    """The process-wide SQLAlchemy engine, schema upgraded (idempotent)."""
    return db.init()


SESSION_TOKEN = "_signin_token"  # this browser's session token, kept by pages/auth.py


def current_user() -> str | None:
    """The signed-in account's name, or None."""
    actor = current_actor()
    return actor.name if actor else None


def current_actor() -> Actor | None:
    """The signed-in account's name and role, also in fragments and button callbacks, which
    run without the sign-in gate (`signed_in_account`)."""
    account = signed_in_account(st.session_state.get(SESSION_TOKEN))
    return Actor(account.name, account.role) if account else None


_ANY_ROW = object()  # `allowed` asked about an action in general, not about one row


def allowed(action: str, owner: str | None | object = _ANY_ROW) -> bool:
    """Whether to offer `action` (on a row created by `owner`) to the signed-in account. The
    engine and `db/` check again when it happens; this only keeps what cannot work out of
    sight. A row whose creator is unknown (`owner=None`) is an admin's to touch, as `db/` and
    the engine decide it."""
    actor = current_actor()
    if owner is _ANY_ROW:
        return actor is not None and can(actor.role, action)
    return may_touch(actor, action, owner)


def look_only() -> None:
    """In place of an action panel a viewer does not get: one line saying why."""
    st.caption(VIEWER_NOTE)


def upload_limit() -> float:
    """The largest file the signed-in account may upload, in MB: its role's quota, within the
    server's hard cap (server.maxUploadSize)."""
    actor = current_actor()
    role_mb = quotas.limits(database(), actor.role)["upload_mb"] if actor else 0
    return min(role_mb, upload_limit_mb())


def uploaded(label: str, *, type: list[str], key: str, note: str = ""):
    """A file uploader held to the role's upload quota: the file, or None when there is none
    or it is too big (refused before anything reads it, with the limit named)."""
    limit = upload_limit()
    if limit <= 0:
        st.caption(f"{label}: your role's upload limit is 0 MB; ask an admin to raise it.")
        return None
    upload = st.file_uploader(label, type=type, key=key, max_upload_size=max(1, int(limit)),
                              help=f"Up to {limit:g} MB" + (f"; {note}." if note else "."))  # fmt: skip
    if upload is not None and upload.size > limit * MB:
        role = current_actor().role
        st.error(f"{md_text(upload.name)} is {upload.size / MB:,.1f} MB, over the {limit:g} MB "
                 f"upload limit of the {role} role. Split the file, or ask an admin to raise "
                 "the limit.")  # fmt: skip
        return None
    return upload


@contextmanager
def refusal_shown() -> Iterator[None]:
    """Around a write through `db/`: a refusal (a role or an owner changed since the page was
    drawn) shows as an error message, never a traceback."""
    try:
        yield
    except Refused as exc:
        st.error(md_text(str(exc)))


SIDEBAR_REFRESH_S = 2.0  # how often the sidebar checks the sign-in and the engine, per tab


def sidebar(refresh_s: float = SIDEBAR_REFRESH_S) -> None:
    """Who is signed in, the sign-out button and the engine badge, on every page; the badge and
    the sign-in check refresh every `refresh_s` (a page that checks the sign-in more often
    itself may ask for less: each refresh is a script run per open tab)."""
    from pages import auth  # auth imports this module for database()

    with st.sidebar:
        actor = current_actor()
        if actor:
            st.markdown(f"Signed in as **{md_text(actor.name)}** · {actor.role}")
            if st.button("Sign out", key="sign_out", icon=":material/logout:"):
                auth.sign_out()
        st.fragment(refresh_sidebar, run_every=refresh_s)()


def refresh_sidebar() -> None:
    """The sidebar's refresh: one fragment, so a tab costs one script run per refresh for both
    the sign-in check and the badge."""
    from pages import auth

    auth.watch_session()  # first: a failing badge read must not skip it
    engine_badge()


def engine_badge() -> None:
    engine = database()
    st_ = shared_read(("engine status", str(engine.url)), lambda _: engines.status(engine))
    if st_.online:
        st.markdown(f":green[● engine online] · `{st_.instance.id}`")
    else:
        st.markdown(":red[● engine offline]")


SHARED_FOR_S = 0.5  # how long one read serves every tab that asks (shared_read)
FORGET_AFTER_S = 60.0  # a shared read no tab asked for this long is dropped
T = TypeVar("T")


class _Read:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value = None
        self.read_at = self.asked_at = -float("inf")


# This module is imported once per app process (pages are re-run, modules are not), so a plain
# dict here serves every tab; `st.cache_resource` would hash and look up its own key at each of
# the several calls a run makes. Each drawing and its annotations add a key a second per
# session watched: the forgotten ones are swept at most once a second.
_READS_LOCK = threading.Lock()
_READS: dict[tuple, _Read] = {}
_swept_at = -float("inf")


def shared_read(key: tuple, read: Callable[[T | None], T], max_age_s: float = SHARED_FOR_S) -> T:
    """`read(previous)`, shared by every tab of this app process that asks under `key`: a tab
    asking less than `max_age_s` after the last read gets that read's value, so ten tabs
    refreshing every second cost about one read a second, not ten. `read` gets the last value
    (None the first time) to read only what is newer; it must never change that value in
    place (tabs may still hold it): it returns it as it is, or a new object. Keys no tab asked for in FORGET_AFTER_S are dropped."""
    global _swept_at
    reads, now = _READS, monotonic()
    with _READS_LOCK:
        if now - _swept_at >= 1.0:
            for old in [k for k, r in reads.items() if now - r.asked_at > FORGET_AFTER_S]:
                del reads[old]
            _swept_at = now
        entry = reads.setdefault(key, _Read())
        entry.asked_at = now
    with entry.lock:
        if now - entry.read_at >= max_age_s:
            entry.value = read(entry.value)
            entry.read_at = monotonic()
        return entry.value


def signed_in_account(token: str | None, max_age_s: float = SHARED_FOR_S):
    """The enabled account `token` signs in, as the database said at most `max_age_s` ago: an
    expired or ended session, a disabled account or a new role counts within half a second
    (the sign-in gate of each full page run reads afresh, `max_age_s=0`). The read (one
    indexed lookup) is shared by every tab of the browser, which all carry one token: a page
    asks several times a run, and ten Live tabs each check every 2 s."""
    if not token:
        return None
    engine = database()
    return shared_read(("signed in", str(engine.url), token),
                       lambda _: accounts.signed_in(engine, token), max_age_s)  # fmt: skip


def watched(engine, session_id: int) -> session_rows.Kept:
    """The session's rows as read at most SHARED_FOR_S ago, by this tab or another: each read
    adds the rows written since the last one (`db.sessions.keep_up`)."""
    return shared_read(("session rows", str(engine.url), session_id),
                       lambda kept: session_rows.keep_up(engine, session_id, kept))  # fmt: skip


def annotation_frame(rows, df: pd.DataFrame) -> pd.DataFrame:
    """Annotations that overlap the candles in `df`, shaped for `annotation_layers`."""
    if df.empty:
        return pd.DataFrame()
    return annotations_between(rows, int(df["ts"].iloc[0]), int(df["ts"].iloc[-1]))


def annotations_between(rows, lo: int, hi: int) -> pd.DataFrame:
    """Annotations that overlap the candles from `lo` to `hi` (ts), shaped for
    `annotation_layers`."""
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(
        [
            {"id": r.id, "side": r.side, "entry_ts": r.entry_ts, "exit_ts": r.exit_ts,
             "note": r.note or "", "author": r.author or ""}
            for r in rows
            if r.exit_ts >= lo and r.entry_ts <= hi
        ]
    )  # fmt: skip
    if out.empty:
        return out
    out["entry"] = pd.to_datetime(out["entry_ts"], unit="ms", utc=True)
    out["exit"] = pd.to_datetime(out["exit_ts"], unit="ms", utc=True)
    return out


def annotation_layers(ann: pd.DataFrame | alt.Data) -> list:
    """Shaded spans for annotated trades (green long, red short) with entry/exit ticks; `ann`
    may name a dataset the chart is given later."""
    if isinstance(ann, pd.DataFrame) and ann.empty:
        return []
    color = alt.Color(
        "side:N", scale=alt.Scale(domain=["long", "short"], range=[UP, DOWN]), legend=None
    )
    tip = ["id:Q", "side:N", alt.Tooltip("entry:T", format="%Y-%m-%d %H:%M"),
           alt.Tooltip("exit:T", format="%Y-%m-%d %H:%M"), "note:N", "author:N"]  # fmt: skip
    base = alt.Chart(ann)
    span = base.mark_rect(opacity=0.12).encode(x="entry:T", x2="exit:T", color=color, tooltip=tip)
    entry = base.mark_rule(strokeDash=[4, 3], strokeWidth=1.5).encode(x="entry:T", color=color)
    exit_ = base.mark_rule(strokeWidth=1.5).encode(x="exit:T", color=color)
    return [span, entry, exit_]


def candle_layers(
    df: pd.DataFrame | alt.Data, body: float | None = None, opacity: float = 1.0, **bar_encoding
):
    """The two marks of a candlestick (low–high wick, open–close body), colored up / down.
    Returns (wick, body) so a caller can add a selection to the body."""
    body = body or max(1.0, min(12.0, 900.0 / max(len(df), 1)))
    color = alt.condition("datum.open <= datum.close", alt.value(UP), alt.value(DOWN))
    tooltip = [alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"),
               *(alt.Tooltip(f"{c}:Q", format=",.4~f") for c in ("open", "high", "low", "close"))]  # fmt: skip
    base = alt.Chart(df).encode(x=alt.X("time:T", title=None))
    wick = base.mark_rule(opacity=opacity).encode(
        y=alt.Y("low:Q", scale=alt.Scale(zero=False), title="price"), y2="high:Q", color=color
    )
    bars = base.mark_bar(size=body, opacity=opacity).encode(
        y="open:Q", y2="close:Q", color=color, tooltip=tooltip, **bar_encoding
    )
    return wick, bars


def candle_chart(
    df: pd.DataFrame,
    height: int = 380,
    title: str | None = None,
    annotations: pd.DataFrame | None = None,
) -> alt.LayerChart:
    """Candles (low–high wick, open–close body) with volume along the bottom fifth (its own
    scale, no axis) and annotated trades shaded, on one zoomable time axis. `df` needs columns
    time, open, high, low, close, volume. One layered chart rather than price over a separate
    volume panel: Vega-Lite draws a layer inside a vconcat wider than its container."""
    wick, bars = candle_layers(df)
    zoom = alt.selection_interval(bind="scales", encodings=["x"])
    top = float(df.volume.max()) if len(df) and df.volume.max() > 0 else 1.0
    volume = (
        alt.Chart(df)
        .mark_bar(size=max(1.0, min(12.0, 900.0 / max(len(df), 1))), opacity=0.3)
        .encode(
            x=alt.X("time:T", title=None),
            y=alt.Y("volume:Q", scale=alt.Scale(domain=[0, top * 5]), axis=None),
            color=alt.condition("datum.open <= datum.close", alt.value(UP), alt.value(DOWN)),
            tooltip=[
                alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"),
                alt.Tooltip("volume:Q", format=",.0f"),
            ],  # fmt: skip
        )
    )
    shaded = annotation_layers(annotations) if annotations is not None else []
    price = alt.layer(*shaded, wick, bars.add_params(zoom))
    return (
        alt.layer(volume, price)
        .resolve_scale(y="independent")
        .properties(height=height, width="container", title=title or "")
        .configure_axisTemporal(labelExpr=TIME_LABELS)
    )


def pick_candles(key: str, default_range: str = "last 250"):
    """A dataset picker and a range picker (presets or dates); returns (dataset row, candles).
    Stops the page with a message when there is nothing to show."""
    engine = database()
    sets = candles.datasets(engine)
    if sets.empty:
        st.info(
            "No candles yet: start the engine (it loads sample data) or import on the Data page."
        )
        st.stop()
    labels = [f"{r.symbol} · {r.timeframe}" for r in sets.itertuples()]
    c1, c2 = st.columns([2, 3])
    pick = c1.selectbox("Dataset", labels, key=f"{key}_dataset")
    row = sets.iloc[labels.index(pick)]
    preset = c2.segmented_control(
        "Range", [*PRESETS, "dates"], default=default_range, key=f"{key}_range"
    )
    first, last = row["first"].to_pydatetime(), row["last"].to_pydatetime()
    if preset == "dates":
        d0, d1 = st.columns(2)
        start = d0.date_input("From", value=max(first, last - timedelta(days=365)).date(),
                              min_value=first.date(), max_value=last.date(), key=f"{key}_from")  # fmt: skip
        end = d1.date_input("To", value=last.date(), min_value=first.date(),
                            max_value=last.date(), key=f"{key}_to")  # fmt: skip
        if start > end:
            st.error(f"'From' ({start}) is after 'To' ({end}): pick a start before the end.")
            st.stop()
        lo = int(datetime.combine(start, time.min, UTC).timestamp() * 1000)
        hi = int(datetime.combine(end, time.max, UTC).timestamp() * 1000)
        df = candles.load(engine, row.symbol, row.timeframe, lo, hi)
        if len(df) > MAX_CHART_CANDLES:
            st.info(f"{len(df):,} candles in that range; showing the last {MAX_CHART_CANDLES:,}.")
            df = df.iloc[-MAX_CHART_CANDLES:]
    else:
        n = PRESETS.get(preset or default_range)
        df = candles.load(engine, row.symbol, row.timeframe, last=n or MAX_CHART_CANDLES)
    if df.empty:
        st.info("No candles in that range.")
    else:
        st.caption(
            f"{len(df):,} candles, {df.time.iloc[0]:%Y-%m-%d %H:%M} → "
            f"{df.time.iloc[-1]:%Y-%m-%d %H:%M} UTC · drag to pan, scroll to zoom"
        )
    return row, df


def backtest_visible_chart(row, df: pd.DataFrame, key: str) -> None:
    """'Backtest Visible Chart': backtest exactly the candles shown, with the active checkpoint."""
    from pages.commands import answer, send  # it imports this module

    if not allowed("backtest.start"):
        return
    if st.button("Backtest Visible Chart", key=f"{key}_backtest", disabled=df.empty,
                 help="Backtest the candles in this chart's range with the active checkpoint."):  # fmt: skip
        payload = {"symbol": row.symbol, "timeframe": row.timeframe,
                   "start": int(df.ts.iloc[0]), "end": int(df.ts.iloc[-1])}  # fmt: skip
        send("backtest.start", payload, key=f"{key}_backtest")
    answer(f"{key}_backtest", done=backtest_started, on_done=watch_backtest, then=report_links)


def report_links(result: dict) -> None:
    """Where to follow a backtest just started."""
    st.page_link("pages/backtest.py", label="Watch it on the Backtest page")
    st.page_link("pages/report.py", label=f"Open report #{result['backtest_id']} (when it is done)",
                 query_params={"id": result["backtest_id"]})  # fmt: skip


def backtest_started(result: dict) -> str:
    """What a person reads when a backtest job has started."""
    return f"Backtest #{result['backtest_id']} started on {result['candles']:,} candles."


def watch_backtest(row) -> None:
    """Follow the backtest job this browser just started (the Backtest page shows it)."""
    st.session_state.bt_job = row.result["job_id"]


def checkpoint_labels(engine) -> tuple[dict[int, str], int | None]:
    """Every checkpoint as "#N name (active)", newest first, and the active one's id."""
    rows = checkpoint_rows.all_(engine)
    labels = {c.id: f"#{c.id} {c.name}" + (" (active)" if c.is_active else "") for c in rows}
    return labels, next((c.id for c in rows if c.is_active), None)


def working_model_labels(engine) -> dict[int, str]:
    """The working models this account may train or share, as "W3 from checkpoint #1 · ana",
    newest first. Nothing in a label
    changes while it trains: a select box whose labels change forgets what was picked."""
    return {
        w.id: f"W{w.id} {w.name}" + (f" · {w.created_by}" if w.created_by else "")
        for w in working_rows.all_(engine)
        if allowed("model.train", owner=w.created_by)
    }


def rerun_when_job_ends(job) -> None:
    """Call from a polling fragment: when a job this browser saw unfinished has ended, rerun
    the whole page once, so lists, checkpoints and comparisons outside the fragment show the
    truth without a reload."""
    key = f"_job_{job.id}_status"
    seen = st.session_state.get(key)
    st.session_state[key] = job.status
    if seen in jobs.UNFINISHED and job.status not in jobs.UNFINISHED:
        st.rerun(scope="app")


_MARKDOWN_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def md_text(value) -> str:
    """`value` (a name, a file name, a URL parameter: anything a person typed) as Markdown that
    shows exactly those characters: every ASCII punctuation mark is backslash-escaped, which
    CommonMark shows as itself, so `![x](http://…)` is not an image the browser fetches, and
    `<b>`, backticks, `*_[]`, `:red[…]` and `$…$` stay text. Line breaks become spaces (a new
    line could start a heading or a list)."""
    text = " ".join(str(value).splitlines())
    return "".join("\\" + ch if ch in _MARKDOWN_PUNCTUATION else ch for ch in text)
