"""The engine's candle cache answers as a read from the database would, whatever was imported
since, and reads again only what it must."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contract.access import SYSTEM_ACCOUNT
from db import candle_cache, candle_snapshots, candles
from market.importer import seed_samples

DAY = 86_400_000


def stored(database, frame: pd.DataFrame, symbol: str = "X") -> None:
    candles.store(database, frame, symbol=symbol, timeframe="1d", source="t", sha256="t",
                  format="generic", rows_in_file=len(frame), rows_skipped=0,
                  created_by=SYSTEM_ACCOUNT)  # fmt: skip


def days(first: int, n: int, seed: int = 0) -> pd.DataFrame:
    close = 100 + np.cumsum(np.random.default_rng(seed).normal(0, 1, n))
    ts = (np.arange(first, first + n) * DAY).astype(np.int64)
    return pd.DataFrame({"ts": ts, "open": close, "high": close + 1, "low": close - 1,
                         "close": close, "volume": 1.0 + np.arange(n)})  # fmt: skip


@pytest.fixture
def reads(monkeypatch) -> list[tuple]:
    """Every read of candles the cache makes from the database: rows ((symbol, timeframe),
    bounds) and snapshots found ("snapshot", symbol, timeframe)."""
    seen: list[tuple] = []
    load, load_snapshot = candles.load, candle_snapshots.load

    def counted(*args, **kw):
        seen.append((args[1:], kw))
        return load(*args, **kw)

    def counted_snapshot(engine, symbol, timeframe, first_ts):
        found = load_snapshot(engine, symbol, timeframe, first_ts)
        if found is not None:
            seen.append(("snapshot", symbol, timeframe))
        return found

    monkeypatch.setattr(candles, "load", counted)
    monkeypatch.setattr(candle_snapshots, "load", counted_snapshot)
    return seen


def snapshot_of(engine, symbol: str = "X") -> tuple | None:
    """The stored snapshot's (candles, first_ts, last_ts) for (symbol, 1d), or None."""
    from sqlalchemy import select

    from db.models import CandleSnapshot as S

    q = select(S.candles, S.first_ts, S.last_ts).where(S.symbol == symbol, S.timeframe == "1d")
    with engine.connect() as conn:
        row = conn.execute(q).one_or_none()
    return None if row is None else tuple(row)


def test_any_bounds_give_what_the_database_gives(database):
    seed_samples(database)
    cache = candle_cache.CandleCache()
    whole = candles.load(database, "SP500", "1d")
    ts = whole.ts.to_numpy()
    rng = np.random.default_rng(7)
    picks = [None, int(ts[0]) - DAY, int(ts[-1]) + DAY, *rng.choice(ts, 12).tolist()]
    for _ in range(40):
        lo, hi = (picks[i] for i in rng.integers(0, len(picks), 2))
        last = [None, 1, 300, 10_000][rng.integers(0, 4)]
        want = candles.load(database, "SP500", "1d", lo, hi, last)
        pd.testing.assert_frame_equal(cache.load(database, "SP500", "1d", lo, hi, last), want)


def test_new_candles_are_read_alone_and_older_ones_read_the_dataset_again(database, reads):
    cache = candle_cache.CandleCache()
    stored(database, days(100, 50))
    first = cache.load(database, "X", "1d")
    assert reads == [("snapshot", "X", "1d")]  # the import kept one: no row read
    pd.testing.assert_frame_equal(cache.load(database, "X", "1d"), first)
    assert len(reads) == 1  # unchanged: nothing read

    stored(database, days(140, 30, seed=1))  # 20 new days after the last; 10 already stored
    assert len(cache.load(database, "X", "1d")) == 70
    assert reads[-1] == (("X", "1d"), {"start_ms": 149 * DAY + 1})  # only the newer ones

    stored(database, days(90, 5, seed=2))  # a backfill of older days
    assert len(cache.load(database, "X", "1d")) == 75
    assert reads[-1] == (("X", "1d"), {})  # the whole dataset again
    for lo, hi in [(None, None), (92 * DAY, 101 * DAY), (150 * DAY, None)]:
        pd.testing.assert_frame_equal(
            cache.load(database, "X", "1d", lo, hi), candles.load(database, "X", "1d", lo, hi)
        )


def test_a_frame_handed_out_is_the_callers_own(database):
    cache = candle_cache.CandleCache()
    stored(database, days(100, 20))
    frame = cache.load(database, "X", "1d")
    frame.loc[:, "close"] = -1.0
    frame["ts"] += 1
    pd.testing.assert_frame_equal(
        cache.load(database, "X", "1d"), candles.load(database, "X", "1d")
    )


def test_datasets_and_databases_are_kept_apart(database, tmp_path):
    import db

    cache = candle_cache.CandleCache()
    stored(database, days(100, 20))
    stored(database, days(100, 20, seed=5), symbol="Y")
    other = db.init(f"sqlite:///{tmp_path / 'other.db'}")
    stored(other, days(100, 20, seed=9))
    for engine, symbol in [(database, "X"), (database, "Y"), (other, "X"), (database, "X")]:
        pd.testing.assert_frame_equal(
            cache.load(engine, symbol, "1d"), candles.load(engine, symbol, "1d")
        )


def test_the_least_recently_used_goes_first_and_too_large_is_not_kept(database, reads):
    one = 20 * 6 * 8  # bytes of a 20-candle dataset
    cache = candle_cache.CandleCache(max_mb=2.5 * one / 2**20)
    for symbol in "ABC":
        stored(database, days(100, 20), symbol=symbol)
    for symbol in "ABA":
        cache.load(database, symbol, "1d")
    cache.load(database, "C", "1d")  # over the budget: B, the least recently used, goes
    assert len(reads) == 3
    cache.load(database, "A", "1d")
    cache.load(database, "C", "1d")
    assert len(reads) == 3
    cache.load(database, "B", "1d")
    assert len(reads) == 4
    small = candle_cache.CandleCache(max_mb=0.5 * one / 2**20)
    small.load(database, "A", "1d")
    small.load(database, "A", "1d")
    assert len(reads) == 6  # larger than the whole budget: read each time


def test_candles_added_while_newer_ones_are_read_are_never_missed(database, monkeypatch):
    """Days missing in the middle are filled in, then as many newer days arrive between the cache's count and
    its read of the days after the ones it holds: the numbers add up, yet the backfill is not
    in what it read; the cache notices and reads the dataset whole."""
    cache = candle_cache.CandleCache()
    stored(database, pd.concat([days(100, 20), days(130, 20)]))  # a gap: days 120-129
    cache.load(database, "X", "1d")
    stored(database, days(150, 5, seed=1))
    stored(database, days(120, 3, seed=2))  # into the gap: counted, not among the newer days
    load = candles.load

    def load_during_an_import(engine, symbol, timeframe, start_ms=None, *args, **kw):
        if start_ms is not None:  # the read of the newer days
            stored(database, days(155, 3, seed=3))  # 3 more newer days, as many as the older
        return load(engine, symbol, timeframe, start_ms, *args, **kw)

    monkeypatch.setattr(candles, "load", load_during_an_import)
    got = cache.load(database, "X", "1d")
    monkeypatch.setattr(candles, "load", load)
    pd.testing.assert_frame_equal(got, candles.load(database, "X", "1d"))
    assert len(got) == 51


def test_last_zero_means_no_limit_as_in_the_database_read(database):
    stored(database, days(100, 20))
    got = candle_cache.CandleCache().load(database, "X", "1d", last=0)
    pd.testing.assert_frame_equal(got, candles.load(database, "X", "1d", last=0))
    assert len(got) == 20


def test_an_engine_new_to_a_dataset_starts_from_its_snapshot_and_what_came_after(
    any_database, reads, monkeypatch
):
    """Each fresh cache is an engine that has not read the dataset yet (restarted, or another
    one): it answers as the rows do, reading rows only where the snapshot cannot answer, and
    leaves a snapshot that fits for the next."""
    engine = any_database
    monkeypatch.setattr(candle_cache, "REWRITE_AFTER", 25)

    def fresh_engine_reads() -> list[tuple]:
        before = len(reads)
        got = candle_cache.CandleCache().load(engine, "X", "1d")
        seen = reads[before:]
        pd.testing.assert_frame_equal(got, candles.load(engine, "X", "1d"))
        return seen

    stored(engine, days(100, 50))
    assert snapshot_of(engine) == (50, 100 * DAY, 149 * DAY)  # kept by the import
    assert fresh_engine_reads() == [("snapshot", "X", "1d")]

    stored(engine, days(140, 30, seed=1))  # 20 newer days: under REWRITE_AFTER
    assert fresh_engine_reads() == [
        ("snapshot", "X", "1d"),
        (("X", "1d"), {"start_ms": 149 * DAY + 1}),
    ]
    assert snapshot_of(engine) == (50, 100 * DAY, 149 * DAY)

    stored(engine, days(170, 10, seed=2))  # 30 newer days in all: the snapshot is kept again
    assert fresh_engine_reads() == [
        ("snapshot", "X", "1d"),
        (("X", "1d"), {"start_ms": 149 * DAY + 1}),
    ]
    assert snapshot_of(engine) == (80, 100 * DAY, 179 * DAY)
    assert fresh_engine_reads() == [("snapshot", "X", "1d")]

    stored(engine, days(90, 5, seed=3))  # a backfill: the snapshot no longer fits
    assert fresh_engine_reads() == [(("X", "1d"), {})]  # the rows, whole
    assert snapshot_of(engine) == (85, 90 * DAY, 179 * DAY)
    assert fresh_engine_reads() == [("snapshot", "X", "1d")]


def test_a_dataset_without_a_snapshot_is_read_as_rows_once_and_too_large_is_never_kept(
    database, reads, monkeypatch
):
    from sqlalchemy import delete

    from db.models import CandleSnapshot

    stored(database, days(100, 20))
    with database.begin() as conn:  # as in a database from before snapshots
        conn.execute(delete(CandleSnapshot))
    for want in ([(("X", "1d"), {})], [("snapshot", "X", "1d")]):
        before = len(reads)
        got = candle_cache.CandleCache().load(database, "X", "1d")
        assert reads[before:] == want
        pd.testing.assert_frame_equal(got, candles.load(database, "X", "1d"))

    monkeypatch.setattr(candle_snapshots, "MAX_BYTES", 20 * 6 * 8 - 1)  # one byte short
    stored(database, days(100, 20, seed=4), symbol="Y")
    assert snapshot_of(database, "Y") is None
    for _ in range(2):
        before = len(reads)
        candle_cache.CandleCache().load(database, "Y", "1d")
        assert reads[before:] == [(("Y", "1d"), {})]
    assert snapshot_of(database, "Y") is None
