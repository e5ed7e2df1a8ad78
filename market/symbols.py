"""Symbol names as Candle Lab stores them."""

from __future__ import annotations

import re

_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/^=-]{0,63}$")


class BadSymbol(ValueError):
    """A symbol name that cannot be stored."""


def check(symbol: str) -> str:
    """The symbol, stripped; raises BadSymbol saying what is allowed."""
    s = (symbol or "").strip()
    if not _PATTERN.match(s):
        raise BadSymbol(
            f"symbol {symbol!r} is not usable: 1–64 characters, letters, digits and . _ : / ^ = -"
            " (e.g. BTC/USDT, SP500, EURUSD)"
        )
    return s
