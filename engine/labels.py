"""Training labels from annotations: the one labelling rule for annotated trades.

A long trade from entry candle e to exit candle x labels e BUY, x SELL (the closing action) and
the candles between them HOLD; a short trade the mirror image. Entry and exit actions win over
HOLD where trades overlap. Candles outside every trade are unlabelled, or HOLD if asked.
"""

from __future__ import annotations

import numpy as np

from contract.vocab import ACTIONS
from engine.runner import IGNORE

BUY, SELL, HOLD = (ACTIONS.index(a) for a in ("BUY", "SELL", "HOLD"))


def from_annotations(
    ts: np.ndarray, annotations, unannotated_as_hold: bool = False
) -> tuple[np.ndarray, int]:
    """Labels (n,) for candles with open times `ts` (sorted), and how many annotations did
    not match stored candles (skipped)."""
    labels = np.full(len(ts), HOLD if unannotated_as_hold else IGNORE, dtype=np.int64)
    placed, unmatched = [], 0
    for a in annotations:
        e, x = np.searchsorted(ts, [a.entry_ts, a.exit_ts])
        if e >= len(ts) or x >= len(ts) or ts[e] != a.entry_ts or ts[x] != a.exit_ts:
            unmatched += 1
            continue
        labels[e + 1 : x] = HOLD
        placed.append((e, x, a.side))
    for e, x, side in placed:
        labels[e] = BUY if side == "long" else SELL
        labels[x] = SELL if side == "long" else BUY
    return labels, unmatched


NEXT_MOVE_THRESHOLD = 0.0005  # 0.05 %


def next_move(close_t: float, close_next: float, threshold: float = NEXT_MOVE_THRESHOLD) -> int:
    """The every_candle label of candle t once t+1 has closed: BUY above +0.05 %, SELL below
    −0.05 %, HOLD in between (the boundaries themselves are HOLD)."""
    move = close_next / close_t - 1
    if move > threshold:
        return BUY
    if move < -threshold:
        return SELL
    return HOLD


def pivot_action(kind: str) -> int:
    """Swing low → BUY, swing high → SELL."""
    return BUY if kind == "L" else SELL
