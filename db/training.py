"""Training events: one row per weight update from any source, or per update skipped."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, select

from db.connection import readonly
from db.models import TrainingEvent


def record(engine: Engine, **values: Any) -> None:
    """Store one training event (see TrainingEvent for the fields)."""
    with engine.begin() as conn:
        conn.execute(TrainingEvent.__table__.insert().values(**values))


def count(engine: Engine, **where: Any) -> int:
    """How many events match, e.g. count(engine, job_id=3, skipped=False)."""
    q = select(func.count()).select_from(TrainingEvent)
    for key, value in where.items():
        q = q.where(getattr(TrainingEvent, key) == value)
    with readonly(engine).begin() as conn:
        return conn.scalar(q)


def frame(engine: Engine, limit: int = 5000, **where: Any) -> pd.DataFrame:
    """Recent events as a DataFrame, oldest first."""
    q = select(TrainingEvent).order_by(TrainingEvent.id.desc()).limit(limit)
    for key, value in where.items():
        q = q.where(getattr(TrainingEvent, key) == value)
    with readonly(engine).begin() as conn:
        result = conn.execute(q)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))  # columns even if empty
    return frame.iloc[::-1].reset_index(drop=True)
