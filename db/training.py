"""Training events: one row per weight update from any source, or per update skipped."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, select

from db.connection import readonly
from db.models import TrainingEvent

_INSERT = TrainingEvent.__table__.insert()
_FIELDS = frozenset(TrainingEvent.__table__.c.keys())


def record(engine: Engine, **values: Any) -> None:
    """Store one training event (see TrainingEvent for the fields). One statement built once,
    the values as its parameters: a batch job records an event per step with the engine's GIL
    held, and building the statement each time was 40 % of that (0.26 -> 0.15 ms of CPU)."""
    unknown = values.keys() - _FIELDS  # as parameters they would be dropped without a word
    if unknown:
        raise ValueError(f"not fields of a training event: {', '.join(sorted(unknown))}")
    with engine.begin() as conn:
        conn.execute(_INSERT, values)


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


def losses(engine: Engine, job_id: int, after_id: int = 0, limit: int = 5000) -> pd.DataFrame:
    """A job's counted (not skipped) batches after event `after_id`: columns id, loss, oldest
    first, at most the newest `limit`. A page polling a running job reads only the batches
    since its last read: an index range on (job_id, id), not the job's whole history."""
    e = TrainingEvent.__table__.c
    q = (
        select(e.id, e.loss)
        .where(e.job_id == job_id, e.id > after_id, e.skipped.is_(False))
        .order_by(e.id.desc())
        .limit(limit)
    )
    with readonly(engine).begin() as conn:
        rows = conn.execute(q).all()[::-1]
    return pd.DataFrame(rows, columns=["id", "loss"])
