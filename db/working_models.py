"""Working models: trainable copies of checkpoints. Rows, lineage and who trains them; the
weights themselves are the engine's job (`engine/working.py`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db.connection import readonly
from db.models import Checkpoint, Job, LiveSession, TrainingEvent, WorkingModel, utcnow


class UnknownWorkingModel(LookupError):
    """No working model has that id."""


def create(engine: Engine, *, name: str, base_checkpoint_id: int, created_by: str | None,
           engine_id: str | None, saved_steps: int = 0) -> int:  # fmt: skip
    """A new working model started from `base_checkpoint_id` (whose optimizer had taken
    `saved_steps` steps); returns its id."""
    with engine.begin() as conn:
        return conn.execute(
            WorkingModel.__table__.insert()
            .values(
                name=name.strip()[:120] or "working model",
                base_checkpoint_id=base_checkpoint_id,
                created_by=created_by,
                created_at=utcnow(),
                engine_id=engine_id,
                saved_steps=saved_steps,
                lost_steps=0,
            )
            .returning(WorkingModel.id)
        ).scalar_one()


def get(engine: Engine, working_model_id: int) -> WorkingModel:
    with Session(readonly(engine), expire_on_commit=False) as s:
        row = s.get(WorkingModel, working_model_id)
    if row is None:
        raise UnknownWorkingModel(f"unknown working model {working_model_id}")
    return row


def all_(engine: Engine, limit: int = 200) -> list[WorkingModel]:
    """Newest first."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(select(WorkingModel).order_by(WorkingModel.id.desc()).limit(limit)))


def update_row(engine: Engine, working_model_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(WorkingModel).where(WorkingModel.id == working_model_id).values(**values)
        )


def mark_saved(engine: Engine, working_model_id: int, *, state_file: str, steps: int) -> None:
    """Record that `state_file` now holds the weights after optimizer step `steps`."""
    update_row(engine, working_model_id, state_file=state_file, saved_steps=steps,
               saved_at=utcnow())  # fmt: skip


def mark_lost(engine: Engine, working_model_id: int, kept_steps: int) -> int:
    """On loading a working model whose state file holds `kept_steps` steps: the steps recorded
    beyond them were applied by an engine that died before autosaving them. Flag their training
    events `lost`, add them to the row's count, record `kept_steps` as saved; how many."""
    with engine.begin() as conn:
        lost = conn.execute(
            update(TrainingEvent)
            .where(
                TrainingEvent.working_model_id == working_model_id,
                TrainingEvent.step > kept_steps,
                TrainingEvent.skipped.is_(False),
                TrainingEvent.lost.is_(False),
            )
            .values(lost=True)
        ).rowcount
        conn.execute(
            update(WorkingModel)
            .where(WorkingModel.id == working_model_id)
            .values(lost_steps=WorkingModel.lost_steps + lost, saved_steps=kept_steps)
        )
        return lost


def latest_step(engine: Engine, working_model_id: int) -> int | None:
    """The optimizer step count after the newest update that counts (not skipped, not lost)."""
    with readonly(engine).begin() as conn:
        return conn.scalar(
            select(func.max(TrainingEvent.step)).where(
                TrainingEvent.working_model_id == working_model_id,
                TrainingEvent.skipped.is_(False),
                TrainingEvent.lost.is_(False),
            )
        )


def latest_steps(engine: Engine) -> dict[int, int]:
    """Every working model's newest counted step (as `latest_step`), in one query."""
    with readonly(engine).begin() as conn:
        return dict(
            conn.execute(
                select(TrainingEvent.working_model_id, func.max(TrainingEvent.step))
                .where(
                    TrainingEvent.working_model_id.is_not(None),
                    TrainingEvent.skipped.is_(False),
                    TrainingEvent.lost.is_(False),
                )
                .group_by(TrainingEvent.working_model_id)
            ).all()
        )


def summary(engine: Engine, working_model_id: int) -> dict[str, Any]:
    """A working model as `python -m engine show model ID` prints it and the pages show it:
    where it came from, how far it got, who and what trains it, its last saved checkpoint."""
    row = get(engine, working_model_id)
    with readonly(engine).begin() as conn:
        base = conn.execute(
            select(Checkpoint.id, Checkpoint.name, Checkpoint.steps).where(
                Checkpoint.id == row.base_checkpoint_id
            )
        ).one()
        counted = (
            TrainingEvent.working_model_id == working_model_id,
            TrainingEvent.skipped.is_(False),
            TrainingEvent.lost.is_(False),
        )
        by_source = dict(
            conn.execute(
                select(TrainingEvent.source, func.count())
                .where(*counted)
                .group_by(TrainingEvent.source)
            ).all()
        )
        manual = dict(
            conn.execute(
                select(TrainingEvent.requested_by, func.count())
                .where(*counted, TrainingEvent.source == "manual")
                .group_by(TrainingEvent.requested_by)
            ).all()
        )
        skipped = conn.scalar(
            select(func.count()).where(
                TrainingEvent.working_model_id == working_model_id, TrainingEvent.skipped
            )
        )
        step = conn.scalar(select(func.max(TrainingEvent.step)).where(*counted))
        sessions = conn.execute(
            select(LiveSession.id, LiveSession.mode, LiveSession.status, LiveSession.created_by)
            .where(LiveSession.working_model_id == working_model_id)
            .order_by(LiveSession.id)
        ).all()
        job_rows = conn.execute(
            select(Job.id, Job.kind, Job.status, Job.created_by)
            .where(Job.working_model_id == working_model_id)
            .order_by(Job.id)
        ).all()
        last = None
        if row.last_checkpoint_id is not None:
            last = conn.execute(
                select(Checkpoint.id, Checkpoint.name, Checkpoint.steps).where(
                    Checkpoint.id == row.last_checkpoint_id
                )
            ).one()
    steps = max(step or 0, row.saved_steps, base.steps)
    return {
        "id": row.id,
        "name": row.name,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "base_checkpoint": {"id": base.id, "name": base.name, "steps": base.steps},
        "steps": steps,
        "steps_trained_here": steps - base.steps,
        "steps_by_source": by_source,
        "manual_steps_by": {k or "unknown": v for k, v in manual.items()},
        "skipped_steps": skipped,
        "lost_steps": row.lost_steps,
        "sessions": [
            {"id": s.id, "mode": s.mode, "status": s.status, "created_by": s.created_by}
            for s in sessions
        ],
        "jobs": [
            {"id": j.id, "kind": j.kind, "status": j.status, "created_by": j.created_by}
            for j in job_rows
        ],
        "trained_now_by": [f"session {s.id} ({s.mode})" for s in sessions if s.status == "running"]
        + [f"job {j.id}" for j in job_rows if j.status in ("queued", "running")],
        "last_checkpoint": None
        if last is None
        else {"id": last.id, "name": last.name, "steps": last.steps},
        "saved_steps": row.saved_steps,
        "saved_at": None if row.saved_at is None else row.saved_at.isoformat(),
        "engine_id": row.engine_id,
    }


def sources(engine: Engine, working_model_id: int, after_step: int, upto_step: int) -> dict:
    """What trained a working model from step `after_step` (exclusive) to `upto_step`: steps
    by source, the sessions and jobs they came from, manual steps by person. Recorded on each
    checkpoint saved from it, so a checkpoint says what went into it."""
    counted = (
        TrainingEvent.working_model_id == working_model_id,
        TrainingEvent.skipped.is_(False),
        TrainingEvent.lost.is_(False),
        TrainingEvent.step > after_step,
        TrainingEvent.step <= upto_step,
    )
    with readonly(engine).begin() as conn:
        rows = conn.execute(
            select(
                TrainingEvent.source,
                TrainingEvent.session_id,
                TrainingEvent.job_id,
                TrainingEvent.requested_by,
                func.count(),
            )
            .where(*counted)
            .group_by(
                TrainingEvent.source,
                TrainingEvent.session_id,
                TrainingEvent.job_id,
                TrainingEvent.requested_by,
            )
        ).all()
    by_source: dict[str, int] = {}
    manual: dict[str, int] = {}
    for source, _session, _job, who, n in rows:
        by_source[source] = by_source.get(source, 0) + n
        if source == "manual":
            manual[who or "unknown"] = manual.get(who or "unknown", 0) + n
    return {
        "working_model_id": working_model_id,
        "steps": upto_step - after_step,
        "steps_by_source": by_source,
        "sessions": sorted({r.session_id for r in rows if r.session_id is not None}),
        "jobs": sorted({r.job_id for r in rows if r.job_id is not None}),
        "manual_steps_by": manual,
    }
