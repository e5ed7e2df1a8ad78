"""Files kept in the database (the `blobs` table): checkpoint weights and working-model state,
so that every engine sharing the database, on any machine, reads what another wrote.

A write is one upsert, so readers see the old bytes or the new, never a torn file.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, select

from db.connection import readonly, upsert
from db.models import Blob, utcnow


def put(conn: Connection, path: str, data: bytes) -> None:
    """Store `data` under `path` inside the caller's transaction (replacing what was there)."""
    conn.execute(
        upsert(conn.engine, Blob, ["path"], ["data", "size", "written_at"], path=path,
               data=data, size=len(data), written_at=utcnow())  # fmt: skip
    )


def get(engine: Engine, path: str) -> bytes | None:
    """The bytes stored under `path`, or None."""
    with readonly(engine).begin() as conn:
        return conn.scalar(select(Blob.data).where(Blob.path == path))


def exists(engine: Engine, path: str) -> bool:
    with readonly(engine).begin() as conn:
        return conn.scalar(select(Blob.path).where(Blob.path == path)) is not None
