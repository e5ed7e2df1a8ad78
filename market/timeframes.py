"""Timeframe names ("1m", "4h", "1d", "1w", "1M") and their lengths."""

from __future__ import annotations

import re

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MONTH_MS = 30 * 86_400_000  # nominal; real months vary, so month-sized checks allow slack
_PATTERN = re.compile(r"^([1-9][0-9]{0,5})([smhdwM])$")  # up to 999999 units: 1m … 1M


class BadTimeframe(ValueError):
    """A timeframe string Candle Lab cannot read."""


def parse(timeframe: str) -> tuple[int, str]:
    """`"4h"` → `(4, "h")`; raises BadTimeframe with the accepted forms."""
    m = _PATTERN.match(timeframe.strip()) if isinstance(timeframe, str) else None
    if not m:
        raise BadTimeframe(
            f"timeframe {repr(timeframe)[:40]} is not understood: use a number and a unit, "
            "s, m (minutes), h, d, w or M (months), e.g. 1m, 15m, 4h, 1d, 1w, 1M"
        )
    return int(m.group(1)), m.group(2)


def interval_ms(timeframe: str) -> int:
    """Nominal length of one candle in milliseconds (months count as 30 days)."""
    n, unit = parse(timeframe)
    return n * (MONTH_MS if unit == "M" else _UNIT_MS[unit])


def is_calendar_regular(timeframe: str) -> bool:
    """True when every candle has the same length (everything up to weeks; not months)."""
    return parse(timeframe)[1] != "M"
