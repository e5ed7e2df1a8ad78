"""Copy a whole installation's database into an empty PostgreSQL one
(`python -m engine migrate-to URL`, engine/cli_migrate.py; docs/several-machines.md).

Every table of the schema is copied, parents before children, in chunks streamed from the
source, with primary keys kept; then the target's id sequences are moved past the copied ids.
It all happens in one transaction on the target, so a failed move leaves it as it was (empty),
and the source is only read, from one snapshot. The rows the migrations make in a new database
(the `system` account) are replaced by the source's. Engines recorded in the source are kept as
history, none of them alive: an unstopped one is marked stopped, and the work it held is closed
out as an engine taking over a dead one would (engine/service.py `reap`): its running commands
fail, its unfinished jobs are interrupted, and waiting commands aimed at it are aimed at nobody.
Pending commands and running sessions are copied as they are: the new engines run the first and
resume the second.

Checkpoint weights are files (or blobs) the rows point at: this module names them and hands
each to a callback that copies the bytes, so that `db/` never imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    LargeBinary,
    Table,
    delete,
    func,
    inspect,
    not_,
    null,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError

from contract.access import SYSTEM_ACCOUNT
from db.connection import long_transaction, readonly
from db.jobs import UNFINISHED
from db.models import (
    Backtest,
    Base,
    Blob,
    Checkpoint,
    Command,
    Job,
    LiveSession,
    WorkingModel,
    utcnow,
)

CHUNK = 5_000  # rows per read from the source and per insert into the target
BLOB_CHUNK = 20  # rows per chunk of a table holding files (blobs: megabytes each)
BLOB_CHUNK_BYTES = 64 * 2**20  # and at most about this many bytes of them
MOVED = "moved to PostgreSQL by migrate-to"
LOCK_TIMEOUT = "10s"  # how long the target waits for a table another connection is writing


class Refused(RuntimeError):
    """The move cannot start (the target is not empty, …); nothing was changed."""


class CopyFailed(RuntimeError):
    """A table could not be copied (a value the target refuses, …); the target was rolled
    back."""


def tables() -> list[Table]:
    """Every table of the schema, parents before children (`alembic_version` is not one: the
    target keeps its own)."""
    return list(Base.metadata.sorted_tables)


def _made_by_migrations(table: Table):
    """Which rows of `table` the migrations insert into a new database (db/migrations/versions/
    0006: the `system` account), or None."""
    if table.name == "accounts":
        return table.c.name == SYSTEM_ACCOUNT
    return None


def _count(conn: Connection, table: Table, user_only: bool = False) -> int:
    q = select(func.count()).select_from(table)
    made = _made_by_migrations(table) if user_only else None
    if made is not None:
        q = q.where(not_(made))
    return conn.scalar(q)


def user_rows(conn: Connection) -> dict[str, int]:
    """The tables of ours that hold rows the migrations did not make, with how many: what makes
    a target not empty. Works at any schema revision (only the tables that exist are read)."""
    existing = set(inspect(conn).get_table_names())
    out = {}
    for table in tables():
        if table.name in existing and (n := _count(conn, table, user_only=True)):
            out[table.name] = n
    return out


def counts(conn: Connection, existing_only: bool = False) -> dict[str, int]:
    """Rows per table of the schema, in `tables()` order (only those that exist, with
    `existing_only`: a database at an older revision)."""
    existing = set(inspect(conn).get_table_names()) if existing_only else None
    return {
        table.name: _count(conn, table)
        for table in tables()
        if existing is None or table.name in existing
    }


def files(conn: Connection) -> dict[str, list[str]]:
    """The checkpoint store's files the rows point at (checkpoint weights, working-model
    state), each with what refers to it ("checkpoint 3", "working model 2"), sorted by path."""
    out: dict[str, list[str]] = {}
    if not {"checkpoints", "working_models"} <= set(inspect(conn).get_table_names()):
        return out  # a database older than working models (revision 0005)
    for cid, path in conn.execute(select(Checkpoint.id, Checkpoint.file).order_by(Checkpoint.id)):
        if path and path != "pending":  # "pending": a save that never finished
            out.setdefault(path, []).append(f"checkpoint {cid}")
    rows = conn.execute(
        select(WorkingModel.id, WorkingModel.state_file)
        .where(WorkingModel.state_file.is_not(None))
        .order_by(WorkingModel.id)
    )
    for wid, path in rows:
        out.setdefault(path, []).append(f"working model {wid}")
    return dict(sorted(out.items()))


@dataclass
class Outcome:
    """What a move did, and the verification: rows per table in the source's snapshot and in
    the target after the commit."""

    source_rows: dict[str, int] = field(default_factory=dict)
    target_rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)  # copied / present / missing
    file_refs: dict[str, list[str]] = field(default_factory=dict)  # path: what points at it
    blobs_added: int = 0  # files the copy put into the target's blobs table
    engines_stopped: list[str] = field(default_factory=list)
    commands_failed: list[int] = field(default_factory=list)
    jobs_interrupted: list[int] = field(default_factory=list)
    commands_released: int = 0
    pending_commands: int = 0
    running_sessions: int = 0
    seconds: float = 0.0

    def expected(self, table: str) -> int:
        """The rows `table` should have in the target: the source's, and in `blobs` the files
        copied into it too."""
        return self.source_rows[table] + (self.blobs_added if table == "blobs" else 0)

    @property
    def mismatched(self) -> list[str]:
        """Tables whose row count in the target is not what the copy should have made."""
        return [t for t in self.source_rows if self.target_rows.get(t) != self.expected(t)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.mismatched,
            "tables": {t: {"source": n, "expected": self.expected(t),
                           "target": self.target_rows.get(t)}
                       for t, n in self.source_rows.items()},
            "blobs_added": self.blobs_added,
            "mismatched": self.mismatched,
            "files": self.files,
            "missing_files": {p: self.file_refs.get(p, []) for p in self.files.get("missing", [])},
            "engines_stopped": self.engines_stopped,
            "commands_failed": self.commands_failed,
            "jobs_interrupted": self.jobs_interrupted,
            "commands_released": self.commands_released,
            "pending_commands": self.pending_commands,
            "running_sessions": self.running_sessions,
            "seconds": round(self.seconds, 3),
        }  # fmt: skip


# copy_file(target connection, relative path) -> "copied" | "present" | "missing"
CopyFile = Callable[[Connection, str], str]
# progress(table, rows copied so far, finished)
Progress = Callable[[str, int, bool], None]


def copy(
    source: Engine,
    target: Engine,
    copy_file: CopyFile,
    progress: Progress | None = None,
    chunk: int = CHUNK,
) -> Outcome:
    """Copy everything in `source` into `target` (PostgreSQL, schema at head, empty apart from
    the migrations' rows), then count both. Raises Refused, changing nothing, when the target
    holds data; any other failure rolls the target back."""
    started = time.monotonic()
    out = Outcome()
    with readonly(source).connect() as src, target.connect() as dst:
        if src.dialect.name == "postgresql":  # one snapshot for the counts and the copy
            src.execution_options(isolation_level="REPEATABLE READ")
        with src.begin(), dst.begin():
            _copy_all(src, dst, copy_file, progress, chunk, out)
    with readonly(target).connect() as conn:
        out.target_rows = counts(conn)
    out.seconds = time.monotonic() - started
    return out


def _copy_all(src: Connection, dst: Connection, copy_file: CopyFile, progress: Progress | None,
              chunk: int, out: Outcome) -> None:  # fmt: skip
    """The copy, inside both transactions (each one long by design)."""
    long_transaction(src)
    long_transaction(dst)
    _lock(dst)
    left = user_rows(dst)
    if left:
        raise Refused(not_empty(left))
    for table in tables():
        made = _made_by_migrations(table)
        if made is not None:
            dst.execute(delete(table).where(made))
    out.source_rows = counts(src)  # the snapshot the copy reads (SQLite: from here on)
    for table in tables():
        copied = _copy_table(src, dst, table, chunk, out, progress)
        if copied != out.source_rows[table.name]:  # a source written during the read
            raise CopyFailed(
                f"table {table.name}: read {copied} rows, counted {out.source_rows[table.name]}"
            )
    _close_out(dst, out)
    out.files = {"copied": [], "present": [], "missing": []}
    out.file_refs = files(src)
    blobs_before = _count(dst, Blob.__table__)
    for path in out.file_refs:
        out.files[copy_file(dst, path)].append(path)
    out.blobs_added = _count(dst, Blob.__table__) - blobs_before
    _reset_sequences(dst)
    out.pending_commands = dst.scalar(
        select(func.count()).select_from(Command).where(Command.status == "pending")
    )
    out.running_sessions = dst.scalar(
        select(func.count()).select_from(LiveSession).where(LiveSession.status == "running")
    )


def not_empty(left: dict[str, int]) -> str:
    what = ", ".join(f"{name} ({n:,} row{'s' if n != 1 else ''})" for name, n in left.items())
    return (
        f"the target database is not empty: {what}. migrate-to only moves into a new, empty "
        "database (one that only the schema migrations have written to), so that nothing there "
        "is overwritten or mixed up; create one (createdb) or empty this one first"
    )


def _lock(dst: Connection) -> None:
    """Keep other writers out of the target's tables until the copy commits (an engine or
    app started on it too early waits, then sees the whole copy)."""
    if dst.dialect.name != "postgresql":
        return
    dst.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    names = ", ".join(dst.dialect.identifier_preparer.quote(t.name) for t in tables())
    dst.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))


def _copy_table(
    src: Connection, dst: Connection, table: Table, chunk: int, out: Outcome, progress
) -> int:
    """Stream `table` from the source in primary-key order, inserting chunk by chunk. JSON
    columns keep the difference between SQL NULL and JSON null."""
    json_cols = [c.name for c in table.columns if isinstance(c.type, JSON)]
    flags = [table.c[name].is_(None).label(f"_sql_null_{name}") for name in json_cols]
    query = select(*table.columns, *flags).order_by(*table.primary_key.columns)
    files = [c.name for c in table.columns if isinstance(c.type, LargeBinary)]
    if files:
        chunk = min(chunk, BLOB_CHUNK)
    now = utcnow()
    copied = 0
    result = src.execute(query, execution_options={"yield_per": 1 if files else chunk})
    for part in _parts(result, chunk, files):
        rows = []
        for row in part:
            m = row._mapping
            values = {c.name: m[c.name] for c in table.columns}
            for name in json_cols:
                if m[f"_sql_null_{name}"]:
                    values[name] = null()
            if table.name == "engines" and values["stopped_at"] is None:
                values["stopped_at"], values["stop_reason"] = now, MOVED
                out.engines_stopped.append(values["id"])
            rows.append(values)
        try:
            _insert(dst, table, rows)
        except (DBAPIError, dst.dialect.dbapi.Error) as exc:
            key = next(iter(table.primary_key.columns)).name
            why = getattr(exc, "orig", None) or exc
            raise CopyFailed(f"table {table.name}, the rows with {key} {rows[0][key]!r} to "
                             f"{rows[-1][key]!r}: {why}".strip()) from exc  # fmt: skip
        copied += len(rows)
        if progress:
            progress(table.name, copied, False)
    if progress:
        progress(table.name, copied, True)
    return copied


def _parts(result, chunk: int, files: list[str]):
    """`result`'s rows in lists of `chunk`, a list cut early once the bytes in its `files`
    columns reach BLOB_CHUNK_BYTES (a dataset's candle snapshot can be hundreds of MB)."""
    if not files:
        yield from result.partitions()
        return
    part, size = [], 0
    for row in result:
        part.append(row)
        size += sum(len(row._mapping[name] or b"") for name in files)
        if len(part) >= chunk or size >= BLOB_CHUNK_BYTES:
            yield part
            part, size = [], 0
    if part:
        yield part


def _insert(dst: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` into `table`: on PostgreSQL (psycopg) with COPY, several times faster than
    INSERT, each value made what SQLAlchemy would bind (naive UTC times, JSON, SQL NULL)."""
    dialect = dst.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        dst.execute(table.insert(), rows)
        return
    columns = [
        (c.name, c.type.dialect_impl(dialect).bind_processor(dialect)) for c in table.columns
    ]
    quote = dialect.identifier_preparer.quote
    sql = f"COPY {quote(table.name)} ({', '.join(quote(n) for n, _ in columns)}) FROM STDIN"
    with dst.connection.driver_connection.cursor() as cursor, cursor.copy(sql) as copy:
        for values in rows:
            copy.write_row([bind(values[n]) if bind else values[n] for n, bind in columns])


def _close_out(dst: Connection, out: Outcome) -> None:
    """What an engine taking over does for a dead one (engine/service.py `reap`), for the
    engines this copy marked stopped: nothing would do it later, since they are stopped."""
    now = utcnow()
    for engine_id in out.engines_stopped:
        reason = (
            f"interrupted: engine {engine_id} was still recorded as running when the "
            "installation moved to PostgreSQL (migrate-to)"
        )
        out.commands_failed += dst.scalars(
            update(Command)
            .where(Command.status == "running", Command.claimed_by == engine_id)
            .values(status="failed", finished_at=now, error=reason)
            .returning(Command.id)
        ).all()
        jobs = dst.scalars(
            update(Job)
            .where(Job.status.in_(UNFINISHED), Job.engine_id == engine_id)
            .values(status="interrupted", finished_at=now, error=reason, message=reason)
            .returning(Job.id)
        ).all()
        if jobs:
            dst.execute(
                update(Backtest)
                .where(Backtest.job_id.in_(jobs), Backtest.status == "running")
                .values(status="interrupted", finished_at=now)
            )
        out.jobs_interrupted += jobs
        out.commands_released += dst.execute(
            update(Command)
            .where(Command.status == "pending", Command.target == engine_id)
            .values(target=None)
        ).rowcount


def _reset_sequences(dst: Connection) -> None:
    """Move each id sequence past the largest copied id, so that new rows get fresh ids."""
    if dst.dialect.name != "postgresql":
        return
    for table in tables():
        for column in table.primary_key.columns:
            sequence = dst.scalar(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": table.name, "column": column.name},
            )
            if sequence is None:  # a text key (engines, blobs, quotas, signin_tokens)
                continue
            top = dst.scalar(select(func.max(column)))
            # setval(seq, n, false): the next id is n; an empty table starts at 1 again.
            dst.execute(
                text("SELECT setval(:sequence, :next, false)"),
                {"sequence": sequence, "next": (top or 0) + 1},
            )
