"""Swing highs and lows, confirmed only once they can be.

Candle i is a swing high (H) when its high is above the highs of the `left` candles before it
and not below the highs of the `right` candles after it; a swing low (L) mirrors that with lows.
A pivot therefore exists only at the close of candle i + right: the detector never reports one
earlier, and the batch function says when each was confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pivot:
    index: int
    kind: str  # "H" or "L"
    price: float
    confirmed_index: int


def is_high(high: np.ndarray, i: int, left: int, right: int) -> bool:
    return bool(high[i] > high[i - left : i].max() and high[i] >= high[i + 1 : i + right + 1].max())


def is_low(low: np.ndarray, i: int, left: int, right: int) -> bool:
    return bool(low[i] < low[i - left : i].min() and low[i] <= low[i + 1 : i + right + 1].min())


def confirmed_at(high: np.ndarray, low: np.ndarray, n: int, left: int, right: int) -> list[Pivot]:
    """Pivots confirmed by the close of candle n − 1 and not before (candle n − 1 − right)."""
    i = n - 1 - right
    if i < left:
        return []
    out = []
    if is_high(high, i, left, right):
        out.append(Pivot(i, "H", float(high[i]), n - 1))
    if is_low(low, i, left, right):
        out.append(Pivot(i, "L", float(low[i]), n - 1))
    return out


def find_all(high: np.ndarray, low: np.ndarray, left: int, right: int) -> list[Pivot]:
    """Every pivot of a whole series, with the candle that confirms it."""
    out = []
    for n in range(left + right + 1, len(high) + 1):
        out.extend(confirmed_at(high, low, n, left, right))
    return out
