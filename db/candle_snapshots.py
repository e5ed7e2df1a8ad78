"""A dataset's candles kept whole beside its rows: one numpy archive per dataset (the
`candle_snapshots` table), so that an engine that has not read a dataset yet (a new one, one
restarted, one on another machine) reads it at once instead of row by row.

Why: on SQLite a million candles take about 1.5 s to read as rows (the driver builds a Python
tuple per row) and about 0.12 s as one archive; that read was a quarter of a dataset's first
backtest. The archive costs 48 bytes a candle, a quarter of what the rows take on SQLite.

Correct for the reason the engine's in-process cache is (db/candle_cache.py): candles are
append-only, so a snapshot whose count, first and last time equal the dataset's now holds exactly
its rows, and one that is behind is extended by the rows after its last. A snapshot is written
where the whole dataset is at hand anyway: by the import that creates the dataset (in its
transaction), and by an engine that had to read the rows (`save_now`).
"""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import SQLAlchemyError

from db import series
from db.connection import first_row_with_files, upsert
from db.models import CandleSnapshot, utcnow

log = logging.getLogger(__name__)

# Larger datasets are read as rows: one value stays far below SQLite's and PostgreSQL's 1 GB
# limit, and its archive is built in memory.
MAX_BYTES = 256 * 2**20


def save(conn: Connection, symbol: str, timeframe: str, ts: np.ndarray, ohlcv: np.ndarray) -> bool:
    """Keep `ts` (int64 epoch ms, ascending) and `ohlcv` (n × 5 float64): all the dataset's
    candles at one moment, inside the caller's transaction. False (nothing written) when there
    are none, or too many to keep in one value."""
    ts = np.asarray(ts, dtype=np.int64)
    ohlcv = np.asarray(ohlcv, dtype=np.float64).reshape(len(ts), 5)
    if not len(ts) or ts.nbytes + ohlcv.nbytes > MAX_BYTES:
        return False
    conn.execute(
        upsert(
            conn.engine,
            CandleSnapshot,
            ["symbol", "timeframe"],
            ["candles", "first_ts", "last_ts", "data", "written_at"],
            symbol=symbol,
            timeframe=timeframe,
            candles=len(ts),
            first_ts=int(ts[0]),
            last_ts=int(ts[-1]),
            data=series.archive({"ts": ts, "ohlcv": ohlcv}),
            written_at=utcnow(),
        )  # fmt: skip
    )
    return True


def save_now(engine: Engine, symbol: str, timeframe: str, ts: np.ndarray, ohlcv: np.ndarray):
    """`save` in a transaction of its own. A snapshot only saves time: a failure to write one
    (a database busy past its timeout, a full disk) is logged, never raised."""
    try:
        with engine.begin() as conn:
            save(conn, symbol, timeframe, ts, ohlcv)
    except SQLAlchemyError as exc:
        log.warning("candles of %s %s: no snapshot kept (%s)", symbol, timeframe, exc)


def load(
    engine: Engine, symbol: str, timeframe: str, first_ts: int | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The dataset's snapshot as (ts, ohlcv) if it starts at `first_ts` (the dataset's first
    time now: otherwise older candles came since, and it cannot be extended), else None."""
    if first_ts is None:
        return None
    q = select(CandleSnapshot.candles, CandleSnapshot.data).where(
        CandleSnapshot.symbol == symbol,
        CandleSnapshot.timeframe == timeframe,
        CandleSnapshot.first_ts == first_ts,
    )
    row = first_row_with_files(engine, q)
    if row is None:
        return None
    candles, data = row
    arrays = series.unarchive(data)
    ts, ohlcv = arrays["ts"], arrays["ohlcv"]
    if len(ts) != candles or ohlcv.shape != (len(ts), 5):
        log.warning("candles of %s %s: a snapshot that disagrees with itself, ignored", symbol,
                    timeframe)  # fmt: skip
        return None
    return ts, ohlcv
