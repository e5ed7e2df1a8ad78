"""Long-running jobs (training, backtests): their rows, progress and cancel flag."""

from __future__ import annotations

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db.connection import readonly
from db.models import Job, utcnow


def running_count(engine: Engine) -> int:
    """How many jobs are queued or running."""
    with readonly(engine).begin() as conn:
        return conn.scalar(select(func.count()).where(Job.status.in_(("queued", "running"))))


def interrupt_running_of(engine: Engine, engine_ids: list[str], reason: str) -> list[int]:
    """Mark the unfinished jobs of dead engine instances `interrupted`; returns their ids."""
    if not engine_ids:
        return []
    with engine.begin() as conn:
        rows = conn.execute(
            update(Job)
            .where(Job.status.in_(("queued", "running")), Job.engine_id.in_(engine_ids))
            .values(status="interrupted", finished_at=utcnow(), error=reason)
            .returning(Job.id)
        )
        return [r[0] for r in rows]


def recent(engine: Engine, limit: int = 20) -> list[Job]:
    """The newest jobs first."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(select(Job).order_by(Job.id.desc()).limit(limit)))
