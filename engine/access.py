"""The engine's half of access control: before a command's handler runs, the account that
submitted it must exist, be enabled, be allowed the kind by the role table
(`contract/access.py`), own what an owner-only command is about, and be under its role's quota.
Read from the database at that moment, so a role changed or an account disabled a second ago
counts, and a command written straight to the table is held to the same rules as a page's.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, func, select

from contract.access import COMMAND_QUOTA, IMPLIED, OWNED, QUOTAS, Actor, describe, refusal
from db import accounts, quotas
from db.connection import readonly
from db.jobs import UNFINISHED
from db.models import Command, Job, LiveSession, WorkingModel
from engine.registry import CommandError


class Forbidden(CommandError):
    """The account may not run this command (the audit log records it as refused)."""


_OWNER_OF = {"session": LiveSession, "working model": WorkingModel}


def authorize(database: Engine, cmd: Command, args: BaseModel) -> Actor:
    """The account behind `cmd` if it may run it now; Forbidden saying which rule says no."""
    with readonly(database).connect() as conn:
        who = accounts.actor(conn, cmd.created_by)
        if who is None:
            raise Forbidden(_no_account(cmd.created_by))
        owner = _owner(conn, cmd.kind, args)
        reason = refusal(who, cmd.kind, owner) or _implied_refusal(conn, who, args)
        if reason:
            raise Forbidden(reason)
        _within_quota(conn, who, cmd.kind)
    return who


def _implied_refusal(conn: Connection, who: Actor, args: BaseModel) -> str | None:
    """A refusal for a payload field that asks for more than the kind (IMPLIED)."""
    for field, (action, what) in IMPLIED.items():
        value = getattr(args, field, None)
        if value is None or value is False:
            continue
        owner = _created_by(conn, what, value) if what else None
        if reason := refusal(who, action, owner):
            return f"{reason} (the payload asks for it with {field}={value})"
    return None


def _no_account(name: str | None) -> str:
    if not name:
        return "a command must name the account that sent it; this one names none"
    return f"{name[:80]!r} is not an enabled account: the engine runs commands only for those"


def _owner(conn: Connection, kind: str, args: BaseModel) -> str | None:
    """Who created the row an owner-only command is about; None when there is no such row
    (then only an admin gets past, to the handler's "unknown" answer: a trader learns nothing
    about which ids exist)."""
    if kind not in OWNED:
        return None
    field, what = OWNED[kind]
    return _created_by(conn, what, getattr(args, field))


def _created_by(conn: Connection, what: str, row_id: int) -> str | None:
    table = _OWNER_OF[what]
    row = conn.execute(select(table.created_by).where(table.id == row_id)).first()
    return row.created_by if row else None


def _within_quota(conn: Connection, who: Actor, kind: str) -> None:
    quota = COMMAND_QUOTA.get(kind)
    if quota is None:
        return
    limit = quotas.limits(conn, who.role)[quota]
    if quota == "sessions":
        q = select(func.count()).where(
            LiveSession.created_by == who.name, LiveSession.status == "running"
        )
    else:
        q = select(func.count()).where(Job.created_by == who.name, Job.status.in_(UNFINISHED))
    used = conn.scalar(q)
    if used >= limit:
        raise Forbidden(
            f"{who.name} ({who.role}) may not {describe(kind)} now: the {who.role} quota allows "
            f"{limit} {QUOTAS[quota]} and {who.name} has {used}; stop one, or ask an admin "
            "to raise the quota"
        )
