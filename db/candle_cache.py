"""Whole datasets' candles kept as arrays in this process, for work that reads the same dataset
again and again: a team backtests one history with many settings, and a million candles take
about 1.5 s to read from SQLite as rows against a few hundredths of a second to check.

Correct because candles are append-only: an import skips times already stored, and nothing
updates or deletes a candle (db/candles.py). So a dataset whose count has not changed holds
exactly the rows cached; one that grew only by times after the last cached one (a live feed)
is extended by reading those; any other change (a backfill of older times) reads it whole
again. Bounded by MAX_MB (CANDLELAB_CANDLE_CACHE_MB), least recently used first out.

A dataset this process does not hold yet starts from the database's snapshot of it
(db/candle_snapshots.py: about 0.12 s for a million candles against 1.5 s of rows), checked and
extended by the same rules; only when there is none that fits are the rows read, and the snapshot
kept for the next engine.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from db import candle_snapshots, candles
from db.candles import OHLCV

MAX_MB = float(os.environ.get("CANDLELAB_CANDLE_CACHE_MB", "256"))
# Candles stored after a snapshot before an engine that extended it keeps it again (reading them
# as rows costs about 1.5 us each: 30 ms at this many).
REWRITE_AFTER = 20_000


@dataclass(frozen=True)
class Dataset:
    """One dataset's candles as read at some moment, in time order (read-only arrays)."""

    ts: np.ndarray  # int64 epoch ms
    ohlcv: np.ndarray  # (n, 5) float64

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Dataset:
        return cls.frozen(
            frame["ts"].to_numpy(dtype=np.int64, copy=True),
            frame[OHLCV].to_numpy(dtype=np.float64, copy=True),
        )

    @classmethod
    def frozen(cls, ts: np.ndarray, ohlcv: np.ndarray) -> Dataset:
        ts.flags.writeable = ohlcv.flags.writeable = False  # shared by every reader
        return cls(ts, ohlcv)

    def extended(self, newer: pd.DataFrame) -> Dataset:
        """These candles followed by `newer` (all later than the last of them)."""
        return Dataset.frozen(
            np.concatenate([self.ts, newer["ts"].to_numpy(dtype=np.int64)]),
            np.concatenate([self.ohlcv, newer[OHLCV].to_numpy(dtype=np.float64)]),
        )

    def spans(self, n: int, first: int | None, last: int | None) -> bool:
        """Whether these are the `n` candles from `first` to `last` (append-only: then they are
        the same candles; the times catch a database recreated under the same URL)."""
        if not len(self.ts):
            return n == 0
        return (n, first, last) == (len(self.ts), self.ts[0], self.ts[-1])

    @property
    def nbytes(self) -> int:
        return self.ts.nbytes + self.ohlcv.nbytes

    def frame(self, start_ms: int | None, end_ms: int | None, last: int | None) -> pd.DataFrame:
        """The rows `candles.load` would return for these bounds."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.ts, start_ms, "left"))
        hi = len(self.ts) if end_ms is None else int(np.searchsorted(self.ts, end_ms, "right"))
        if last:  # as candles.load: 0 or None, no limit
            lo = max(lo, hi - last)
        return candles.frame(self.ts[lo:hi], self.ohlcv[lo:hi].T)  # copies: the caller's own


class CandleCache:
    """`load` as `db.candles.load` answers it, from arrays kept per (database, dataset)."""

    def __init__(self, max_mb: float = MAX_MB) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self._held: OrderedDict[tuple[str, str, str], Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def load(
        self,
        engine: Engine,
        symbol: str,
        timeframe: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        last: int | None = None,
    ) -> pd.DataFrame:
        """Candles of one dataset in time order, `start_ms <= ts <= end_ms`, the newest `last`
        with `last`; the same frame `candles.load` returns."""
        return self.dataset(engine, symbol, timeframe).frame(start_ms, end_ms, last)

    def dataset(self, engine: Engine, symbol: str, timeframe: str) -> Dataset:
        """One dataset's candles as stored now: as held, or extended; else from the database's
        snapshot of them (db/candle_snapshots.py), as it is or extended; else read whole."""
        key = (str(engine.url), symbol, timeframe)
        with self._lock:
            held = self._held.get(key)
        now = candles.span(engine, symbol, timeframe)
        fresh = _up_to_date(engine, symbol, timeframe, held, now)
        if fresh is None:
            fresh = _from_snapshot(engine, symbol, timeframe, now)
        if fresh is None:
            fresh = _read(engine, symbol, timeframe)
            candle_snapshots.save_now(engine, symbol, timeframe, fresh.ts, fresh.ohlcv)
        self._keep(key, fresh)
        return fresh

    def clear(self) -> None:
        """Forget every dataset (for a process that swaps databases under one URL: tests)."""
        with self._lock:
            self._held.clear()

    def _keep(self, key: tuple[str, str, str], data: Dataset) -> None:
        with self._lock:
            self._held.pop(key, None)
            if data.nbytes > self.max_bytes:
                return
            self._held[key] = data
            while sum(d.nbytes for d in self._held.values()) > self.max_bytes:
                self._held.popitem(last=False)


def _up_to_date(
    engine: Engine, symbol: str, timeframe: str, held: Dataset | None, now: tuple
) -> Dataset | None:
    """`held` if it is the dataset as counted `now` (count, first, last), or `held` and the
    candles stored after it if only those were added; None if neither (or nothing held)."""
    n, first, last = now
    if held is None:
        return None
    if held.spans(n, first, last):
        return held
    if len(held.ts) and n > len(held.ts) and first == held.ts[0]:
        return _grown(engine, symbol, timeframe, held)
    return None


def _from_snapshot(engine: Engine, symbol: str, timeframe: str, now: tuple) -> Dataset | None:
    """The database's snapshot brought up to date, if it can be; kept again once it lags by
    REWRITE_AFTER candles, so that reading what came after it stays short."""
    snapshot = candle_snapshots.load(engine, symbol, timeframe, now[1])
    if snapshot is None:
        return None
    base = Dataset.frozen(*snapshot)
    fresh = _up_to_date(engine, symbol, timeframe, base, now)
    if fresh is not None and len(fresh.ts) - len(base.ts) >= REWRITE_AFTER:
        candle_snapshots.save_now(engine, symbol, timeframe, fresh.ts, fresh.ohlcv)
    return fresh


def _grown(engine: Engine, symbol: str, timeframe: str, held: Dataset) -> Dataset | None:
    """`held` and the candles stored after its last, if nothing else was added: newer ones are
    read first, then counted with the older ones; counts only grow, so equal counts after the
    read mean the read saw exactly what is stored. None otherwise (older candles came too)."""
    newer = candles.load(engine, symbol, timeframe, start_ms=int(held.ts[-1]) + 1)
    n, _, _ = candles.span(engine, symbol, timeframe)
    older = candles.span(engine, symbol, timeframe, end_ms=int(held.ts[-1]))
    if older[:2] == (len(held.ts), held.ts[0]) and n == len(held.ts) + len(newer):
        return held.extended(newer)
    return None


def _read(engine: Engine, symbol: str, timeframe: str) -> Dataset:
    return Dataset.of(candles.load(engine, symbol, timeframe))


shared = CandleCache()  # this process's: the engine's jobs read through it
