"""Stored candles: imports (all or nothing, never twice) and the reads the views and engine do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, bindparam, func, insert, select
from sqlalchemy.orm import Session

from db import audit, candle_snapshots, columnar
from db.accounts import require, transaction
from db.connection import insert_ignoring_duplicates, long_transaction, readonly
from db.models import Candle, DataImport

OHLCV = ["open", "high", "low", "close", "volume"]
_CHUNK = 5_000


@dataclass(frozen=True)
class ImportResult:
    """What one import did. `differing` rows were already stored with other values and were
    kept as stored: an import never overwrites candles."""

    import_id: int
    added: int
    existing: int
    differing: int


def store(
    engine: Engine,
    candles: pd.DataFrame,
    *,
    symbol: str,
    timeframe: str,
    source: str,
    sha256: str,
    format: str,
    rows_in_file: int,
    rows_skipped: int,
    options: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    created_by: str | None,
) -> ImportResult:
    """Add `candles` (columns ts, open, high, low, close, volume) in one transaction, skipping
    times already stored for (symbol, timeframe), and record the import, by the account
    `created_by` (a trader or admin)."""
    frame = candles[["ts", *OHLCV]].sort_values("ts")
    with transaction(engine) as conn:
        require(conn, created_by, "data.import")
        long_transaction(conn)  # millions of rows: seconds of Python between statements
        existing: dict[int, tuple] = {}
        if len(frame):
            rows = conn.execute(
                select(Candle.ts, *(getattr(Candle, c) for c in OHLCV)).where(
                    Candle.symbol == symbol,
                    Candle.timeframe == timeframe,
                    Candle.ts.between(int(frame.ts.iloc[0]), int(frame.ts.iloc[-1])),
                )
            )
            existing = {r[0]: tuple(r[1:]) for r in rows}
        creates = not existing and _empty(conn, symbol, timeframe)
        is_new = ~frame["ts"].isin(existing.keys())
        new = frame[is_new]
        old = frame[~is_new]
        differing = sum(
            1
            for row in old.itertuples(index=False)
            if tuple(float(getattr(row, c)) for c in OHLCV) != existing[int(row.ts)]
        )
        import_id = conn.execute(
            insert(DataImport)
            .values(
                symbol=symbol,
                timeframe=timeframe,
                source=source,
                sha256=sha256,
                format=format,
                rows_in_file=rows_in_file,
                rows_added=len(new),
                rows_existing=len(old),
                rows_skipped=rows_skipped,
                options=options or {},
                report=report,
                created_by=created_by,
            )
            .returning(DataImport.id)
        ).scalar_one()
        records = [
            {
                "symbol": symbol,
                "timeframe": timeframe,
                "ts": int(r.ts),
                "open": float(r.open),
                "high": float(r.high),
                "low": float(r.low),
                "close": float(r.close),
                "volume": float(r.volume),
                "import_id": import_id,
            }
            for r in new.itertuples(index=False)
        ]
        for i in range(0, len(records), _CHUNK):
            conn.execute(insert(Candle), records[i : i + _CHUNK])
        if creates:  # these are the whole dataset: keep them whole too, for the first backtest
            ts, ohlcv = new["ts"].to_numpy(np.int64), new[OHLCV].to_numpy(np.float64)
            candle_snapshots.save(conn, symbol, timeframe, ts, ohlcv)
        audit.record(conn, "data.import", "ok", actor=created_by, about=f"{symbol} {timeframe}",
                     detail=f"{source}: {len(new)} candles added, {len(old)} already stored")  # fmt: skip
    return ImportResult(import_id, len(new), len(old), differing)


def _empty(conn, symbol: str, timeframe: str) -> bool:
    """Whether no candle of (symbol, timeframe) is stored."""
    q = select(Candle.id).where(Candle.symbol == symbol, Candle.timeframe == timeframe).limit(1)
    return conn.execute(q).first() is None


def live_insert(engine: Engine, symbol: str, timeframe: str, ts: int, ohlcv: tuple[float, ...]):
    """The statement that stores one candle a live feed delivered (ignored if that time is
    already stored), to run in the transaction that records what the candle did."""
    values = dict(zip(OHLCV, map(float, ohlcv), strict=True))
    return insert_ignoring_duplicates(
        engine, Candle, ["symbol", "timeframe", "ts"], symbol=symbol, timeframe=timeframe, ts=ts,
        **values,
    )  # fmt: skip


def datasets(engine: Engine) -> pd.DataFrame:
    """One row per (symbol, timeframe): candle count, first and last time (UTC)."""
    q = (
        select(
            Candle.symbol,
            Candle.timeframe,
            func.count().label("candles"),
            func.min(Candle.ts).label("first_ts"),
            func.max(Candle.ts).label("last_ts"),
        )
        .group_by(Candle.symbol, Candle.timeframe)
        .order_by(Candle.symbol, Candle.timeframe)
    )
    with readonly(engine).begin() as conn:
        df = pd.DataFrame(
            conn.execute(q).all(), columns=["symbol", "timeframe", "candles", "first_ts", "last_ts"]
        )
    df["first"] = pd.to_datetime(df["first_ts"], unit="ms", utc=True)
    df["last"] = pd.to_datetime(df["last_ts"], unit="ms", utc=True)
    return df


def total(engine: Engine) -> int:
    """How many candles are stored, all datasets together."""
    with readonly(engine).begin() as conn:
        return conn.scalar(select(func.count()).select_from(Candle))


def load(
    engine: Engine,
    symbol: str,
    timeframe: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    last: int | None = None,
) -> pd.DataFrame:
    """Candles of one dataset in time order, `start_ms <= ts <= end_ms`; with `last`, only the
    newest `last` of them. Columns: ts, time (UTC), open, high, low, close, volume."""
    cond = [Candle.symbol == symbol, Candle.timeframe == timeframe]
    if start_ms is not None:
        cond.append(Candle.ts >= start_ms)
    if end_ms is not None:
        cond.append(Candle.ts <= end_ms)
    cols = [Candle.ts, *(getattr(Candle, c) for c in OHLCV)]
    q = select(*cols).where(and_(*cond))
    q = q.order_by(Candle.ts.desc()).limit(last) if last else q.order_by(Candle.ts)
    columns = columnar.read(readonly(engine), q, ["ts", *OHLCV], ["int64"] + ["float64"] * 5)
    newest_first = slice(None, None, -1 if last else 1)
    return frame(columns["ts"][newest_first], [columns[c][newest_first] for c in OHLCV])


_c = Candle.__table__.c
BEFORE_ANY_TS = -(2**63)  # the smallest int64: a lower bound on ts that bounds nothing
_RECENT = (  # built once: a chart that polls only binds its values
    select(_c.ts, *(_c[name] for name in OHLCV))
    .where(_c.symbol == bindparam("symbol"), _c.timeframe == bindparam("timeframe"),
           _c.ts >= bindparam("lo"), _c.ts <= bindparam("hi"))
    .order_by(_c.ts.desc())
    .limit(bindparam("last"))
)  # fmt: skip


def recent(
    engine: Engine,
    symbol: str,
    timeframe: str,
    last: int,
    end_ms: int,
    after_ms: int | None = None,
    start_ms: int | None = None,
) -> dict[str, np.ndarray]:
    """The newest `last` candles of one dataset with `ts <= end_ms` (and `ts > after_ms`,
    `ts >= start_ms` when given), in time order, as arrays: `ts` (int64 epoch ms) and the
    OHLCV columns (float64). A small read for a chart that polls (the Live page every second,
    which appends them to the arrays it drew last: no frame to build), as one indexed
    statement on the pooled connection — `load`'s array path pays a compiled statement (and on
    PostgreSQL a new connection) per call, which is what a million candles need, not a
    hundred."""
    lo = max(BEFORE_ANY_TS if after_ms is None else after_ms + 1,
             BEFORE_ANY_TS if start_ms is None else start_ms)  # fmt: skip
    bounds = {"symbol": symbol, "timeframe": timeframe, "lo": lo, "hi": end_ms, "last": last}
    with readonly(engine).begin() as conn:
        rows = conn.execute(_RECENT, bounds).all()[::-1]
    return columnar.of_rows(rows, ["ts", *OHLCV], ["int64"] + ["float64"] * len(OHLCV))


def frame(ts, ohlcv) -> pd.DataFrame:
    """The frame every read of candles but `recent` returns, from times (epoch ms) and the five
    price and volume columns (each a sequence in time order): ts, time (UTC), open, high, low,
    close, volume, its own copy of the data. Built from one dict of arrays: inserting the
    columns one by one cost about 1.6 ms even for a one-row frame, a quarter of that this way;
    a million candles take the same time either way."""
    t = np.array(ts, dtype="int64")
    columns = {"ts": t, "time": pd.to_datetime(t, unit="ms", utc=True)}
    for name, values in zip(OHLCV, ohlcv, strict=True):
        columns[name] = np.array(values, dtype="float64")
    return pd.DataFrame(columns)


def span(
    engine: Engine,
    symbol: str,
    timeframe: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> tuple[int, int | None, int | None]:
    """How many candles of one dataset lie in `start_ms <= ts <= end_ms`, and the first and
    last of their times: what a request needs checked before a job loads them all."""
    cond = [Candle.symbol == symbol, Candle.timeframe == timeframe]
    if start_ms is not None:
        cond.append(Candle.ts >= start_ms)
    if end_ms is not None:
        cond.append(Candle.ts <= end_ms)
    q = select(func.count(), func.min(Candle.ts), func.max(Candle.ts)).where(*cond)
    with readonly(engine).begin() as conn:
        n, first, last = conn.execute(q).one()
    return n, first, last


def after(engine: Engine, symbol: str, timeframe: str, after_ms: int | None, limit: int):
    """Up to `limit` candles strictly after `after_ms` (all from the start when None)."""
    cond = [Candle.symbol == symbol, Candle.timeframe == timeframe]
    if after_ms is not None:
        cond.append(Candle.ts > after_ms)
    q = (
        select(Candle.ts, *(getattr(Candle, c) for c in OHLCV))
        .where(*cond)
        .order_by(Candle.ts)
        .limit(limit)
    )
    with readonly(engine).begin() as conn:
        return conn.execute(q).all()


def imports(engine: Engine, limit: int = 50) -> list[DataImport]:
    """Recent imports, newest first."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(select(DataImport).order_by(DataImport.id.desc()).limit(limit)))


def too_few(engine: Engine, symbol: str, timeframe: str, found: int, listed: int = 12) -> str:
    """Why a range of (symbol, timeframe) has fewer than 2 candles, for a person: a dataset
    that is not stored at all names the ones that are, so a typo or a missing import shows."""
    sets = datasets(engine)
    mine = sets[(sets.symbol == symbol) & (sets.timeframe == timeframe)]
    if not mine.empty:
        r = mine.iloc[0]
        return (
            f"only {found} stored candle{'' if found == 1 else 's'} for {symbol} {timeframe} in "
            f"that range; its {r.candles:,} candles run from {r['first']:%Y-%m-%d %H:%M} to "
            f"{r['last']:%Y-%m-%d %H:%M} UTC: pick a range inside that"
        )
    where = "import a CSV (`python -m engine import-csv` or the Data page)"
    if sets.empty:
        return (
            f"no candles are stored for {symbol!r} {timeframe!r}, nor for anything else yet: "
            f"{where}, or load the samples with `python -m engine seed`"
        )
    shown = [
        f"{r.symbol} {r.timeframe} ({r.candles:,} candles, {r.first:%Y-%m-%d} → {r.last:%Y-%m-%d})"
        for r in sets.head(listed).itertuples()
    ]
    more = f" and {len(sets) - listed} more" if len(sets) > listed else ""
    return (
        f"no candles are stored for {symbol!r} {timeframe!r}. Stored: {'; '.join(shown)}{more}. "
        f"Check the symbol and timeframe, or {where}"
    )
