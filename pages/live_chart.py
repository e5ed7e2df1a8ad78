"""The Live chart: its data for one session at one moment (`draw`) and its Vega-Lite spec
(`chart_spec`), whose layers read those datasets by name.

A module of its own, imported once per app process: what it keeps (the spec per shape, and
through `pages.common.shared_read` the candles each session's chart drew last) serves every
tab, in plain Python caches. A hit
through `st.cache_resource`, which hashes its arguments its own way, cost about a millisecond
a run, and every tab asks every second. `bench/live_page.py` times a drawing.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import altair as alt
import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Engine
from streamlit import dataframe_util

from contract.vocab import ACTIONS
from db import candles
from market import timeframes
from pages.common import DOWN, TIME_LABELS, UP, annotation_layers, candle_layers, shared_read

FOLLOW_SHOWN = 120  # candles drawn (and shown) when following the latest one
MAX_DRAWN = 1500  # candles drawn at most for a chosen view
HELD = 2 * FOLLOW_SHOWN  # candles kept per session followed: tabs a candle behind draw from them
ACTION_COLORS = alt.Scale(domain=list(ACTIONS), range=[UP, DOWN, "#9e9e9e"])
DARK = "#263238"


def _following(engine: Engine, sess) -> dict[str, np.ndarray]:
    """The last FOLLOW_SHOWN candles up to the session's last one, sliced from the HELD last
    drawn for it (by any tab of this app process, kept as a shared read: forgotten once no tab
    has asked for them in a while), with only the newer ones read (stored candles never change;
    a feed adds them in order)."""
    held = shared_read(("followed candles", str(engine.url), sess.id),
                       lambda held: _caught_up(engine, sess, held), max_age_s=0)  # fmt: skip
    end = int(np.searchsorted(held["ts"], sess.last_ts, "right"))
    return {c: values[max(0, end - FOLLOW_SHOWN) : end] for c, values in held.items()}


def _caught_up(engine: Engine, sess, held: dict | None) -> dict[str, np.ndarray]:
    """`held` serving `sess.last_ts`: as it is when it reaches that candle with FOLLOW_SHOWN
    before it (tabs a moment apart hold session rows a candle or two apart, and draw in either
    order), extended by the newer candles, or read again."""
    if held is not None and len(held["ts"]):
        newest = int(held["ts"][-1])
        if newest < sess.last_ts:
            new = candles.recent(engine, sess.symbol, sess.timeframe, HELD, sess.last_ts,
                                 after_ms=newest)  # fmt: skip
            return {c: np.concatenate([held[c], new[c]])[-HELD:] for c in held}
        end = int(np.searchsorted(held["ts"], sess.last_ts, "right"))
        # Fewer than HELD held: they start at the dataset's first candle.
        if end >= FOLLOW_SHOWN or len(held["ts"]) < HELD:
            return held  # arrays are never changed in place
    return candles.recent(engine, sess.symbol, sess.timeframe, HELD, sess.last_ts)


def _window(engine: Engine, sess, view) -> tuple[dict[str, np.ndarray], float, float, str]:
    """The candles to draw (`candles.recent`'s arrays), the x range they are shown in (ms) and
    a note on what is shown: the last FOLLOW_SHOWN when following (`view` None), else those
    around the chosen view."""
    step = timeframes.interval_ms(sess.timeframe)
    if view is None:
        columns = _following(engine, sess)
        ts = columns["ts"]
        lo, hi = (ts[0] - step / 2, sess.last_ts + step * 5.5) if len(ts) else (0, 0)
        return columns, lo, hi, "following the latest candle"
    lo, hi = view
    width = max(hi - lo, step)
    # At most MAX_DRAWN candles read, however far the person zoomed out: the newest of the view
    # and its margin, never a live feed's newer candle (not the session's yet).
    end = int(min(hi + width / 2, sess.last_ts)) if sess.last_ts is not None else int(hi)
    columns = candles.recent(engine, sess.symbol, sess.timeframe, MAX_DRAWN, end,
                             start_ms=int(lo - width / 2))  # fmt: skip
    note = "your view: it stays while candles arrive"
    if len(columns["ts"]) == MAX_DRAWN and columns["ts"][0] > lo:
        note += f"; the newest {MAX_DRAWN:,} candles of it drawn"
    return columns, lo, hi, note


def _iso(ms: float) -> str:
    """A time for a time scale's domain (this Vega-Lite reads numbers there as NaN)."""
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


class Drawn(NamedTuple):
    """What the chart shows of a session at one moment in one view, but the annotations:
    its datasets as the Arrow bytes Streamlit sends, and how to draw them."""

    datasets: dict[str, bytes]
    domains: tuple[str, str, float, float] | None  # the chosen view's x and y; None following
    body: float  # candle width (px)
    lo: float  # the x range shown (ms)
    hi: float
    span: tuple[int, int]  # the first and the last candle drawn (ts; annotations overlapping)
    caption: str


def draw(engine: Engine, sess, kept, view) -> Drawn | None:
    """The chart's data for `sess` as `kept` (db.sessions.Kept) holds it, in `view` (None:
    following, else the chosen x range in ms): plain array work on the rows in the window
    (this runs once a candle for each session watched, for every tab watching it)."""
    columns, lo, hi, note = _window(engine, sess, view)
    if not len(columns["ts"]):
        return None
    step = timeframes.interval_ms(sess.timeframe)
    ts, high, low = columns["ts"], columns["high"], columns["low"]
    latest = kept.latest
    ohlc = np.asarray(latest["ghost"]["ohlc"] if latest else [], dtype=float).reshape(-1, 4)
    g_ts = (int(latest["ts"]) if latest else 0) + step * np.arange(1, len(ohlc) + 1)
    # y: the candles and ghost candles inside the x range shown (all candles if none is)
    all_ts, all_hi, all_lo = (np.concatenate(pair) for pair in
                              ((ts, g_ts), (high, ohlc[:, 1]), (low, ohlc[:, 2])))  # fmt: skip
    inside = (all_ts >= lo) & (all_ts <= hi)
    if not inside.any():
        inside, all_hi, all_lo = slice(None), high, low
    top, bottom = float(np.nanmax(all_hi[inside])), float(np.nanmin(all_lo[inside]))
    gap = (top - bottom) * 0.04 or abs(top) * 0.004 or 1.0  # a mark's distance from its candle
    if view is None:  # domains from the data: the same spec every candle
        domains = None
        body = max(1.0, min(14.0, 700.0 / (FOLLOW_SHOWN + 6)))
    else:  # the chosen view; y fitted to the candles in it, with room for the labels
        domains = (_iso(lo), _iso(hi), bottom - 2.5 * gap, top + 2.5 * gap)
        body = max(1.0, min(14.0, 700.0 / max((hi - lo) / step, 1.0)))
    first, last = int(ts[0]), int(ts[-1])

    def on_candles(rows: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
        """`rows`' columns where `keep` and their ts is a drawn candle's, with that candle's
        time, high and low: an inner join on ts, in the rows' order."""
        r_ts = rows["ts"]
        pos = np.minimum(np.searchsorted(ts, r_ts), len(ts) - 1)
        keep = keep & (ts[pos] == r_ts)
        pos = pos[keep]
        return {c: values[keep] for c, values in rows.items()} | {
            "time": ts[pos], "high": high[pos], "low": low[pos]
        }  # fmt: skip

    pr = _between(kept.predictions, "ts", first, last)
    p = on_candles(pr, pr["action"] != "HOLD")
    buy = p["action"] == "BUY"
    p["y"] = np.where(buy, p["low"], p["high"]) + gap * np.where(
        buy, -1.0, np.where(p["action"] == "SELL", 1.0, np.nan)
    )
    pv = kept.pivots
    at = (pv["ts"] >= first) & (pv["ts"] <= last)
    piv = {c: values[at] for c, values in pv.items()}
    piv["time"] = piv["ts"]
    piv["y"] = piv["price"] + 1.8 * gap * np.where(
        piv["kind"] == "H", 1.0, np.where(piv["kind"] == "L", -1.0, np.nan)
    )
    fills, parts = kept.trades, []
    for end in ("entry", "exit"):
        f_ts = fills[f"{end}_ts"]
        at = (f_ts >= first) & (f_ts <= last)
        parts.append((f_ts[at], fills[f"{end}_price"][at],
                      [f"{end} {side}" for side in fills["side"][at]]))  # fmt: skip
    m_ts = np.concatenate([part[0] for part in parts])
    marks = {"ts": m_ts, "price": np.concatenate([part[1] for part in parts]),
             "what": np.array(parts[0][2] + parts[1][2], dtype=object), "time": m_ts}  # fmt: skip
    mn = kept.manual
    manual = on_candles(mn, (mn["ts"] >= first) & (mn["ts"] <= last))
    manual["y"] = (manual["high"] + manual["low"]) / 2
    manual["letter"] = np.array([label[0] for label in manual["label"]], dtype=object)
    datasets = {
        "candles": {"ts": ts, "time": ts} | {c: columns[c] for c in candles.OHLCV},
        "ghost": dict(zip(["open", "high", "low", "close"], ohlc.T, strict=True))
        | {"ts": g_ts, "time": g_ts},
        "predictions": p, "pivots": piv, "fills": marks, "manual": manual,
    }  # fmt: skip
    shown = (
        f"{pd.Timestamp(lo, unit='ms', tz='UTC'):%Y-%m-%d %H:%M} → "
        f"{pd.Timestamp(hi, unit='ms', tz='UTC'):%Y-%m-%d %H:%M} UTC"
    )
    return Drawn(
        {name: _arrow(columns) for name, columns in datasets.items()},
        domains, body, lo, hi, (first, last), f"Showing {shown} · {note}",
    )  # fmt: skip


TEXT_COLUMNS = {"action", "kind", "what", "label", "letter"}


def _arrow(columns: dict[str, np.ndarray]) -> bytes:
    """A chart dataset as the Arrow bytes Streamlit sends, built from its arrays (`time` given
    as epoch ms) with the types pandas would give them: ids and ts int64, text as large
    strings, times UTC in µs, the rest float64. The drawing's biggest cost was pyarrow's
    conversion from pandas, about a millisecond a frame; this takes a tenth of that."""
    arrays = {}
    for name, values in columns.items():
        if name == "time":
            arrays[name] = pa.array(np.asarray(values, "int64") * 1000, pa.timestamp("us", "UTC"))
        elif name in TEXT_COLUMNS:
            arrays[name] = pa.array(np.asarray(values, object), pa.large_string())
        else:
            arrays[name] = pa.array(np.asarray(values, "int64" if name in ("id", "ts") else float))
    return dataframe_util.convert_anything_to_arrow_bytes(pa.table(arrays))


def _between(rows: dict[str, np.ndarray], column: str, lo: int, hi: int) -> dict[str, np.ndarray]:
    """The rows, sorted by `column`, with lo <= column <= hi: a slice found by bisection, not a
    comparison of every row the tab holds."""
    values = rows[column]
    i, j = values.searchsorted(lo, "left"), values.searchsorted(hi, "right")
    return {c: v[i:j] for c, v in rows.items()}


def _in_view(ch: alt.Chart, x_scale: alt.Scale, y_scale: alt.Scale | None) -> alt.Chart:
    """`ch` clipped to the plot, on the shared x (and y) domain: with explicit domains, marks
    outside them would otherwise be drawn over the axes."""
    ch = ch.copy()
    ch.mark = alt.MarkDef(type=ch.mark) if isinstance(ch.mark, str) else ch.mark
    ch.mark.clip = True
    enc = ch.encoding
    if enc.x is not alt.Undefined:
        enc.x = alt.X(**{**enc.x.to_dict(), "scale": x_scale})
    if y_scale is not None and enc.y is not alt.Undefined:
        enc.y = alt.Y(**{**enc.y.to_dict(), "scale": y_scale, "title": "price"})
    return ch


@functools.lru_cache(maxsize=256)
def chart_spec(
    title: str, domains: tuple[str, str, float, float] | None, body: float, shaded: bool
) -> dict:
    """The Live chart's Vega-Lite spec, its layers reading the datasets pages/live.py draws:
    built and validated by Altair once per shape (a title, the chosen view's x and y domains
    or None when following, a candle width, whether annotations are shaded) and shared by
    every browser. Do not change it."""
    if domains is None:
        x_scale, y_scale = alt.Scale(nice=False), alt.Scale(zero=False, padding=16)
    else:
        x_scale = alt.Scale(domain=list(domains[:2]))
        y_scale = alt.Scale(domain=list(domains[2:]), zero=False)
    zoom = alt.selection_interval(name="zoom", bind="scales", encodings=["x"])
    wick, bars = candle_layers(alt.Data(name="candles"), body=body)
    g_wick, g_bars = candle_layers(alt.Data(name="ghost"), body=body, opacity=0.35)  # next 5
    manual = alt.Chart(alt.Data(name="manual"))
    layers = [
        *(annotation_layers(alt.Data(name="annotations")) if shaded else []),
        wick,
        bars.add_params(zoom),
        g_wick,
        g_bars,
        alt.Chart(alt.Data(name="predictions"))
        .mark_point(filled=True, opacity=1, stroke=DARK, strokeWidth=0.8)
        .encode(
            x="time:T",
            y="y:Q",
            color=alt.Color("action:N", scale=ACTION_COLORS, title="prediction"),
            shape=alt.Shape(
                "action:N",
                scale=alt.Scale(domain=["BUY", "SELL"], range=["triangle-up", "triangle-down"]),
                legend=None,
            ),
            size=alt.Size(
                "confidence:Q", scale=alt.Scale(domain=[0.33, 1], range=[40, 260]), legend=None
            ),
            tooltip=[
                "action:N",
                alt.Tooltip("confidence:Q", format=".2f"),
                alt.Tooltip("p_buy:Q", format=".2f"),
                alt.Tooltip("p_sell:Q", format=".2f"),
                alt.Tooltip("p_hold:Q", format=".2f"),
            ],
        ),
        alt.Chart(alt.Data(name="pivots"))
        .mark_text(fontWeight="bold", fontSize=12, color="#6a1b9a")
        .encode(x="time:T", y="y:Q", text="kind:N", tooltip=["kind:N", "price:Q"]),
        alt.Chart(alt.Data(name="fills"))
        .mark_point(shape="diamond", size=80, filled=True, color="#1e88e5", opacity=1)
        .encode(x="time:T", y="price:Q", tooltip=["what:N", "price:Q"]),
        manual.mark_point(
            shape="circle", filled=False, size=420, strokeWidth=2.5, opacity=1
        ).encode(
            x="time:T",
            y="y:Q",
            color=alt.Color("label:N", scale=ACTION_COLORS, legend=None),
            tooltip=[alt.Tooltip("label:N", title="manual label")],
        ),
        manual.mark_text(fontWeight="bold", fontSize=12, dx=15, align="left").encode(
            x="time:T",
            y="y:Q",
            text="letter:N",
            color=alt.Color("label:N", scale=ACTION_COLORS, legend=None),
        ),
    ]
    spec = (
        alt.layer(*(_in_view(layer, x_scale, y_scale) for layer in layers))
        .properties(
            height=420,
            width="container",
            title=title,
            # SVG: a few hundred marks, and axes a test can read
            usermeta={"embedOptions": {"renderer": "svg"}},
        )
        .configure_axisTemporal(labelExpr=TIME_LABELS)  # ticks with the year
        .to_dict()
    )
    # Altair's default theme sizes views that Streamlit sizes itself (st.altair_chart converts
    # under theme "none"): drop what that theme adds, whichever theme is on in this thread.
    view = spec.get("config", {}).get("view", {})
    for key in ("continuousWidth", "continuousHeight"):
        view.pop(key, None)
    if not view:
        spec.get("config", {}).pop("view", None)
    return spec
