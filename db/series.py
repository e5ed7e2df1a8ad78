"""A backtest's per-candle arrays (candle times, equity, the model's probabilities) kept as one
binary blob per report, and the decimated equity curve kept in the report's row.

Why: a million-candle report used to be a million prediction rows and a JSON list of a million
equity points. Inserting the rows and encoding the JSON took longer than the model pass; one
numpy archive (`.npz`, uncompressed: 28 bytes a candle) is written in a blink and read back
exactly. The row keeps about `POINTS`·4 equity points, enough for every chart and list.
"""

from __future__ import annotations

import io

import numpy as np

from contract.vocab import ACTIONS

POINTS = 2_000  # buckets of the decimated equity curve kept in a report's row
NAMES = ("ts", "equity", "probs")  # probs: (n, len(ACTIONS)) float32, absent for signal files


def pack(ts: np.ndarray, equity: np.ndarray, probs: np.ndarray | None = None) -> bytes:
    """The arrays as one `.npz` archive (no pickles: loading one runs no code)."""
    arrays = {"ts": np.asarray(ts, dtype=np.int64), "equity": np.asarray(equity, dtype=np.float64)}
    if probs is not None:
        arrays["probs"] = np.asarray(probs, dtype=np.float32).reshape(-1, len(ACTIONS))
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def unpack(data: bytes) -> dict[str, np.ndarray]:
    """`pack`'s arrays by name ("probs" only where the report has predictions)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in NAMES if name in archive.files}


def decimate(equity: np.ndarray, points: int = POINTS) -> np.ndarray:
    """Indices of an equity curve that keep its shape on a chart: per bucket of candles the
    first, the highest, the lowest and the deepest drawdown, and the last candle. A curve of at
    most 4·`points` candles is kept whole. The running peak at a kept candle is the true one
    (every bucket's highest is kept), so drawdowns read from the kept points are exact there."""
    e = np.asarray(equity, dtype=np.float64)
    n = len(e)
    if n <= 4 * points:
        return np.arange(n)
    size = -(-n // points)
    padded = np.concatenate([e, np.full(size * points - n, e[-1])]).reshape(points, size)
    drawdown = padded / np.maximum.accumulate(padded.ravel()).reshape(points, size)
    start = np.arange(points) * size
    keep = [start, start + padded.argmax(1), start + padded.argmin(1),
            start + drawdown.argmin(1), [n - 1]]  # fmt: skip
    return np.unique(np.minimum(np.concatenate(keep), n - 1))


def row_equity(ts: np.ndarray, equity: np.ndarray) -> dict[str, list]:
    """The decimated curve as the report row keeps it: {"ts": [...], "equity": [...]}."""
    keep = decimate(equity)
    return {"ts": np.asarray(ts)[keep].tolist(), "equity": np.asarray(equity)[keep].tolist()}
