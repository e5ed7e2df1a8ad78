"""Files kept in the database (the `blobs` table): checkpoint weights and working-model state,
so that every engine sharing the database, on any machine, reads what another wrote. A write is
one upsert, so readers see the old bytes or the new, never a torn file.

`write_file` gives a file on disk the same promise, for the file store.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sqlalchemy import Connection, Engine, select

from db.connection import first_row_with_files, readonly, upsert
from db.models import Blob, utcnow


def put(conn: Connection, path: str, data: bytes) -> None:
    """Store `data` under `path` inside the caller's transaction (replacing what was there)."""
    conn.execute(
        upsert(
            conn.engine,
            Blob,
            ["path"],
            ["data", "size", "written_at"],
            path=path,
            data=data,
            size=len(data),
            written_at=utcnow(),
        )  # fmt: skip
    )


def get(engine: Engine, path: str) -> bytes | None:
    """The bytes stored under `path`, or None."""
    row = first_row_with_files(engine, select(Blob.data).where(Blob.path == path))
    return None if row is None else row[0]


def exists(engine: Engine, path: str) -> bool:
    with readonly(engine).begin() as conn:
        return conn.scalar(select(Blob.path).where(Blob.path == path)) is not None


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new, whole: a temporary
    file in the same directory, flushed and fsync'ed, renamed over `path`, and the directory
    fsync'ed (a crash mid-write leaves one or the other, never a torn file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
