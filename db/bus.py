"""The command bus: views submit requests, engines claim and answer them (docs/architecture.md).

Life of a command: `pending` → `running` (claimed by exactly one engine) → `done` | `failed`,
or `pending` → `cancelled`. Every function here is one short transaction; the SQLite /
PostgreSQL difference is confined to `_claim_statement`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from contract.vocab import COMMAND_FINAL, PERSON_CHARS
from db import audit, engines, routing, wake
from db.connection import insert_ignoring_duplicates, readonly
from db.models import Command, utcnow

FINAL = COMMAND_FINAL
MAX_ERROR_CHARS = 2000  # a stored reason is read by a person: longer is an echo, not a reason


class UnknownCommand(LookupError):
    """No command has that id."""


def submit(
    engine: Engine,
    kind: str,
    payload: dict[str, Any] | str | None = None,
    *,
    created_by: str | None,
    request_id: str | None = None,
    notify: bool = True,
) -> int:
    """Queue a command and return its id.

    Idempotent by `request_id`: submitting the same id again (a double click, a retry after a
    timeout) returns the first command's id and queues nothing. A `payload` given as a string
    is stored as is, so a malformed one still reaches the engine and fails there with a reason.
    `created_by` names the account sending it: the engine runs a command only for an enabled
    account whose role allows it (contract/access.py).
    Raises ValueError for what no column can store (an over-long kind or name, a NUL).
    """
    request_id = request_id or uuid.uuid4().hex
    text = payload if isinstance(payload, str) else json.dumps(payload or {})
    for field, value, limit in (("kind", kind, 64), ("request_id", request_id, 64),
                                ("created_by", created_by or "", PERSON_CHARS)):  # fmt: skip
        if len(value) > limit:
            raise ValueError(f"{field} is {len(value)} characters; at most {limit} fit")
    if any("\x00" in v for v in (kind, request_id, created_by or "", text)):
        raise ValueError("a command cannot carry a NUL character (PostgreSQL stores no NUL)")
    values = dict(
        request_id=request_id,
        kind=kind,
        payload=text,
        status="pending",
        created_by=created_by,
        created_at=utcnow(),
    )
    with engine.begin() as conn:
        values["target"] = routing.owner(conn, text)  # no query for a payload naming no subject
        conn.execute(insert_ignoring_duplicates(engine, Command, ["request_id"], **values))
        command_id = conn.scalar(select(Command.id).where(Command.request_id == request_id))
        woken = notify and wake.notify_in(conn)  # PostgreSQL: delivered at this commit
    if notify and not woken:
        wake.notify(engine)  # SQLite: a datagram to each engine, after the commit
    return command_id


def _claim_statement(engine: Engine, engine_id: str, skip_kinds: tuple[str, ...]):
    oldest = (
        select(Command.id)
        .where(
            Command.status == "pending",
            (Command.target == engine_id) | engines.vacant(Command.target),
        )
        .order_by(Command.id)
        .limit(1)
    )
    if skip_kinds:
        oldest = oldest.where(Command.kind.not_in(skip_kinds))
    if engine.dialect.name == "postgresql":
        # Competing engines skip rows another one is claiming instead of queueing behind it.
        oldest = oldest.with_for_update(skip_locked=True)
    # SQLite: one UPDATE ... RETURNING inside BEGIN IMMEDIATE, so no one else can interleave.
    return (
        update(Command)
        .where(Command.id == oldest.scalar_subquery(), Command.status == "pending")
        .values(status="running", claimed_at=utcnow(), claimed_by=engine_id)
        .returning(Command)
    )


def claim(engine: Engine, engine_id: str, skip_kinds: tuple[str, ...] = ()) -> Command | None:
    """Atomically take the oldest pending command `engine_id` may run (one aimed at it, or at
    no engine that still runs: a stopped target's commands go to whoever claims them), leaving `skip_kinds` (work it has no room for) to others; None if there is none.
    Exactly one caller gets any given command."""
    with Session(engine, expire_on_commit=False) as s, s.begin():
        return s.scalars(_claim_statement(engine, engine_id, skip_kinds)).first()


def forward(engine: Engine, command_id: int, by: str, target: str) -> bool:
    """Hand a command `by` claimed, and has not started, to engine `target` (the owner of what
    it is about, or a less loaded engine): it is pending again, for `target` only."""
    with engine.begin() as conn:
        moved = conn.execute(
            update(Command)
            .where(Command.id == command_id, Command.status == "running", Command.claimed_by == by)
            .values(status="pending", target=target, claimed_by=None, claimed_at=None)
        ).rowcount
        woken = moved and wake.notify_in(conn)
    if moved and not woken:
        wake.notify(engine)
    return moved == 1


def release_targets(engine: Engine, engine_ids: list[str]) -> int:
    """Waiting commands aimed at (dead) `engine_ids` are aimed at nobody again: the engine that
    claims one routes it to the new owner of what it is about. How many."""
    if not engine_ids:
        return 0
    with engine.begin() as conn:
        return conn.execute(
            update(Command)
            .where(Command.status == "pending", Command.target.in_(engine_ids))
            .values(target=None)
        ).rowcount


def _close(engine: Engine, command_id: int, from_status: tuple[str, ...],
           audited: dict[str, Any] | None = None, **values) -> bool:  # fmt: skip
    with engine.begin() as conn:
        res = conn.execute(
            update(Command)
            .where(Command.id == command_id, Command.status.in_(from_status))
            .values(finished_at=utcnow(), **values)
        )
        if audited is not None and res.rowcount == 1:
            audit.record(conn, **audited)
        return res.rowcount == 1


def finish(engine: Engine, command_id: int, result: dict[str, Any] | None = None,
           audited: dict[str, Any] | None = None) -> bool:  # fmt: skip
    """Mark a running command done with its `result`, and append `audited` (the arguments of
    `audit.record`) in the same transaction. False if it was not running."""
    return _close(engine, command_id, ("running",), audited, status="done", result=result or {})


def fail(engine: Engine, command_id: int, error: str,
         audited: dict[str, Any] | None = None) -> bool:  # fmt: skip
    """Mark a running (or still pending) command failed with an `error` a person can act on
    (cut to MAX_ERROR_CHARS), and append `audited` in the same transaction."""
    error = error.replace("\x00", "\\x00")  # PostgreSQL stores no NUL; a refusal may quote one
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "…"
    return _close(engine, command_id, ("running", "pending"), audited, status="failed",
                  error=error)  # fmt: skip


def cancel(engine: Engine, command_id: int) -> bool:
    """Withdraw a command nobody has claimed yet. False if it was already claimed."""
    return _close(engine, command_id, ("pending",), status="cancelled")


def fail_running_of(engine: Engine, engine_ids: list[str], reason: str) -> list[int]:
    """Fail every command still `running` under the given (dead) engine instances; the ids."""
    if not engine_ids:
        return []
    with engine.begin() as conn:
        rows = conn.execute(
            update(Command)
            .where(Command.status == "running", Command.claimed_by.in_(engine_ids))
            .values(status="failed", finished_at=utcnow(), error=reason)
            .returning(Command.id)
        )
        return [r[0] for r in rows]


def get(engine: Engine, command_id: int) -> Command:
    """One command by id; raises UnknownCommand."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        row = s.get(Command, command_id)
    if row is None:
        raise UnknownCommand(f"no command with id {command_id}")
    return row


def recent(
    engine: Engine, limit: int = 50, status: str | None = None, kind: str | None = None
) -> list[Command]:
    """The newest commands first, optionally filtered, for the views."""
    q = select(Command).order_by(Command.id.desc()).limit(limit)
    if status:
        q = q.where(Command.status == status)
    if kind:
        q = q.where(Command.kind == kind)
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(q))


def queue_depth(engine: Engine) -> int:
    """How many commands are waiting to be claimed."""
    with readonly(engine).begin() as conn:
        return conn.scalar(select(func.count()).where(Command.status == "pending"))


def wait(engine: Engine, command_id: int, timeout_s: float, poll_s: float = 0.02) -> Command:
    """Poll until the command is final or `timeout_s` passes; returns its latest row."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = get(engine, command_id)
        if row.status in FINAL or time.monotonic() >= deadline:
            return row
        time.sleep(poll_s)


def as_dict(row: Command) -> dict[str, Any]:
    """A command as plain JSON-friendly data (CLI output, downloads)."""
    out = {}
    for col in Command.__table__.columns:
        value = getattr(row, col.key)
        out[col.key] = value.isoformat() if hasattr(value, "isoformat") else value
    return out
