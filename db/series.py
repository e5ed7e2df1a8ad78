"""A backtest's per-candle arrays (candle times, equity, the model's probabilities) and its trades
kept as binary blobs beside the report's row, and the decimated equity curve kept in the row.

Why: a million-candle report used to be a million prediction rows and a JSON list of a million
equity points. Inserting the rows and encoding the JSON took longer than the model pass; one
numpy archive (`.npz`, uncompressed: 28 bytes a candle) is written in a blink and read back
exactly. The row keeps about `POINTS`·4 equity points, enough for every chart and list. Trades
are columns too (a random model trades a quarter of a million times in a million candles: 60 MB
of JSON rows), turned into rows only for a table or a download.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from contract.vocab import ACTIONS

POINTS = 2_000  # buckets of the decimated equity curve kept in a report's row
NAMES = ("ts", "equity", "probs")  # probs: (n, len(ACTIONS)) float32, absent for signal files
# A trade as a report keeps it, in the order tables show it (times as epoch ms in the arrays,
# ISO text in rows; side +1 long, −1 short in the arrays).
TRADE_COLUMNS = ("entry_time", "exit_time", "side", "entry_price", "exit_price", "pnl",
                 "return_pct", "fees", "open_at_end")  # fmt: skip
_TRADE_DTYPES = ("int64", "int64", "int8", *["float64"] * 5, "bool")


def archive(arrays: dict[str, np.ndarray]) -> bytes:
    """Named arrays as one uncompressed `.npz` archive: how every array kept in the database is
    stored (reports here, candle snapshots in db/candle_snapshots.py)."""
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def unarchive(data: bytes) -> dict[str, np.ndarray]:
    """`archive`'s arrays by name; no pickles are loaded, so reading one runs no code."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archived:
        return {name: archived[name] for name in archived.files}


def pack(ts: np.ndarray, equity: np.ndarray, probs: np.ndarray | None = None) -> bytes:
    """The arrays as one archive."""
    arrays = {"ts": np.asarray(ts, dtype=np.int64), "equity": np.asarray(equity, dtype=np.float64)}
    if probs is not None:
        arrays["probs"] = np.asarray(probs, dtype=np.float32).reshape(-1, len(ACTIONS))
    return archive(arrays)


def unpack(data: bytes) -> dict[str, np.ndarray]:
    """`pack`'s arrays by name ("probs" only where the report has predictions)."""
    arrays = unarchive(data)
    return {name: arrays[name] for name in NAMES if name in arrays}


def pack_trades(trades: dict[str, np.ndarray]) -> bytes:
    """Trade columns (TRADE_COLUMNS; times as epoch ms, side ±1) as one archive."""
    return archive({c: np.asarray(trades[c], dtype=t)
                    for c, t in zip(TRADE_COLUMNS, _TRADE_DTYPES, strict=True)})  # fmt: skip


def unpack_trades(data: bytes) -> dict[str, np.ndarray]:
    arrays = unarchive(data)
    return {c: arrays[c] for c in TRADE_COLUMNS}


def trade_frame(trades: dict[str, np.ndarray]) -> pd.DataFrame:
    """Trade columns as the rows tables and downloads show: times as ISO text (UTC), side as
    "long" / "short"."""
    frame = pd.DataFrame({c: trades[c] for c in TRADE_COLUMNS})
    for c in ("entry_time", "exit_time"):
        frame[c] = iso_times(frame[c].to_numpy())
    frame["side"] = np.where(frame.side.to_numpy() > 0, "long", "short")
    return frame


def trade_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """`trade_frame` rows (ISO times, "long" / "short") back as trade columns."""
    frame = pd.DataFrame(rows, columns=list(TRADE_COLUMNS))
    out = {c: frame[c].to_numpy() for c in TRADE_COLUMNS}
    for c in ("entry_time", "exit_time"):
        out[c] = pd.to_datetime(frame[c], utc=True).dt.as_unit("ms").astype("int64").to_numpy()
    out["side"] = np.where(frame.side == "long", 1, -1).astype(np.int8)
    return out


def iso_times(ts: np.ndarray) -> np.ndarray:
    """Epoch ms as ISO text in UTC, as `pd.Timestamp.isoformat()` writes it, vectorised."""
    ts = np.asarray(ts, dtype=np.int64)
    unit = "s" if not (ts % 1000).any() else "us"
    return np.char.add(np.datetime_as_string(ts.astype("datetime64[ms]"), unit=unit), "+00:00")


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
