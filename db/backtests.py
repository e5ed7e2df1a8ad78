"""Backtest reports and their per-candle predictions."""

from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from db.connection import readonly
from db.models import Backtest, BacktestPrediction, utcnow

_CHUNK = 5_000


def create(engine: Engine, **values: Any) -> int:
    with engine.begin() as conn:
        return conn.execute(
            Backtest.__table__.insert()
            .values(status="running", created_at=utcnow(), **values)
            .returning(Backtest.id)
        ).scalar_one()


def update(engine: Engine, backtest_id: int, **values: Any) -> None:
    """Change fields of a report (e.g. settings learned while it runs)."""
    with engine.begin() as conn:
        conn.execute(sa.update(Backtest).where(Backtest.id == backtest_id).values(**values))


def finish(engine: Engine, backtest_id: int, status: str, **values: Any) -> None:
    """Store the results (metrics, trades, equity) and the final status."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(Backtest)
            .where(Backtest.id == backtest_id)
            .values(status=status, finished_at=utcnow(), **values)
        )


def add_predictions(engine: Engine, backtest_id: int, frame: pd.DataFrame) -> None:
    """Per-candle predictions (columns ts, action, p_buy, p_sell, p_hold)."""
    rows = [{"backtest_id": backtest_id, **r} for r in frame.to_dict("records")]
    with engine.begin() as conn:
        for i in range(0, len(rows), _CHUNK):
            conn.execute(BacktestPrediction.__table__.insert(), rows[i : i + _CHUNK])


def get(engine: Engine, backtest_id: int) -> Backtest | None:
    with Session(readonly(engine), expire_on_commit=False) as s:
        return s.get(Backtest, backtest_id)


def all_(engine: Engine, limit: int = 500) -> list[Backtest]:
    """Newest first."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(select(Backtest).order_by(Backtest.id.desc()).limit(limit)))


def predictions(engine: Engine, backtest_id: int) -> pd.DataFrame:
    q = (
        select(
            BacktestPrediction.ts,
            BacktestPrediction.action,
            BacktestPrediction.p_buy,
            BacktestPrediction.p_sell,
            BacktestPrediction.p_hold,
        )  # fmt: skip
        .where(BacktestPrediction.backtest_id == backtest_id)
        .order_by(BacktestPrediction.ts)
    )
    with readonly(engine).begin() as conn:
        return pd.DataFrame(conn.execute(q).mappings().all())
