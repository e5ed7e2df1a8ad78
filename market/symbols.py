"""Symbol names as Candle Lab stores them."""

from __future__ import annotations

import re

from contract.vocab import SYMBOL_CHARS

_PATTERN = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._:/^=-]{{0,{SYMBOL_CHARS - 1}}}$")


class BadSymbol(ValueError):
    """A symbol name that cannot be stored."""


def check(symbol: str) -> str:
    """The symbol, stripped; raises BadSymbol saying what is allowed."""
    s = (symbol or "").strip()
    if not _PATTERN.match(s):
        raise BadSymbol(
            f"symbol {repr(symbol)[:80]} is not usable: 1–{SYMBOL_CHARS} characters, letters, digits and . _ : / ^ = -"
            " (e.g. BTC/USDT, SP500, EURUSD)"
        )
    return s
