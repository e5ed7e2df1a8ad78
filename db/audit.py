"""The audit log: who did what, when, and how it ended. Append-only (the table refuses UPDATE
and DELETE), written in the same transaction as the change it records where there is one.

Actions: `signin`, `signin.failed`, `signin.locked`, `signout`, `password.set`, every command
kind (`session.stop`, …), the direct writes (`annotation.create`, `data.import`, …) and the
account changes (`account.add`, `account.role`, …).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select

from contract.vocab import PERSON_CHARS
from db.connection import readonly
from db.models import AuditEvent, utcnow

DETAIL_CHARS = 500  # a summary a person reads in a table row, not a copy of the payload


def _cut(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def record(
    target: Engine | Connection,
    action: str,
    outcome: str,
    *,
    actor: str | None,
    about: Any = None,
    detail: Any = None,
    address: str | None = None,
) -> None:
    """Append one event. `target` is an engine (its own transaction) or the connection of the
    change being recorded (the event commits or rolls back with it)."""
    values = dict(at=utcnow(), actor=_cut(actor, PERSON_CHARS), action=_cut(action, 64),
                  target=_cut(about, 200), outcome=outcome, detail=_cut(detail, DETAIL_CHARS),
                  address=_cut(address, 64))  # fmt: skip
    if isinstance(target, Connection):
        target.execute(insert(AuditEvent).values(**values))
        return
    with target.begin() as conn:
        conn.execute(insert(AuditEvent).values(**values))


@dataclass(frozen=True)
class Filter:
    """What an admin asks of the log; every field optional."""

    actor: str | None = None
    action: str | None = None  # a prefix: "session" matches session.start, session.stop, …
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def query(engine: Engine, where: Filter = Filter(), limit: int = 500) -> list[AuditEvent]:
    """The newest events first that match `where`."""
    q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if where.actor:
        q = q.where(AuditEvent.actor == where.actor)
    if where.action:
        q = q.where(AuditEvent.action.startswith(where.action, autoescape=True))
    if where.outcome:
        q = q.where(AuditEvent.outcome == where.outcome)
    if where.since:
        q = q.where(AuditEvent.at >= where.since)
    if where.until:
        q = q.where(AuditEvent.at < where.until)
    with readonly(engine).connect() as conn:
        return list(conn.execute(q))


def count(conn: Connection, action: str, since: datetime, **where: Any) -> int:
    """How many `action` events since `since` match `where` (column=value)."""
    q = select(func.count()).where(AuditEvent.action == action, AuditEvent.at >= since)
    for column, value in where.items():
        q = q.where(getattr(AuditEvent, column) == value)
    return conn.scalar(q)


def as_dict(row) -> dict[str, Any]:
    """An event as JSON-friendly data (CLI, downloads)."""
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "detail": row.detail,
        "address": row.address,
    }
