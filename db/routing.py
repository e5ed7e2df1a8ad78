"""Which engine runs a command, when several share one database.

Every running session and every loaded working model is owned by exactly one engine: its
`engine_id`, held as long as that engine's heartbeat lease lasts (db/engines.py). A command
about one of them (a payload naming `session_id` or `working_model_id`) must run on that
owner, where the session's thread and the model's one training lock are: `bus.submit` stores
the owner as the command's `target`, and only the target may claim it. An engine that claims
a command the submitter could not route (a raw insert, an owner changed since) forwards it
instead of running it. When an owner dies, the engine that takes its work over points the dead
engine's waiting commands at nobody again, and they are routed afresh.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from contract.payloads import MAX_ID
from contract.vocab import SUBJECT_FIELDS
from db import engines
from db.models import EngineInstance, LiveSession, WorkingModel


def subjects(payload: Any) -> dict[str, int]:
    """The subject fields a payload names (raw JSON text or a decoded / validated payload);
    anything malformed names nothing, and fails later at the engine with a reason. An id no
    INTEGER column can hold (over MAX_ID) names nothing either: PostgreSQL refuses to compare
    one with an id column, and the submit would fail instead of the command."""
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than it can decode
            return {}
    if not isinstance(payload, dict):
        payload = {f: getattr(payload, f, None) for f in SUBJECT_FIELDS}
    return {f: v for f in SUBJECT_FIELDS if type(v := payload.get(f)) is int and 0 < v <= MAX_ID}


def owner(conn: Connection, payload: Any) -> str | None:
    """The unstopped engine that owns what the payload is about, or None when nothing owns it
    (no subject, a session that is not running, a working model nobody has loaded, or an owner
    that has stopped or was found dead: the next engine to use it takes it)."""
    named = subjects(payload)
    candidates = []
    if "session_id" in named:
        candidates.append(
            select(LiveSession.engine_id).where(
                LiveSession.id == named["session_id"], LiveSession.status == "running"
            )
        )
    if "working_model_id" in named:
        candidates.append(
            select(WorkingModel.engine_id).where(WorkingModel.id == named["working_model_id"])
        )
    for query in candidates:
        engine_id = conn.scalar(query)
        if engine_id is not None and conn.scalar(
            select(EngineInstance.id).where(
                EngineInstance.id == engine_id, EngineInstance.stopped_at.is_(None)
            )
        ):
            return engine_id
    return None


def orphaned(conn: Connection, payload: Any) -> bool:
    """Whether the payload is about a running session that no engine holds (its engine
    stopped or was found dead, and nobody has resumed it yet)."""
    session_id = subjects(payload).get("session_id")
    if session_id is None:
        return False
    return (
        conn.scalar(
            select(LiveSession.id).where(
                LiveSession.id == session_id,
                LiveSession.status == "running",
                engines.vacant(LiveSession.engine_id),
            )
        )
        is not None
    )
