"""Checkpoint rows: lineage, metrics, the one active checkpoint. Files are the engine's job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db.connection import readonly
from db.models import Checkpoint


class UnknownCheckpoint(LookupError):
    """No checkpoint has that id."""


def get(engine: Engine, checkpoint_id: int) -> Checkpoint:
    with Session(readonly(engine), expire_on_commit=False) as s:
        row = s.get(Checkpoint, checkpoint_id)
    if row is None:
        raise UnknownCheckpoint(f"unknown checkpoint {checkpoint_id}")
    return row


def active(engine: Engine) -> Checkpoint | None:
    """The checkpoint live sessions and backtests use unless told otherwise."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        return s.scalars(select(Checkpoint).where(Checkpoint.is_active)).first()


def all_(engine: Engine) -> list[Checkpoint]:
    """Every checkpoint, newest first."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(select(Checkpoint).order_by(Checkpoint.id.desc())))


def count(engine: Engine) -> int:
    with readonly(engine).begin() as conn:
        return conn.scalar(select(func.count()).select_from(Checkpoint))


def insert(engine: Engine, conn=None, **values: Any) -> int:
    """Add a checkpoint row (inside `conn`'s transaction if given); returns its id."""
    stmt = Checkpoint.__table__.insert().values(**values).returning(Checkpoint.id)
    if conn is not None:
        return conn.execute(stmt).scalar_one()
    with engine.begin() as c:
        return c.execute(stmt).scalar_one()


def activate(engine: Engine, checkpoint_id: int) -> None:
    """Make `checkpoint_id` the one active checkpoint."""
    get(engine, checkpoint_id)
    with engine.begin() as conn:
        conn.execute(update(Checkpoint).where(Checkpoint.is_active).values(is_active=False))
        conn.execute(
            update(Checkpoint).where(Checkpoint.id == checkpoint_id).values(is_active=True)
        )


def summary(engine: Engine, checkpoint_id: int) -> dict[str, Any]:
    """A checkpoint as `python -m engine show checkpoint ID` prints it: lineage, steps, whether
    it is the active one, what it was trained on and how it scored."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        row = s.get(Checkpoint, checkpoint_id)
        if row is None:
            raise UnknownCheckpoint(
                f"no checkpoint with id {checkpoint_id}: "
                "`python -m engine list checkpoints` lists them"
            )
        parent = s.get(Checkpoint, row.parent_id) if row.parent_id is not None else None
        children = list(
            s.scalars(select(Checkpoint.id).where(Checkpoint.parent_id == checkpoint_id))
        )
    return {
        "id": row.id,
        "name": row.name,
        "active": row.is_active,
        "parent": None if parent is None else {"id": parent.id, "name": parent.name},
        "children": children,
        "steps": row.steps,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "working_model_id": row.working_model_id,
        "job_id": row.job_id,
        "sources": row.sources,
        "metrics": row.metrics,
        "feature_version": row.feature_version,
        "config": row.config,
        "file": row.file,
    }
