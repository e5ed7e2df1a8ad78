"""Long-running jobs (training, backtests): their rows, progress and cancel flag."""

from __future__ import annotations

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db import audit
from db.accounts import require, transaction
from db.connection import readonly
from db.models import Backtest, Job, utcnow

UNFINISHED = ("queued", "running")


def running_count(engine: Engine) -> int:
    """How many jobs are queued or running."""
    with readonly(engine).begin() as conn:
        return conn.scalar(select(func.count()).where(Job.status.in_(UNFINISHED)))


def interrupt_running_of(engine: Engine, engine_ids: list[str], reason: str) -> list[int]:
    """Mark the unfinished jobs of dead engine instances `interrupted`, with `reason` as their
    message, and the backtest reports those jobs were writing with them; returns the job ids."""
    if not engine_ids:
        return []
    now = utcnow()
    with engine.begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                update(Job)
                .where(Job.status.in_(UNFINISHED), Job.engine_id.in_(engine_ids))
                .values(status="interrupted", finished_at=now, error=reason, message=reason)
                .returning(Job.id)
            )
        ]
        if ids:
            conn.execute(
                update(Backtest)
                .where(Backtest.job_id.in_(ids), Backtest.status == "running")
                .values(status="interrupted", finished_at=now)
            )
        return ids


def create(engine: Engine, kind: str, *, command_id: int | None, engine_id: str,
           created_by: str | None, message: str = "queued",
           working_model_id: int | None = None) -> int:  # fmt: skip
    """A new job row, owned by `engine_id`."""
    with engine.begin() as conn:
        return conn.execute(
            Job.__table__.insert()
            .values(
                kind=kind,
                status="queued",
                progress=0.0,
                message=message,
                command_id=command_id,
                engine_id=engine_id,
                created_by=created_by,
                created_at=utcnow(),
                working_model_id=working_model_id,
            )
            .returning(Job.id)
        ).scalar_one()


def update_progress(engine: Engine, job_id: int, progress: float, message: str,
                    result: dict | None = None, status: str = "running") -> bool:  # fmt: skip
    """Record progress (0–1) and a message; returns whether cancel was requested."""
    values = {"progress": max(0.0, min(1.0, progress)), "message": message, "status": status}
    if result is not None:
        values["result"] = result
    with engine.begin() as conn:
        conn.execute(
            update(Job).where(Job.id == job_id, Job.status.in_(UNFINISHED)).values(**values)
        )
        conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.started_at.is_(None))
            .values(started_at=utcnow())
        )
        return bool(conn.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish(engine: Engine, job_id: int, status: str, message: str,
           result: dict | None = None, error: str | None = None) -> None:  # fmt: skip
    """Close a job as done / failed / cancelled — unless it was closed already (an engine
    that found this one dead ended it `interrupted`; that answer stands)."""
    with engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(UNFINISHED))
            .values(
                status=status,
                message=message,
                result=result,
                error=error,
                finished_at=utcnow(),
                progress=1.0 if status == "done" else Job.progress,
            )
        )


def request_cancel(engine: Engine, job_id: int, by: str | None) -> bool:
    """Ask a queued or running job to stop at its next check (its creator, or an admin);
    False if it already ended."""
    with transaction(engine) as conn:
        owner = conn.scalar(select(Job.created_by).where(Job.id == job_id))
        require(conn, by, "job.cancel", owner=owner)
        audit.record(conn, "job.cancel", "ok", actor=by, about=f"job {job_id}")
        res = conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(UNFINISHED))
            .values(cancel_requested=True)
        )
        return res.rowcount == 1


def get(engine: Engine, job_id: int) -> Job | None:
    with Session(readonly(engine), expire_on_commit=False) as s:
        return s.get(Job, job_id)


def recent_of(engine: Engine, kind: str, limit: int = 20) -> list[Job]:
    """The newest jobs of one kind first."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(
            s.scalars(select(Job).where(Job.kind == kind).order_by(Job.id.desc()).limit(limit))
        )
