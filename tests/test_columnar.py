"""Large reads into arrays (db/columnar.py) give exactly what SQLAlchemy reads, on both
backends: integer times stay exact, floats keep every bit, an empty result has the columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import select

from contract.access import SYSTEM_ACCOUNT
from db import candles, columnar
from db.models import Candle


def test_candles_read_as_arrays_equal_a_row_by_row_read(any_database):
    rng = np.random.default_rng(7)
    n = 70_000  # more than one SQLite block
    ts = 4_102_444_800_000 + np.arange(n, dtype=np.int64) * 60_000  # 2100: past 2^42 ms
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    frame = pd.DataFrame({"ts": ts, "open": price, "high": price * 1.001, "low": price / 1.001,
                          "close": price * (1 + rng.normal(0, 1e-4, n)), "volume": rng.random(n)})  # fmt: skip
    candles.store(any_database, frame, symbol="COL", timeframe="1m", source="test", sha256="-",
                  format="test", rows_in_file=n, rows_skipped=0, created_by=SYSTEM_ACCOUNT)  # fmt: skip
    loaded = candles.load(any_database, "COL", "1m")
    cols = ["ts", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(loaded[cols], frame[cols])
    assert loaded.ts.dtype == np.int64
    tail = candles.load(any_database, "COL", "1m", start_ms=int(ts[100]), last=50)
    assert tail.ts.tolist() == ts[-50:].tolist()
    q = select(Candle.ts, Candle.close).where(Candle.symbol == "none's")  # quoting holds
    empty = columnar.read(any_database, q, ["ts", "close"], ["int64", "float64"])
    assert empty["ts"].dtype == np.int64 and len(empty["ts"]) == len(empty["close"]) == 0


def test_files_read_back_byte_for_byte_with_their_row_chosen_by_any_key(any_database):
    """`first_row_with_files` (binary on PostgreSQL) gives the bytes stored, the plain values
    beside them, and None for no row; keys with quotes and slashes are bound, not pasted."""
    from db import blobs, candle_snapshots
    from db.connection import first_row_with_files

    rng = np.random.default_rng(3)
    data = rng.bytes(3 * 2**20) + b"\x00\\x00'"
    with any_database.begin() as conn:
        blobs.put(conn, "a/it's\\here", data)
        candle_snapshots.save(conn, "BTC/USDT'", "1m", np.arange(5) + 10, rng.random((5, 5)))
    assert blobs.get(any_database, "a/it's\\here") == data
    assert blobs.get(any_database, "a/it's") is None
    ts, ohlcv = candle_snapshots.load(any_database, "BTC/USDT'", "1m", 10)
    assert ts.tolist() == list(range(10, 15)) and ohlcv.shape == (5, 5)
    assert candle_snapshots.load(any_database, "BTC/USDT'", "1m", 11) is None
    from db.models import CandleSnapshot as S

    row = first_row_with_files(any_database, select(S.candles, S.last_ts, S.symbol))
    assert row == (5, 14, "BTC/USDT'")
