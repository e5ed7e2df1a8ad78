"""Live: run the model on a feed, with or without learning, and watch it candle by candle."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta

import pandas as pd
import streamlit as st

from contract.vocab import FEE_BPS, SLIPPAGE_BPS
from contract.vocab import MODE_SHORT as SHORT
from contract.vocab import MODE_TITLES as MODES
from db import annotations as annotation_rows
from db import candles, training
from db import checkpoints as checkpoint_rows
from db import sessions as session_rows
from db import working_models as working_rows
from pages import auth
from pages.commands import answer, send
from pages.common import (
    SIDEBAR_REFRESH_S,
    allowed,
    annotations_between,
    checkpoint_labels,
    database,
    look_only,
    md_text,
    shared_read,
    watched,
    working_model_labels,
)
from pages.live_chart import FOLLOW_SHOWN, chart_spec, draw
from pages.stats import Stat, stat_strip

engine = database()
st.title("Live")


def model_choice(col) -> dict:
    """Which model a new session reads: a checkpoint (frozen for inference only; the learning
    modes train a new working model from it) or an existing working model it then shares."""
    source = col.radio(
        "Model", ["Checkpoint", "Working model"], horizontal=True, key="live_model_source",
        help="A checkpoint never changes: Live Inference reads it as stored, and the learning "
        "modes train a new working model started from it. Sessions and jobs on one working "
        "model share its training (one trainer, one lock).",
    )  # fmt: skip
    if source == "Working model":
        working = working_model_labels(engine)
        if not working:
            col.caption("No working models yet: a learning session or a training job makes one.")
            return {}
        picked = col.selectbox("Working model", list(working), format_func=working.get)
        return {"working_model_id": picked}
    names, active = checkpoint_labels(engine)
    picked = col.selectbox(
        "Checkpoint",
        list(names),
        format_func=names.get,
        index=list(names).index(active) if active in names else 0,
    )
    return {"checkpoint_id": picked}


def feed_choice(source: str, c1, c3) -> tuple[str, str, dict]:
    """The symbol, timeframe and feed of a new session: stored candles replayed, or an
    exchange."""
    if source == "Exchange (ccxt)":
        exchange = c1.text_input("Exchange (ccxt id)", "binance")
        e1, e2 = c3.columns(2)
        symbol, timeframe = e1.text_input("Symbol", "BTC/USDT"), e2.text_input("Timeframe", "1m")
        return symbol, timeframe, {"kind": "exchange", "exchange": exchange.strip()}
    sets = candles.datasets(engine)
    if sets.empty:
        st.info("No candles stored: import some on the Data page.")
        st.stop()
    labels = [f"{r.symbol} · {r.timeframe}" for r in sets.itertuples()]
    pick = c1.selectbox("Dataset (replayed as a live feed)", labels, key="live_dataset")
    row = sets.iloc[labels.index(pick)]
    pace = c3.number_input("Seconds per candle", 0.0, 3600.0, 1.0, 0.1,
                           help="Replay pace: 1 = one candle a second.")  # fmt: skip
    last, first = row["last"].to_pydatetime(), row["first"].to_pydatetime()
    start_day = st.date_input(
        "Replay from",
        value=max(first, last - timedelta(days=365)).date(),
        min_value=first.date(),
        max_value=last.date(),
    )
    start_ts = int(datetime.combine(start_day, time.min, UTC).timestamp() * 1000)
    return row.symbol, row.timeframe, {"kind": "replay", "pace_s": pace, "start_ts": start_ts}


def start_panel() -> None:
    """Start a session: a feed, a model, costs, and one button per mode."""
    with st.expander("Start a session", expanded=not session_rows.running(engine)):
        source = st.radio(
            "Feed",
            ["Replay stored candles", "Exchange (ccxt)"],
            horizontal=True,
            help="A replay plays stored candles as if live; an exchange feed polls an exchange "
            "through ccxt (pip install ccxt) and emits each candle once it has closed.",
        )
        c1, c2, c3 = st.columns(3)
        symbol, timeframe, feed = feed_choice(source, c1, c3)
        model = model_choice(c2)
        d1, d2, d3 = st.columns(3)
        fee = d1.number_input("Fee (bps per fill)", 0.0, 1000.0, FEE_BPS, 1.0)
        slip = d2.number_input("Slippage (bps)", 0.0, 1000.0, SLIPPAGE_BPS, 1.0,
                               help="Every fill at a worse price: buys this much higher, sells "
                               "this much lower, as in backtests.")  # fmt: skip
        long_only = d3.checkbox("Long only")
        cols = [c for _ in range(2) for c in st.columns(2)]  # 2 × 2: the full names fit
        for col, (mode, title) in zip(cols, MODES.items(), strict=True):
            if col.button(title, key=f"start_{mode}", disabled=not model, width="stretch"):
                send("session.start",
                     {"symbol": symbol.strip(), "timeframe": timeframe.strip(), "mode": mode,
                      **model, "feed": feed, "fee_bps": fee, "slippage_bps": slip,
                      "long_only": long_only},
                     key="start")  # fmt: skip
        answer("start", done=lambda r: f"Session #{r['session_id']} started.",
               on_done=lambda row: st.session_state.update(live_session=row.result["session_id"]))  # fmt: skip


if allowed("session.start"):
    start_panel()
else:
    look_only()

all_sessions = session_rows.all_(engine)
if not all_sessions:
    st.info("No sessions yet.")
    st.stop()
ids = [s.id for s in all_sessions]
titles = {
    s.id: f"#{s.id} {s.symbol} {s.timeframe} · {MODES[s.mode]} · {s.status}" for s in all_sessions
}
default = st.session_state.get("live_session", ids[0])
chosen = st.selectbox(
    "Session", ids, index=ids.index(default) if default in ids else 0, format_func=titles.get
)
st.session_state.live_session = chosen
costs = next(s for s in all_sessions if s.id == chosen).settings or {}
st.caption(
    f"Fee {costs.get('fee_bps', FEE_BPS):g} bps and slippage {costs.get('slippage_bps', 0):g} "
    "bps per fill" + (" · long only" if costs.get("long_only") else " · long and short")
)


# -- the chart: a view the person chooses, kept while candles arrive -----------------------------
#
# How the zoom survives the panel's redraw every second (Streamlit 1.67, read in its source:
# elements/vega_charts.py and the ArrowVegaLiteChart frontend): st.altair_chart sends the spec
# with each dataframe as a named dataset; the browser renames the datasets by position, and when
# only data changed it swaps the data of the Vega view it has, re-creating the view only when
# the spec itself changed (another domain, a new layer). On each data swap it clears the zoom
# of every interval selection bound to the scales that the chart does not report (`on_select`):
# that is why a plain `.interactive()` chart jumped back every second. A reported selection is
# kept on data swaps, saved under the chart's `key` and put back when the view is re-created,
# and it reaches Python as st.session_state[key].selection.zoom = {"time": [lo_ms, hi_ms]}.
# So: the zoom is a named interval selection reported with on_select. Its callback turns
# Follow off and keeps the range, which Python then draws as the x domain (fitting y and the
# candles it loads to it), so the chosen view holds even when the browser re-creates the view.
# Following, the domains come from the data, so the spec is the same every candle and only the
# data is swapped. Follow on again = a chart under a new key (no zoom to put back); a double
# click (Vega-Lite's zoom reset) clears the selection, which follows again too.


def _views() -> dict[int, tuple[float, float]]:
    """Per session: the x range (ms) the person chose; absent while following."""
    return st.session_state.setdefault("live_view", {})


def _chart_key(session_id: int) -> str:
    """The chart's widget key: a new one (no zoom kept) each time Follow is turned on."""
    gen = st.session_state.setdefault("live_chart_gen", {}).get(session_id, 0)
    return f"live_chart_{session_id}_{gen}"


def _follow_key(session_id: int) -> str:
    return f"live_follow_{session_id}"


def _chose_view(session_id: int, key: str) -> None:
    """The chart's zoom changed (wheel, drag, double click)."""
    if key != _chart_key(session_id):
        return  # the chart that Follow replaced, flushing its last zoom as it goes
    zoom = ((st.session_state.get(key) or {}).get("selection") or {}).get("zoom") or {}
    span = zoom.get("time")
    if span and len(span) == 2:
        _views()[session_id] = (float(span[0]), float(span[1]))
        st.session_state[_follow_key(session_id)] = False
    else:  # the zoom was reset (double click): follow the latest candle again
        _views().pop(session_id, None)
        st.session_state[_follow_key(session_id)] = True


def _follow_changed(session_id: int) -> None:
    if st.session_state[_follow_key(session_id)]:
        _views().pop(session_id, None)
        gens = st.session_state.setdefault("live_chart_gen", {})
        gens[session_id] = gens.get(session_id, 0) + 1  # a new chart: no zoom to put back
    else:  # keep the view as it was last drawn
        drawn = st.session_state.get("live_drawn", {}).get(session_id)
        if drawn is not None:
            _views()[session_id] = drawn


def chart(sess, kept, view) -> tuple[dict | None, str]:
    """The session's candles with what it predicted, confirmed, filled and was taught, as a
    Vega-Lite spec with its data, and a line saying what is shown. Following (`view` None), the
    spec stays the same from candle to candle (the domains follow the data), so the browser
    only swaps the data of the view it has: a wheel or a drag is never lost to a view being
    re-created. The spec is built once per shape (`chart_spec`) and the data once per session,
    moment and view (`draw`): what is new in a second is made once, however many tabs watch."""
    if sess.last_ts is None:
        return None, ""
    # The same session row and rows read so far: the same drawing (what the tab has read is
    # the session's rows up to `seen`, and stored candles never change), made once by the
    # first tab to ask, for every tab; it never goes stale.
    key = ("live drawing", str(engine.url), sess.id, sess.last_ts, kept.seen, view)
    drawn = shared_read(key, lambda _: draw(engine, sess, kept, view), max_age_s=math.inf)
    if drawn is None:
        return None, ""
    st.session_state.setdefault("live_drawn", {})[sess.id] = (drawn.lo, drawn.hi)
    lo, hi = drawn.span
    ann = shared_read(  # read and shaped once for every tab (nobody changes the frame)
        ("annotations", str(engine.url), sess.symbol, sess.timeframe, lo, hi),
        lambda _: annotations_between(
            annotation_rows.overlapping(engine, sess.symbol, sess.timeframe, lo, hi), lo, hi
        ),
    )
    # No annotation in view: no annotation layers, as the chart has always been drawn.
    data = {"annotations": ann, **drawn.datasets} if not ann.empty else drawn.datasets
    spec = chart_spec(f"{sess.symbol} {sess.timeframe}", drawn.domains, drawn.body, not ann.empty)
    return {**spec, "datasets": data}, drawn.caption


def checkpoint_name(checkpoint_id: int) -> str:
    """A checkpoint's name, read once per app process while tabs ask for it (checkpoints never
    change), through `shared_read`: an `st.cache_resource` hit cost about 0.2 ms a run."""
    return shared_read(("checkpoint name", str(engine.url), checkpoint_id),
                       lambda _: checkpoint_rows.get(engine, checkpoint_id).name,
                       max_age_s=math.inf)  # fmt: skip


def model_line(sess, kept) -> str:
    """What the session's predictions come from, in one line of plain text (`kept` holds the
    working model's row and newest step, read with the session's rows)."""
    ckpt = sess.checkpoint_id
    if sess.working_model_id is None:
        return f"Model: checkpoint #{ckpt} {checkpoint_name(ckpt)}, frozen (inference only)."
    w = kept.working
    trained = f"working model W{w.id} {w.name}, started from checkpoint #{ckpt}"
    if sess.status != "running":
        return (
            f"Model: {trained}. What the session learned was saved as a checkpoint when it ended."
        )
    step = working_rows.step_count(w, kept.model_step)
    saved = f"; last saved as checkpoint #{w.last_checkpoint_id}" if w.last_checkpoint_id else ""
    return f"Model: {trained} · now at step {step}{saved}. Save it on the Training page."


def remember_manual(row) -> None:
    """Follow an accepted Train on Current Candle request in the panel."""
    requests = st.session_state.setdefault("manual_requests", {})
    requests[row.result["session_id"]] = (row.id, row.result["action"], row.result["candle_ts"])


def manual_status(session_id: int) -> None:
    """Where this browser's latest Train on Current Candle request stands."""
    request = st.session_state.get("manual_requests", {}).get(session_id)
    if request is None:
        return
    command_id, action, candle_ts = request
    when = f"{pd.Timestamp(candle_ts, unit='ms', tz='UTC'):%Y-%m-%d %H:%M}"
    done = training.frame(engine, limit=1, command_id=command_id)
    if done.empty:
        st.info(f"Training on {when} as {action}: waiting for the training lock…")
    elif done.skipped.iloc[0]:
        st.warning(f"Training on {when} as {action} was skipped: {md_text(done.error.iloc[0])}")
    elif done.lost.iloc[0]:
        st.warning(f"Training on {when} as {action} was applied, then lost to an engine crash.")
    else:
        at = done.created_at.iloc[0]
        st.success(
            f"Trained on {when} as {action}: applied {at:%H:%M:%S} UTC (step {done.step.iloc[0]})."
        )


@st.fragment(run_every=1)
def panel(session_id: int) -> None:
    auth.watch_session(every_s=SIDEBAR_REFRESH_S)  # the sidebar refreshes less often here
    kept = watched(engine, session_id)
    sess = kept.session
    statuses = st.session_state.setdefault("live_status", {})
    was, statuses[session_id] = statuses.get(session_id), sess.status
    if was == "running" and sess.status != "running":
        st.rerun(scope="app")  # the controls below the panel change: draw them again
    state = sess.state or {}
    ended = sess.status != "running"
    pos = {1: "long", -1: "short", 0: "flat"}[state.get("position", 0)]
    last_candle = (
        f"{pd.Timestamp(sess.last_ts, unit='ms', tz='UTC'):%Y-%m-%d %H:%M} UTC"
        if sess.last_ts is not None
        else "—"
    )
    n_trades, last = state.get("trades", 0), kept.latest
    learning = sess.working_model_id and sess.status == "running"
    follow_key = _follow_key(session_id)
    follow = st.session_state.setdefault(follow_key, True)  # the switch below: its state
    c, shown = chart(sess, kept, None if follow else _views().get(session_id))
    stat_strip([
        Stat("Status", sess.status),
        Stat("Candles", sess.candles),
        Stat("Position", f"{pos} (at stop)" if ended else pos,
             help=f"As the session left it at its last candle ({last_candle}): a session that "
             "has ended holds nothing and trades no more." if ended else None),
        Stat("Realized PnL", f"{state.get('realized', 0):,.2f}"),
        Stat("Unrealized PnL", f"{state.get('unrealized', 0):,.2f}",
             help=f"The open position marked at the close of the last candle ({last_candle})"
             + (", when the session ended: it does not move after that." if ended else ".")),
        Stat("Equity", f"{state.get('equity', 0):,.2f}"),
        Stat("Mode", SHORT[sess.mode], help=MODES[sess.mode]),
        Stat("Trades", n_trades),
        Stat("Win rate", f"{state.get('wins', 0) / n_trades:.0%}" if n_trades else "—"),
        Stat("Training steps", kept.steps),
        Stat("Training queue", f"{sess.samples_waiting} waiting" if learning else "—",
             warning=f"{sess.samples_dropped} dropped" if sess.samples_dropped else None,
             help="Samples handed to the working model's trainer and not applied yet; when the "
             "queue overflows (a long-held training lock) the oldest are dropped and counted."),
        Stat("Prediction",
             f"{last['action']} {last['confidence']:.0%}" if last is not None else "—"),
    ], notes=(model_line(sess, kept), shown or "Waiting for the first candle…"))  # fmt: skip
    manual_status(session_id)
    if sess.error:
        st.error(md_text(sess.error))
    st.toggle(
        "Follow the latest candle",
        key=follow_key,
        on_change=_follow_changed,
        args=(session_id,),
        help=f"On: the last {FOLLOW_SHOWN} candles, moving with each new one. Zooming (mouse "
        "wheel) or panning (drag) the chart turns it off and keeps your view while candles "
        "arrive; a double click on the chart, or this switch, follows again.",
    )
    if c is not None:
        key = _chart_key(session_id)
        st.vega_lite_chart(
            spec=c,
            width="stretch",
            key=key,
            on_select=lambda: _chose_view(session_id, key),
            selection_mode=["zoom"],
        )


panel(chosen)
st.caption(  # the same every second: outside the panel, drawn once a page run
    "Triangles: predictions (size = confidence) · L / H: confirmed pivots · diamonds: fills · "
    "rings with B / S / H: manual training labels · faded candles after the last one: ghost "
    "candles (the model's next 5)."
)


def session_controls(sess) -> None:
    """Switch the mode of a running session or stop it: its creator, or an admin."""
    c1, c2, c3 = st.columns([3, 1, 1])
    if allowed("session.set_mode", owner=sess.created_by):
        new_mode = c1.selectbox("Switch mode", list(MODES), index=list(MODES).index(sess.mode),
                                format_func=MODES.get, key=f"mode_{sess.id}")  # fmt: skip
        if c2.button("Apply mode", disabled=new_mode in (None, sess.mode)):
            send("session.set_mode", {"session_id": sess.id, "mode": new_mode},
                 key=f"mode_{sess.id}")  # fmt: skip
    if allowed("session.stop", owner=sess.created_by) and c3.button("Stop session", type="primary"):
        send("session.stop", {"session_id": sess.id}, key=f"stop_{sess.id}")
    answer(f"mode_{sess.id}", done=lambda r: f"Session #{r['session_id']} is now in mode "
           f"{MODES[r['mode']]} from the next candle.")  # fmt: skip


def manual_controls(sess) -> None:
    """Train on Current Candle, in manual mode: the session's creator, or an admin."""
    if sess.mode != "manual" or not allowed("session.train_manual", owner=sess.created_by):
        return
    st.write(
        "**Train on Current Candle** — the latest completed candle, with the action you choose:"
    )
    for col, action in zip(st.columns(3), ("BUY", "SELL", "HOLD"), strict=True):
        if col.button(action, key=f"manual_{action}", width="stretch"):
            send("session.train_manual", {"session_id": sess.id, "action": action},
                 key=f"manual_{sess.id}")  # fmt: skip
    # Accepted means queued for the trainer: the panel above says when it is applied.
    answer(f"manual_{sess.id}", done=lambda r: None, on_done=remember_manual)


def hands_off(sess) -> bool:
    """Whether the signed-in account may change nothing about `sess` (a trader is told why; a
    viewer read it at the top of the page)."""
    kinds = ("session.set_mode", "session.stop", "session.train_manual")
    if any(allowed(kind, owner=sess.created_by) for kind in kinds):
        return False
    if allowed("session.stop"):
        owner = md_text(sess.created_by or "someone else")
        st.caption(f"Session #{sess.id} is {owner}'s: only they or an admin can switch its "
                   "mode, train it by hand or stop it.")  # fmt: skip
    return True


sess = session_rows.get(engine, chosen)
if sess.status == "running" and not hands_off(sess):
    session_controls(sess)
    manual_controls(sess)
answer(f"stop_{chosen}", done=lambda r: f"Session #{r['session_id']} stopped."
       if r.get("stopped") else f"Session #{r['session_id']} is stopping.")  # fmt: skip
