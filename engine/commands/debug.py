"""Debug commands, for tests and benchmarks only: the engine refuses them unless started with
`--debug-commands`. They exercise failure paths (a slow command, a handler that raises) and
put write load on the database from inside the engine, as live sessions will."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from contract.payloads import DebugFail, DebugLoad, DebugSleep
from engine.registry import CommandError, command

log = logging.getLogger(__name__)


@command("debug.sleep", debug=True)
def sleep(ctx, args: DebugSleep, cmd) -> dict:
    """Hold the command loop for a while (stops early on shutdown)."""
    if ctx.stopping.wait(args.seconds):
        raise CommandError("engine shut down before the sleep ended")
    return {"slept_s": args.seconds}


@command("debug.fail", debug=True)
def fail(ctx, args: DebugFail, cmd) -> dict:
    """Raise an unexpected exception inside a handler."""
    raise RuntimeError(args.message)


class _WriteLoad:
    """A thread committing one row at a time to a scratch table (outside the schema)."""

    def __init__(self) -> None:
        self.rows = 0
        self.lock_errors = 0
        self.thread: threading.Thread | None = None

    def run(self, ctx, rows_per_s: float, seconds: float) -> None:
        with ctx.db.begin() as conn:
            conn.execute(
                text("CREATE TABLE IF NOT EXISTS debug_load (id INTEGER PRIMARY KEY, t REAL)")
            )
        period = 1.0 / rows_per_s
        due = time.monotonic()
        end = due + seconds
        while not ctx.stopping.is_set() and due < end:
            try:
                with ctx.db.begin() as conn:
                    conn.execute(text("INSERT INTO debug_load (t) VALUES (:t)"), {"t": time.time()})
                self.rows += 1
            except OperationalError as exc:
                if "locked" in str(exc):
                    self.lock_errors += 1
                log.warning("debug load write failed: %s", exc)
            due += period
            ctx.stopping.wait(max(0.0, due - time.monotonic()))


_load = _WriteLoad()


@command("debug.load", debug=True)
def load(ctx, args: DebugLoad, cmd) -> dict:
    """Start writing rows_per_s rows a second for `seconds`, one commit per row."""
    if _load.thread and _load.thread.is_alive():
        raise CommandError("a write load is already running")
    _load.thread = threading.Thread(
        target=_load.run, args=(ctx, args.rows_per_s, args.seconds), daemon=True
    )
    _load.thread.start()
    return {"started": True}


@command("debug.load_stats", debug=True)
def load_stats(ctx, args, cmd) -> dict:
    """Rows written and lock errors seen by the write load so far."""
    running = bool(_load.thread and _load.thread.is_alive())
    return {"rows": _load.rows, "lock_errors": _load.lock_errors, "running": running}
