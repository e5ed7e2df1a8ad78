"""Working models: trainable copies of checkpoints. Rows, lineage and who trains them; the
weights themselves are the engine's job (`engine/working.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db import engines, jobs
from db.connection import readonly
from db.models import Checkpoint, Job, LiveSession, TrainingEvent, WorkingModel, utcnow

# An update that counts: applied (not skipped for a lock timeout) and kept (not lost to a crash).
COUNTED = (TrainingEvent.skipped.is_(False), TrainingEvent.lost.is_(False))


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


@dataclass(frozen=True)
class Claim:
    """What `claim` found: `owner`, another live engine that has the working model (then
    nothing changed), or else how many recorded steps were `lost`."""

    owner: str | None = None
    lost: int = 0


def claim(engine: Engine, working_model_id: int, engine_id: str | None,
          kept_steps: int) -> Claim:  # fmt: skip
    """Load a working model for `engine_id`, whose weights at hand (its state file, or its
    base) hold `kept_steps` steps — in one transaction:
    - take ownership, unless another engine still holds it (one with no recorded stop): one
      engine trains a working model at a time (two would each keep a copy and overwrite each
      other's saves);
    - the steps recorded beyond `kept_steps` were applied by an engine that died before saving
      them: flag their training events `lost` and add them to the row's count."""
    owner = WorkingModel.engine_id
    with engine.begin() as conn:
        taken = conn.execute(
            update(WorkingModel)
            .where(
                WorkingModel.id == working_model_id, (owner == engine_id) | engines.vacant(owner)
            )
            .values(engine_id=engine_id, saved_steps=kept_steps)
        ).rowcount
        if not taken:
            return Claim(
                owner=conn.scalar(select(owner).where(WorkingModel.id == working_model_id))
            )
        lost = conn.execute(
            update(TrainingEvent)
            .where(
                TrainingEvent.working_model_id == working_model_id,
                TrainingEvent.step > kept_steps,
                *COUNTED,
            )
            .values(lost=True)
        ).rowcount
        if lost:
            conn.execute(
                update(WorkingModel)
                .where(WorkingModel.id == working_model_id)
                .values(lost_steps=WorkingModel.lost_steps + lost)
            )
        return Claim(lost=lost)


class NotOwner(RuntimeError):
    """Another engine has taken this working model over: this one must not keep its state."""


def _owned_by(owner: str | None):
    return WorkingModel.engine_id.is_(None) if owner is None else WorkingModel.engine_id == owner


def check_owner(engine: Engine, working_model_id: int, owner: str | None) -> None:
    """NotOwner unless engine `owner` still owns the working model."""
    with readonly(engine).begin() as conn:
        found = conn.scalar(
            select(WorkingModel.id).where(WorkingModel.id == working_model_id, _owned_by(owner))
        )
    if found is None:
        raise NotOwner(f"working model {working_model_id} is no longer owned by engine {owner}")


def let_go(engine: Engine, working_model_id: int, owner: str | None) -> None:
    """Engine `owner` has unloaded the working model: nobody owns it until an engine loads it
    again (a no-op if another engine owns it by now)."""
    if owner is None:
        return
    with engine.begin() as conn:
        conn.execute(
            update(WorkingModel)
            .where(WorkingModel.id == working_model_id, WorkingModel.engine_id == owner)
            .values(engine_id=None)
        )


def mark_saved(conn, working_model_id: int, *, state_file: str, steps: int,
               owner: str | None) -> None:  # fmt: skip
    """Record, in the caller's transaction, that `state_file` holds the weights after optimizer
    step `steps` — only while engine `owner` still owns the model (NotOwner otherwise, which
    rolls the caller's transaction back)."""
    done = conn.execute(
        update(WorkingModel)
        .where(WorkingModel.id == working_model_id, _owned_by(owner))
        .values(state_file=state_file, saved_steps=steps, saved_at=utcnow())
    ).rowcount
    if not done:
        raise NotOwner(
            f"working model {working_model_id} is no longer owned by engine {owner}: another "
            "engine took it over, so this one keeps nothing of it"
        )


def latest_steps(engine: Engine, ids: list[int] | None = None) -> dict[int, int]:
    """The optimizer step count after each working model's newest update that counts."""
    q = select(TrainingEvent.working_model_id, func.max(TrainingEvent.step)).where(*COUNTED)
    q = q.where(TrainingEvent.working_model_id.in_(ids) if ids is not None
                else TrainingEvent.working_model_id.is_not(None))  # fmt: skip
    with readonly(engine).begin() as conn:
        return dict(conn.execute(q.group_by(TrainingEvent.working_model_id)).all())


def latest_step(engine: Engine, working_model_id: int) -> int | None:
    return latest_steps(engine, [working_model_id]).get(working_model_id)


def step_count(row: WorkingModel, latest: int | None) -> int:
    """How far a working model got: its newest update that counts, or what its state file
    holds (a model loaded from a checkpoint starts at that checkpoint's count)."""
    return max(latest or 0, row.saved_steps)


def _trained_by(conn, ids: list[int]) -> dict[int, dict]:
    """Per working model: counted steps by source, and manual steps by person."""
    rows = conn.execute(
        select(TrainingEvent.working_model_id, TrainingEvent.source, TrainingEvent.requested_by,
               func.count())
        .where(TrainingEvent.working_model_id.in_(ids), *COUNTED)
        .group_by(TrainingEvent.working_model_id, TrainingEvent.source, TrainingEvent.requested_by)
    ).all()  # fmt: skip
    out = {i: {"steps_by_source": {}, "manual_steps_by": {}} for i in ids}
    for wid, source, who, n in rows:
        by_source = out[wid]["steps_by_source"]
        by_source[source] = by_source.get(source, 0) + n
        if source == "manual":
            by_who = out[wid]["manual_steps_by"]
            by_who[who or "unknown"] = by_who.get(who or "unknown", 0) + n
    return out


def overview(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """The newest working models with what the Train page shows of each, in a few queries."""
    models = all_(engine, limit)
    if not models:
        return []
    ids = [m.id for m in models]
    steps = latest_steps(engine, ids)
    with readonly(engine).begin() as conn:
        trained = _trained_by(conn, ids)
        bases = dict(conn.execute(select(Checkpoint.id, Checkpoint.steps).where(
            Checkpoint.id.in_({m.base_checkpoint_id for m in models}))).all())  # fmt: skip
        now = [
            (wid, f"session {sid} ({mode})")
            for wid, sid, mode in conn.execute(
                select(LiveSession.working_model_id, LiveSession.id, LiveSession.mode).where(
                    LiveSession.working_model_id.in_(ids), LiveSession.status == "running"
                )
            )
        ] + [
            (wid, f"job {jid}")
            for wid, jid in conn.execute(
                select(Job.working_model_id, Job.id).where(
                    Job.working_model_id.in_(ids), Job.status.in_(jobs.UNFINISHED)
                )
            )
        ]
    return [
        {
            "id": m.id,
            "name": m.name,
            "base_checkpoint_id": m.base_checkpoint_id,
            "steps": step_count(m, steps.get(m.id)),
            "steps_trained_here": step_count(m, steps.get(m.id)) - bases[m.base_checkpoint_id],
            **trained[m.id],
            "trained_now_by": [who for wid, who in now if wid == m.id],
            "last_checkpoint_id": m.last_checkpoint_id,
            "lost_steps": m.lost_steps,
            "created_by": m.created_by,
        }
        for m in models
    ]


def summary(engine: Engine, working_model_id: int) -> dict[str, Any]:
    """A working model as `python -m engine show model ID` prints it: where it came from, how
    far it got, who and what trains it, its last saved checkpoint."""
    row = get(engine, working_model_id)
    step = latest_step(engine, working_model_id)
    with readonly(engine).begin() as conn:
        base = conn.execute(select(Checkpoint.id, Checkpoint.name, Checkpoint.steps)
                            .where(Checkpoint.id == row.base_checkpoint_id)).one()  # fmt: skip
        trained = _trained_by(conn, [row.id])[row.id]
        skipped = conn.scalar(select(func.count()).where(
            TrainingEvent.working_model_id == working_model_id, TrainingEvent.skipped))  # fmt: skip
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
            last = conn.execute(select(Checkpoint.id, Checkpoint.name, Checkpoint.steps)
                                .where(Checkpoint.id == row.last_checkpoint_id)).one()  # fmt: skip
    steps = step_count(row, step)
    return {
        "id": row.id,
        "name": row.name,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "base_checkpoint": {"id": base.id, "name": base.name, "steps": base.steps},
        "steps": steps,
        "steps_trained_here": steps - base.steps,
        **trained,
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
        + [f"job {j.id}" for j in job_rows if j.status in jobs.UNFINISHED],
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
        *COUNTED,
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
