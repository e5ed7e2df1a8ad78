"""Engine instances: registration, heartbeat, liveness. The views read "online" from here."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db import settings
from db.connection import readonly
from db.models import EngineInstance, Job, LiveSession, WorkingModel, utcnow


def register(
    engine: Engine,
    instance_id: str,
    version: str,
    wake: tuple[str, int] | None,
    *,
    name: str | None = None,
    max_jobs: int | None = None,
    max_sessions: int | None = None,
) -> EngineInstance:
    """Record a starting engine instance (this process) and return its row."""
    now = utcnow()
    row = EngineInstance(
        id=instance_id,
        name=name or socket.gethostname()[:80],
        max_jobs=max_jobs,
        max_sessions=max_sessions,
        host=socket.gethostname(),
        pid=os.getpid(),
        version=version,
        started_at=now,
        last_beat=now,
        wake_host=wake[0] if wake else None,
        wake_port=wake[1] if wake else None,
    )
    with Session(engine, expire_on_commit=False) as s, s.begin():
        s.add(row)
    return row


def beat(engine: Engine, instance_id: str) -> bool:
    """Renew an instance's lease. False when another engine has found it dead meanwhile (a
    stall longer than the lease): its work has been taken over, and it must stop."""
    with engine.begin() as conn:
        return (
            conn.execute(
                update(EngineInstance)
                .where(EngineInstance.id == instance_id, EngineInstance.stopped_at.is_(None))
                .values(last_beat=utcnow())
            ).rowcount
            == 1
        )


def mark_stopped(engine: Engine, instance_id: str, reason: str) -> bool:
    """Record that an instance stopped (cleanly, or found dead by another); False if its stop
    was recorded already (of several engines finding one dead, one closes it out)."""
    with engine.begin() as conn:
        return (
            conn.execute(
                update(EngineInstance)
                .where(EngineInstance.id == instance_id, EngineInstance.stopped_at.is_(None))
                .values(stopped_at=utcnow(), stop_reason=reason)
            ).rowcount
            == 1
        )


def running_ids():
    """The ids of instances with no recorded stop (alive, or dead and not found yet)."""
    return select(EngineInstance.id).where(EngineInstance.stopped_at.is_(None))


def vacant(owner_column):
    """SQL: `owner_column` names no engine that still holds its work — nobody, an unknown id, or
    an instance recorded as stopped. The recorded stop is the fencing token: an engine that
    merely went quiet keeps what it owns until another engine has marked it stopped, and from
    then on it cannot renew its lease (`beat`), so it can never own anything again."""
    return owner_column.is_(None) | owner_column.not_in(running_ids())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_alive(row: EngineInstance, now: datetime | None = None) -> bool:
    """Whether an instance counts as running, i.e. holds its lease: not stopped, heartbeat
    fresher than `CANDLELAB_HEARTBEAT_TIMEOUT`, and (on this host) its process still exists,
    so a `kill -9` is noticed at once rather than after the heartbeat goes stale."""
    if row.stopped_at is not None:
        return False
    now = now or utcnow()
    if now - row.last_beat > timedelta(seconds=settings.heartbeat_timeout_s()):
        return False
    return not (row.host == socket.gethostname() and not _pid_alive(row.pid))


def unstopped(engine: Engine) -> list[EngineInstance]:
    """Instances with no recorded stop, newest first (alive or not)."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(
            s.scalars(
                select(EngineInstance)
                .where(EngineInstance.stopped_at.is_(None))
                .order_by(EngineInstance.started_at.desc())
            )
        )


def alive(engine: Engine) -> list[EngineInstance]:
    """Instances that are running now, newest first."""
    now = utcnow()
    return [row for row in unstopped(engine) if is_alive(row, now)]


@dataclass(frozen=True)
class EngineStatus:
    """What the views show: online or not, and about which instance."""

    online: bool
    instance: EngineInstance | None  # the live one, or the last one seen
    heartbeat_age_s: float | None


def status(engine: Engine) -> EngineStatus:
    """Online if any instance is alive; otherwise the most recent instance, for context."""
    now = utcnow()
    live = alive(engine)
    if live:
        row = live[0]
        return EngineStatus(True, row, (now - row.last_beat).total_seconds())
    with Session(readonly(engine), expire_on_commit=False) as s:
        row = s.scalars(
            select(EngineInstance).order_by(EngineInstance.last_beat.desc()).limit(1)
        ).first()
    age = (now - row.last_beat).total_seconds() if row else None
    return EngineStatus(False, row, age)


@dataclass(frozen=True)
class Load:
    """One live engine and the work it owns now."""

    row: EngineInstance
    sessions: int
    jobs: int
    working_models: int

    @property
    def session_room(self) -> bool:
        return self.row.max_sessions is None or self.sessions < self.row.max_sessions


def loads(engine: Engine) -> list[Load]:
    """Every live engine with its running sessions, running jobs and owned working models."""
    live = alive(engine)
    ids = [r.id for r in live]
    with readonly(engine).begin() as conn:
        counts = {
            name: dict(conn.execute(
                select(col, func.count()).where(col.in_(ids), *extra).group_by(col)
            ).all())
            for name, col, extra in (
                ("sessions", LiveSession.engine_id, (LiveSession.status == "running",)),
                ("jobs", Job.engine_id, (Job.status.in_(("queued", "running")),)),
                ("working_models", WorkingModel.engine_id, ()),
            )
        }  # fmt: skip
    return [
        Load(r, counts["sessions"].get(r.id, 0), counts["jobs"].get(r.id, 0),
             counts["working_models"].get(r.id, 0))
        for r in live
    ]  # fmt: skip


def least_loaded(engine: Engine, prefer: str) -> str | None:
    """The live engine that should run a new session: the one with room running the fewest
    (`prefer`, the asking engine, on a tie); None when every engine is full."""
    room = [load for load in loads(engine) if load.session_room]
    if not room:
        return None
    best = min(room, key=lambda load: (load.sessions, load.row.id != prefer, load.row.id))
    return best.row.id


def stopped_since(engine: Engine, minutes: float) -> list[EngineInstance]:
    """Instances that stopped (cleanly, or found dead) in the last `minutes`, newest first."""
    since = utcnow() - timedelta(minutes=minutes)
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(
            s.scalars(
                select(EngineInstance)
                .where(EngineInstance.stopped_at >= since)
                .order_by(EngineInstance.stopped_at.desc())
                .limit(10)
            )
        )
