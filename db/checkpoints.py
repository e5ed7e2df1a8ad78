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
