"""A row of figures (a label over a value, with optional help and warning) as one element.

Streamlit's `st.metric` costs a delta per figure and more for the columns that place them: a
panel that ten tabs redraw every second spent more on its twelve metrics than on its chart
(docs/architecture.md, "What watching costs"). One `st.html` element carries them all, in a
grid that wraps on narrow screens. Each figure is `[data-stat="<label>"]` with `.value`
inside, for tests and for people who script the page."""

from __future__ import annotations

from html import escape
from typing import NamedTuple

import streamlit as st

CSS = """<style>
.cl-stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(8rem,1fr));gap:.9rem 1rem;
  margin:.2rem 0 .6rem}
.cl-stats .label{font-size:.875rem;opacity:.65;white-space:nowrap;overflow:hidden;
  text-overflow:ellipsis}
.cl-stats .help{cursor:help;margin-left:.3rem;display:inline-block;width:1.1em;height:1.1em;
  line-height:1.05em;text-align:center;border:1px solid;border-radius:50%;font-size:.75em}
.cl-stats .value{font-size:1.6rem;line-height:1.25;white-space:nowrap;overflow:hidden;
  text-overflow:ellipsis}
.cl-stats .delta{font-size:.85rem;color:#d32f2f}
.cl-note{font-size:.875rem;opacity:.65;margin:-.3rem 0 .4rem}
</style>"""


class Stat(NamedTuple):
    label: str
    value: object
    help: str | None = None  # shown on hovering the ? after the label
    warning: str | None = None  # a red note under the value (something was lost or refused)


def stat_strip(stats: list[Stat], notes: tuple[str, ...] = ()) -> None:
    """`stats` as one element: a grid of label over value, like a row of `st.metric`s, and
    under it `notes`, plain text lines in the look of `st.caption` (each its own
    `<div class="cl-note">`): in a panel redrawn every second each element costs every tab."""
    cells = []
    for s in stats:
        hint = f'<span class="help" title="{escape(s.help)}">?</span>' if s.help else ""
        note = f'<div class="delta">{escape(s.warning)}</div>' if s.warning else ""
        cells.append(
            f'<div data-stat="{escape(s.label)}"><div class="label">{escape(s.label)}{hint}'
            f'</div><div class="value">{escape(str(s.value))}</div>{note}</div>'
        )
    lines = "".join(f'<div class="cl-note">{escape(note)}</div>' for note in notes)
    st.html(f'{CSS}<div class="cl-stats">{"".join(cells)}</div>{lines}')
