"""The Live chart's Vega-Lite spec: its layers, which read the datasets pages/live.py draws.

A module of its own, imported once per app process, so that the spec is cached in a plain
`functools.lru_cache`: every tab asks for it every second, and a hit through
`st.cache_resource` (which hashes its arguments its own way) cost about a millisecond a run.
"""

from __future__ import annotations

import functools

import altair as alt

from contract.vocab import ACTIONS
from pages.common import DOWN, TIME_LABELS, UP, annotation_layers, candle_layers

ACTION_COLORS = alt.Scale(domain=list(ACTIONS), range=[UP, DOWN, "#9e9e9e"])
DARK = "#263238"


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
