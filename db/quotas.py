"""Per-role limits: the defaults in `contract/access.py`, overridden by what an admin set."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, select

from contract.access import DEFAULT_QUOTAS, QUOTAS, ROLES
from db import audit
from db.accounts import AccountError, require, transaction
from db.connection import readonly, upsert
from db.models import Quota, utcnow

MAX_QUOTA = 1_000_000


def limits(target: Engine | Connection, role: str) -> dict[str, int]:
    """The limits that apply to `role` now."""
    q = select(Quota.name, Quota.value).where(Quota.role == role)
    if isinstance(target, Connection):
        rows = target.execute(q).all()
    else:
        with readonly(target).connect() as conn:
            rows = conn.execute(q).all()
    return {**DEFAULT_QUOTAS.get(role, {}), **{r.name: r.value for r in rows}}


def table(engine: Engine) -> dict[str, dict[str, int]]:
    """Every role's limits, for the Admin page and the CLI."""
    return {role: limits(engine, role) for role in ROLES}


def set_(engine: Engine, role: str, name: str, value: int, *, by: str) -> None:
    """An admin sets `role`'s limit `name` to `value`."""
    if role not in ROLES or name not in QUOTAS:
        raise AccountError(f"roles: {', '.join(ROLES)}; quotas: {', '.join(QUOTAS)}")
    if not 0 <= value <= MAX_QUOTA:
        raise AccountError(f"a quota is between 0 and {MAX_QUOTA:,}")
    with transaction(engine) as conn:
        require(conn, by, "quota.set")
        row = dict(role=role, name=name, value=value, set_by=by, set_at=utcnow())
        conn.execute(upsert(engine, Quota, ["role", "name"], ["value", "set_by", "set_at"], **row))
        audit.record(conn, "quota.set", "ok", actor=by, about=f"{role} {name}", detail=value)
