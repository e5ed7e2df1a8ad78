"""Buttons that send commands: checked against the command contract before anything is sent,
one command per click however often the click reruns, and an answer that shows when the engine
gives it, without a page waiting on the engine.

    if st.button("Stop"):
        send("session.stop", {"session_id": 3}, key="stop")
    answer("stop", done=lambda r: f"Session {r['session_id']} stopped.")
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import streamlit as st

from contract.payloads import PayloadError, check
from db import bus
from db.models import Command
from pages.common import current_user, database, md_text

WAIT_NOTICE_S = 5.0  # after this long without an answer, say the engine may be offline
SAME_CLICK_S = 2.0  # the same payload from the same control this soon is the same click


def _requests() -> dict[str, dict[str, Any]]:
    return st.session_state.setdefault("_command_requests", {})


def send(kind: str, payload: dict[str, Any], key: str) -> int | None:
    """Submit `kind` for one click of the control `key`; the command id, or None if the
    payload breaks the contract (the reason shows here, nothing is sent).

    The same payload from the same control while its answer is pending, or within
    SAME_CLICK_S (a double click, a rerun), reuses the click's request id: the bus keeps one
    command."""
    try:
        payload = check(kind, payload)
    except PayloadError as exc:
        st.error(str(exc))
        return None
    digest = hashlib.sha256(json.dumps([kind, payload], sort_keys=True).encode()).hexdigest()
    pending = _requests().get(key)
    if (
        pending
        and pending["digest"] == digest
        and (not pending["final"] or time.monotonic() - pending["sent"] < SAME_CLICK_S)
    ):
        return pending["command_id"]
    request_id = f"{key[:20]}:{uuid.uuid4().hex}"
    command_id = bus.submit(database(), kind, payload, request_id=request_id,
                            created_by=current_user())  # fmt: skip
    # Stored before any Streamlit call, so a rerun that interrupts this one still sees it.
    _requests()[key] = {"command_id": command_id, "digest": digest, "final": False,
                        "sent": time.monotonic()}  # fmt: skip
    return command_id


def answer(
    key: str,
    done: Callable[[dict[str, Any]], str | None] | None = None,
    on_done: Callable[[Command], None] | None = None,
    then: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Show the answer to the last command sent from `key`: a waiting note that polls while
    the engine works, then the engine's refusal, or `done(result)` as a success message.
    `on_done(command_row)` runs once when a done answer arrives, before the page reruns;
    `then(result)` draws more below the success message (links, say)."""
    request = _requests().get(key)
    if request is None:
        return

    @st.fragment(run_every=None if request["final"] else 0.3)
    def show() -> None:
        row = bus.get(database(), request["command_id"])
        if row.status not in bus.FINAL:
            waited = time.monotonic() - request["sent"]
            st.caption(
                "Sent; waiting for the engine…"
                + (" It has not answered yet: is it online?" if waited > WAIT_NOTICE_S else "")
            )
            return
        if not request["final"]:
            request["final"] = True
            if row.status == "done" and on_done is not None:
                on_done(row)
            st.rerun(scope="app")
        if row.status == "done":
            message = done(row.result or {}) if done else "Done."
            if message:  # built from names people typed: shown as text, never Markdown
                st.success(md_text(message))
            if then is not None:
                then(row.result or {})
        else:
            st.error(md_text(row.error) if row.error else f"Command {row.id} was {row.status}.")

    show()


def forget(key: str) -> None:
    """Stop showing the answer of `key` (e.g. once the person moved on)."""
    _requests().pop(key, None)
