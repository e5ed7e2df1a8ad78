"""Live: run the model on a feed, with or without learning, and watch it candle by candle."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from db import annotations as annotation_rows
from db import bus, candles, training
from db import checkpoints as checkpoint_rows
from db import sessions as session_rows
from db import working_models as working_rows
from db.models import SESSION_MODES
from market import timeframes
from pages.common import (
    DOWN,
    UP,
    annotation_frame,
    annotation_layers,
    candle_layers,
    checkpoint_labels,
    current_user,
    database,
    working_model_labels,
)

engine = database()
st.title("Live")
MODES = {  # titles for the one list of modes (db.models.SESSION_MODES)
    "none": "Live Inference (No Training)",
    "pivots_only": "Live Inference + Pivot Training",
    "every_candle": "Live Inference + Per-Candle Training",
    "manual": "Manual mode (Train on Current Candle)",
}
assert tuple(MODES) == SESSION_MODES
SHORT = {"none": "Inference only", "pivots_only": "Pivot training",
         "every_candle": "Per-candle training", "manual": "Manual"}  # fmt: skip
ACTION_COLORS = alt.Scale(domain=["BUY", "SELL", "HOLD"], range=[UP, DOWN, "#9e9e9e"])
who = current_user()


def command(kind: str, payload: dict) -> dict | None:
    row = bus.wait(engine, bus.submit(engine, kind, payload, created_by=who), 15)
    if row.status == "done":
        return row.result
    st.error(row.error if row.status == "failed" else "The engine did not answer: is it online?")
    return None


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


with st.expander("Start a session", expanded=not session_rows.running(engine)):
    source = st.radio(
        "Feed",
        ["Replay stored candles", "Exchange (ccxt)"],
        horizontal=True,
        help="A replay plays stored candles as if live; an exchange feed polls an exchange "
        "through ccxt (pip install ccxt) and emits each candle once it has closed.",
    )
    c1, c2, c3 = st.columns(3)
    if source == "Replay stored candles":
        sets = candles.datasets(engine)
        if sets.empty:
            st.info("No candles stored: import some on the Data page.")
            st.stop()
        labels = [f"{r.symbol} · {r.timeframe}" for r in sets.itertuples()]
        pick = c1.selectbox("Dataset (replayed as a live feed)", labels, key="live_dataset")
        row = sets.iloc[labels.index(pick)]
        symbol, timeframe = row.symbol, row.timeframe
        pace = c3.number_input(
            "Seconds per candle",
            0.0,
            3600.0,
            1.0,
            0.1,
            help="Replay pace: 1 = one candle a second.",
        )
        last, first = row["last"].to_pydatetime(), row["first"].to_pydatetime()
        start_day = st.date_input(
            "Replay from",
            value=max(first, last - timedelta(days=365)).date(),
            min_value=first.date(),
            max_value=last.date(),
        )
        start_ts = int(datetime.combine(start_day, time.min, UTC).timestamp() * 1000)
        feed = {"kind": "replay", "pace_s": pace, "start_ts": start_ts}
    else:
        exchange = c1.text_input("Exchange (ccxt id)", "binance")
        e1, e2 = c3.columns(2)
        symbol = e1.text_input("Symbol", "BTC/USDT")
        timeframe = e2.text_input("Timeframe", "1m")
        feed = {"kind": "exchange", "exchange": exchange.strip()}
    model = model_choice(c2)
    d2, d3 = st.columns(2)
    fee = d2.number_input("Fee (bps per fill)", 0.0, 1000.0, 10.0, 1.0)
    long_only = d3.checkbox("Long only")
    cols = [c for _ in range(2) for c in st.columns(2)]  # 2 × 2: the full names fit
    for col, (mode, title) in zip(cols, MODES.items(), strict=True):
        if col.button(title, key=f"start_{mode}", disabled=not who or not model, width="stretch"):
            result = command(
                "session.start",
                {"symbol": symbol, "timeframe": timeframe, "mode": mode, **model,
                 "feed": feed, "fee_bps": fee, "long_only": long_only},
            )  # fmt: skip
            if result:
                st.session_state.live_session = result["session_id"]
    if not who:
        st.caption("Enter your name in the sidebar to start sessions.")

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


def chart(sess, preds, pivots, trades) -> alt.LayerChart | None:
    if sess.last_ts is None:
        return None
    df = candles.load(engine, sess.symbol, sess.timeframe, end_ms=sess.last_ts, last=120)
    if df.empty:
        return None
    lo = int(df.ts.iloc[0])
    layers = [
        *annotation_layers(
            annotation_frame(annotation_rows.list_for(engine, sess.symbol, sess.timeframe), df)
        ),
        *candle_layers(df, body=5),
    ]
    if not preds.empty:
        p = preds[preds.ts >= lo].merge(df[["ts", "time", "close", "high", "low"]], on="ts")
        p = p[p.action != "HOLD"]
        if not p.empty:
            p["y"] = p.apply(
                lambda r: r.low * 0.995 if r.action == "BUY" else r.high * 1.005, axis=1
            )
            layers.append(
                alt.Chart(p)
                .mark_point(filled=True, size=60)
                .encode(
                    x="time:T",
                    y="y:Q",
                    color=alt.Color("action:N", scale=ACTION_COLORS, title="prediction"),
                    shape=alt.Shape(
                        "action:N",
                        scale=alt.Scale(
                            domain=["BUY", "SELL"], range=["triangle-up", "triangle-down"]
                        ),
                        legend=None,
                    ),
                    opacity=alt.Opacity(
                        "confidence:Q",
                        scale=alt.Scale(domain=[0.33, 1], range=[0.15, 1]),
                        legend=None,
                    ),
                    tooltip=[
                        "action:N",
                        alt.Tooltip("confidence:Q", format=".2f"),
                        alt.Tooltip("p_buy:Q", format=".2f"),
                        alt.Tooltip("p_sell:Q", format=".2f"),
                        alt.Tooltip("p_hold:Q", format=".2f"),
                    ],
                )
            )
        latest = preds.iloc[-1]
        step = timeframes.interval_ms(sess.timeframe)
        ghost = pd.DataFrame(latest.ghost["ohlc"], columns=["open", "high", "low", "close"])
        ghost["time"] = pd.to_datetime(
            int(latest.ts) + step * (ghost.index + 1), unit="ms", utc=True
        )
        layers += candle_layers(ghost, body=5, opacity=0.35)  # the model's next candles
    if not pivots.empty:
        pv = pivots[pivots.ts >= lo].copy()
        if not pv.empty:
            pv["time"] = pd.to_datetime(pv.ts, unit="ms", utc=True)
            pv["y"] = pv.apply(lambda r: r.price * (1.012 if r.kind == "H" else 0.988), axis=1)
            layers.append(
                alt.Chart(pv)
                .mark_text(fontWeight="bold", fontSize=12)
                .encode(
                    x="time:T",
                    y="y:Q",
                    text="kind:N",
                    color=alt.value("#6a1b9a"),
                    tooltip=["kind:N", "price:Q"],
                )
            )
    if not trades.empty:
        t = trades[trades.exit_ts >= lo]
        marks = pd.concat(
            [
                pd.DataFrame({"ts": t.entry_ts, "price": t.entry_price, "what": "entry " + t.side}),
                pd.DataFrame({"ts": t.exit_ts, "price": t.exit_price, "what": "exit " + t.side}),
            ]
        )
        marks = marks[marks.ts >= lo]
        if not marks.empty:
            marks["time"] = pd.to_datetime(marks.ts, unit="ms", utc=True)
            layers.append(
                alt.Chart(marks)
                .mark_point(shape="diamond", size=80, filled=True, color="#1e88e5")
                .encode(x="time:T", y="price:Q", tooltip=["what:N", "price:Q"])
            )
    return (
        alt.layer(*layers)
        .properties(height=420, width="container", title=f"{sess.symbol} {sess.timeframe}")
        .interactive(bind_y=False)
    )


def model_line(sess) -> str:
    """What the session's predictions come from, in one line."""
    ckpt = checkpoint_rows.get(engine, sess.checkpoint_id)
    if sess.working_model_id is None:
        return f"Model: checkpoint #{ckpt.id} {ckpt.name}, frozen (inference only)."
    w = working_rows.get(engine, sess.working_model_id)
    trained = f"working model W{w.id} {w.name}, started from checkpoint #{ckpt.id}"
    if sess.status != "running":
        return (
            f"Model: {trained}. What the session learned was saved as a checkpoint when it ended."
        )
    step = working_rows.step_count(w, working_rows.latest_step(engine, w.id))
    saved = f"; last saved as checkpoint #{w.last_checkpoint_id}" if w.last_checkpoint_id else ""
    return f"Model: {trained} · now at step {step}{saved}. Save it on the Training page."


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
        st.warning(f"Training on {when} as {action} was skipped: {done.error.iloc[0]}")
    elif done.lost.iloc[0]:
        st.warning(f"Training on {when} as {action} was applied, then lost to an engine crash.")
    else:
        at = done.created_at.iloc[0]
        st.success(
            f"Trained on {when} as {action}: applied {at:%H:%M:%S} UTC (step {done.step.iloc[0]})."
        )


@st.fragment(run_every=1)
def panel(session_id: int) -> None:
    sess = session_rows.get(engine, session_id)
    state = sess.state or {}
    preds = session_rows.predictions(engine, session_id)
    pivots = session_rows.pivots(engine, session_id)
    trades = session_rows.trades(engine, session_id)
    steps = training.count(engine, session_id=session_id, skipped=False)
    pos = {1: "long", -1: "short", 0: "flat"}[state.get("position", 0)]
    m = st.columns(6)
    m[0].metric("Status", sess.status)
    m[1].metric("Candles", sess.candles)
    m[2].metric("Position", pos)
    m[3].metric("Realized PnL", f"{state.get('realized', 0):,.2f}")
    m[4].metric("Unrealized PnL", f"{state.get('unrealized', 0):,.2f}")
    m[5].metric("Equity", f"{state.get('equity', 0):,.2f}")
    m = st.columns(6)
    n_trades = state.get("trades", 0)
    m[0].metric("Mode", SHORT[sess.mode], help=MODES[sess.mode])
    m[1].metric("Trades", n_trades)
    m[2].metric("Win rate", f"{state.get('wins', 0) / n_trades:.0%}" if n_trades else "—")
    m[3].metric("Training steps", steps)
    m[4].metric(
        "Training queue",
        f"{sess.samples_waiting} waiting"
        if sess.working_model_id and sess.status == "running"
        else "—",
        delta=f"{sess.samples_dropped} dropped" if sess.samples_dropped else None,
        delta_color="inverse",
        help="Samples handed to the working model's trainer and not applied yet; when the queue "
        "overflows (a long-held training lock) the oldest are dropped and counted.",
    )
    last = preds.iloc[-1] if not preds.empty else None
    m[5].metric("Prediction", f"{last.action} {last.confidence:.0%}" if last is not None else "—")
    st.caption(model_line(sess))
    manual_status(session_id)
    if sess.error:
        st.error(sess.error)
    c = chart(sess, preds, pivots, trades)
    if c is not None:
        st.altair_chart(c, width="stretch")
        st.caption(
            "Triangles: predictions (shade = confidence) · L / H: confirmed pivots · diamonds: fills · faded candles after the last one: ghost candles (the model's next 5)."
        )
    else:
        st.caption("Waiting for the first candle…")


panel(chosen)

sess = session_rows.get(engine, chosen)
if sess.status == "running":
    c1, c2, c3 = st.columns([3, 1, 1])
    new_mode = c1.selectbox(
        "Switch mode",
        list(MODES),
        index=list(MODES).index(sess.mode),
        format_func=MODES.get,
        key=f"mode_{chosen}",
    )
    apply = c2.button("Apply mode", disabled=not who or new_mode in (None, sess.mode))
    if apply and command("session.set_mode", {"session_id": chosen, "mode": new_mode}):
        st.rerun()
    stop = c3.button("Stop session", type="primary", disabled=not who)
    if stop and command("session.stop", {"session_id": chosen}):
        st.rerun()
    if sess.mode == "manual":
        st.write(
            "**Train on Current Candle** — the latest completed candle, with the action you choose:"
        )
        b1, b2, b3 = st.columns(3)
        for col, action in zip((b1, b2, b3), ("BUY", "SELL", "HOLD"), strict=True):
            if col.button(action, key=f"manual_{action}", disabled=not who, width="stretch"):
                row = bus.wait(engine, bus.submit(engine, "session.train_manual",
                               {"session_id": chosen, "action": action}, created_by=who), 15)  # fmt: skip
                if row.status == "done":  # applied by the trainer: the panel shows when
                    requests = st.session_state.setdefault("manual_requests", {})
                    requests[chosen] = (row.id, action, row.result["candle_ts"])
                    st.rerun()
                st.error(row.error or "The engine did not answer: is it online?")
