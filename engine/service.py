"""`python -m engine serve`: the command loop, the heartbeat, reconciliation and shutdown.

One process, one instance id; any number of them may share one PostgreSQL database
(docs/several-machines.md). The main thread runs the command loop: it sleeps on a wake-up
(PostgreSQL LISTEN / NOTIFY, or a loopback datagram on SQLite: db/wake.py) with the poll
interval as the fallback, claims the commands it may run one at a time (those aimed at it or at
nobody, and jobs only while it has a free slot), forwards those another engine must run, and
runs the rest. A heartbeat thread renews this instance's lease and reaps instances that lost
theirs: their running commands end `failed` and their jobs `interrupted`, each with a reason
naming who found them and when, and their sessions resume here. An engine that finds itself
reaped (it stalled past its lease) stops without writing anything more.
SIGTERM / SIGINT stop the loop after the current command and record a clean stop.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field

from sqlalchemy import Engine, exists, select

import db
from contract.access import SYSTEM_ACCOUNT
from contract.payloads import summarise
from contract.vocab import JOB_KINDS, MAX_JOBS
from db import accounts, bus, engines, jobs, routing
from db.models import Command, utcnow
from db.wake import listener as wake_listener
from engine import __version__, access, priority, registry
from engine.job_runner import JobRunner
from engine.pool import ModelPool
from engine.registry import CommandError
from engine.sessions import SessionManager

log = logging.getLogger("engine")


@dataclass
class Settings:
    poll_interval_s: float = 0.1
    heartbeat_s: float = 1.0
    reap_every_beats: int = 1
    debug_commands: bool = False
    seed: bool = True
    lock_timeout_s: float = 30.0
    name: str | None = None  # what the views call it (default: the host name)
    max_jobs: int | None = MAX_JOBS  # background jobs at once; None: no limit
    max_sessions: int | None = None  # live sessions at once; None: no limit


@dataclass
class EngineContext:
    """What handlers may use: the database, who we are, and the shutdown flag."""

    db: Engine
    instance_id: str
    settings: Settings
    started: float = field(default_factory=time.monotonic)
    stopping: threading.Event = field(default_factory=threading.Event)
    models: ModelPool | None = None
    sessions: SessionManager | None = None
    jobs: JobRunner | None = None
    fenced: bool = False  # found dead by another engine: write nothing more

    def uptime_s(self) -> float:
        return time.monotonic() - self.started


def new_instance_id() -> str:
    """host:pid:random, unique per run and readable in the views."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class EngineService:
    """The long-lived engine process."""

    def __init__(self, database: Engine, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.ctx = EngineContext(database, new_instance_id(), self.settings)
        self.ctx.models = ModelPool(database, self.ctx.instance_id, self.settings.lock_timeout_s)
        self.ctx.sessions = SessionManager(self.ctx)
        self.ctx.jobs = JobRunner(database, self.ctx.instance_id, self.ctx.stopping,
                                  on_free=lambda: self.wake.poke())  # fmt: skip
        self.wake = wake_listener(database)
        # Two threads: one renews the lease and does nothing else, so no slow work (a takeover
        # loading models) can make this engine look dead; the other finds dead engines.
        self._beat_thread = threading.Thread(target=self._beat_loop, name="heartbeat", daemon=True)
        self._reap_thread = threading.Thread(target=self._reap_loop, name="reaper", daemon=True)
        self._lease_end = threading.Event()  # set once the clean stop is recorded
        self.stop_reason = "stopped"

    @property
    def db(self) -> Engine:
        return self.ctx.db

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Upgrade the schema, register, reconcile what a crash left, seed on first run."""
        db.upgrade(self.db)
        priority.configure_process()
        engines.register(self.db, self.ctx.instance_id, __version__, self.wake.address,
                         name=self.settings.name, max_jobs=self.settings.max_jobs,
                         max_sessions=self.settings.max_sessions)  # fmt: skip
        log.info("engine %s (version %s) starting", self.ctx.instance_id, __version__)
        self._beat_thread.start()  # the lease is renewed from now on, however long start-up takes
        self.reap(at_start=True)
        if self.settings.seed:
            self._seed_first_run()
        from engine import checkpoints

        checkpoints.ensure_default(self.db)
        if len(accounts.all_(self.db)) <= 1:  # only `system`: nobody can sign in to the app
            log.warning("no accounts yet: `python -m engine user first-admin` prints a one-time "
                        "sign-in link for the first admin")  # fmt: skip
        self._resume_sessions()
        priority.settle_heap()
        self._reap_thread.start()

    def stop(self, reason: str) -> None:
        """Ask the loop to finish the current command and exit (safe from signal handlers)."""
        self.stop_reason = reason
        self.ctx.stopping.set()
        self.wake.poke()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(
                sig,
                lambda signum, _f: self.stop(f"clean shutdown on {signal.Signals(signum).name}"),
            )

    def serve_forever(self) -> None:
        """Run until `stop()`; then record a clean stop."""
        self.start()
        log.info(
            "engine %s serving (poll %.0f ms)",
            self.ctx.instance_id,
            self.settings.poll_interval_s * 1000,
        )
        try:
            while not self.ctx.stopping.is_set():
                try:
                    ran = self.run_pending()
                except Exception:  # the database went away: keep trying, do not exit
                    log.exception("command loop: the database failed; retrying")
                    ran = 0
                    self.ctx.stopping.wait(1.0)
                if not ran:
                    self.wake.wait(self.settings.poll_interval_s)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop everything, keeping the lease until the clean stop is recorded: an engine that
        takes a minute to stop its jobs must not be taken for dead meanwhile."""
        self.ctx.stopping.set()
        if self._reap_thread.is_alive():  # first: a reap could otherwise resume sessions here
            self._reap_thread.join(timeout=60)
        self.ctx.sessions.stop_all()  # still 'running': another engine, or the next start, resumes
        self.ctx.jobs.join(timeout=60)  # they end 'interrupted', keeping what they did
        self.ctx.models.close_all()  # trainers finish what is queued; working models autosave
        if not self.ctx.fenced:
            self.ctx.sessions.record_queue_counts()
        engines.mark_stopped(self.db, self.ctx.instance_id, self.stop_reason)
        self._lease_end.set()
        if self._beat_thread.is_alive():
            self._beat_thread.join(timeout=5)
        self.wake.close()
        log.info("engine %s stopped: %s", self.ctx.instance_id, self.stop_reason)

    # -- commands ---------------------------------------------------------------------------

    def _has_pending(self) -> bool:
        """Whether a claim is worth trying. On SQLite a cheap read comes first, so an idle poll
        never takes the write lock; PostgreSQL claims at once (a claim that finds nothing locks
        nothing), saving a round trip on every wake-up."""
        if self.db.dialect.name != "sqlite":
            return True
        with db.readonly(self.db).begin() as conn:
            return bool(conn.scalar(select(exists().where(Command.status == "pending"))))

    def run_pending(self) -> int:
        """Claim and run commands until none is left for this engine (or we are stopping); how
        many ran (or were forwarded)."""
        ran = 0
        while not self.ctx.stopping.is_set() and self._has_pending():
            cmd = bus.claim(self.db, self.ctx.instance_id, self._no_room_for())
            if cmd is None:
                break  # another engine took it
            self.execute(cmd)
            ran += 1
        return ran

    def _no_room_for(self) -> tuple[str, ...]:
        """Command kinds this engine leaves to others now: jobs, while its slots are full."""
        full = self.settings.max_jobs is not None and (
            len(self.ctx.jobs.running()) >= self.settings.max_jobs
        )
        return JOB_KINDS if full else ()

    def _runs_elsewhere(self, cmd: Command, args) -> str | None:
        """The engine that must run `cmd` instead of this one, if any: the owner of the session
        or working model it is about, or, for a new session, the least-loaded engine."""
        if routing.subjects(args):
            owner = self._owner_of(args)
            if owner is not None:
                return None if owner == self.ctx.instance_id else owner
        if cmd.kind != "session.start" or cmd.target is not None:
            return None  # aimed at this engine by another one's placement: not placed again
        best = engines.least_loaded(self.db, prefer=self.ctx.instance_id)
        if best is None and self.ctx.sessions.room():
            return None  # no engine looks alive with room, yet this one is both
        if best is None:
            raise CommandError(
                "every engine runs as many live sessions as it may (serve --max-sessions): "
                "stop a session or start another engine"
            )
        return None if best == self.ctx.instance_id else best

    def _owner_of(self, args) -> str | None:
        """The engine holding what `args` is about. A session whose engine died and that no
        one has resumed yet is resumed first (here, or by the engine holding its model), so a
        command about it waits for its new owner instead of failing."""
        with db.readonly(self.db).begin() as conn:
            owner = routing.owner(conn, args)
            orphan = owner is None and routing.orphaned(conn, args)
        if not orphan:
            return owner
        self._resume_sessions()
        with db.readonly(self.db).begin() as conn:
            return routing.owner(conn, args)

    def execute(self, cmd: Command) -> None:
        """Run one claimed command to `done` or `failed`, or forward it to the engine that
        must run it; never raises."""
        started = time.perf_counter()
        try:
            handler, args = registry.resolve(cmd.kind, cmd.payload, self.settings.debug_commands)
            elsewhere = self._runs_elsewhere(cmd, args)
            if elsewhere is not None:
                bus.forward(self.db, cmd.id, self.ctx.instance_id, elsewhere)
                log.debug("command %s (%s) forwarded to %s", cmd.id, cmd.kind, elsewhere)
                return
            access.authorize(self.db, cmd, args)
            result = handler.fn(self.ctx, args, cmd) or {}
        except CommandError as exc:
            refused = isinstance(exc, access.Forbidden)
            self._answer(cmd, error=str(exc), outcome="refused" if refused else "failed")
            log.info("command %s (%s) %s: %s", cmd.id, cmd.kind,
                     "refused" if refused else "failed", exc)  # fmt: skip
            return
        except Exception as exc:  # a bug in a handler must not take the engine down
            log.error("command %s (%s) raised:\n%s", cmd.id, cmd.kind, traceback.format_exc())
            self._answer(cmd, error=f"{cmd.kind} failed inside the engine: {type(exc).__name__}: "
                         f"{exc} (the engine log of {self.ctx.instance_id} has the traceback)")  # fmt: skip
            return
        self._answer(cmd, result=result)
        log.debug("command %s (%s) done in %.1f ms", cmd.id, cmd.kind,
                  (time.perf_counter() - started) * 1e3)  # fmt: skip

    def _answer(self, cmd: Command, *, result: dict | None = None, error: str | None = None,
                outcome: str | None = None):  # fmt: skip
        """Store a command's answer and its audit line, in one transaction. An answer the
        database refuses (a result it cannot store) fails the command with that reason instead
        of taking the command loop down."""
        line = dict(action=cmd.kind, outcome=outcome or ("failed" if error else "ok"),
                    actor=cmd.created_by, about=f"command {cmd.id}",
                    detail=error if error else summarise(cmd.payload))  # fmt: skip
        try:
            if error is None:
                bus.finish(self.db, cmd.id, result, audited=line)
            else:
                bus.fail(self.db, cmd.id, error, audited=line)
        except Exception as exc:
            log.error("command %s (%s): its answer could not be stored:\n%s", cmd.id, cmd.kind,
                      traceback.format_exc())  # fmt: skip
            error = (f"{cmd.kind}: the engine could not store its answer ({type(exc).__name__}); "
                     f"the engine log of {self.ctx.instance_id} has the details")  # fmt: skip
            try:
                bus.fail(self.db, cmd.id, error, audited={**line, "outcome": "failed",
                                                          "detail": error})  # fmt: skip
            except Exception:
                log.exception("command %s: not even its failure could be stored", cmd.id)

    # -- heartbeat and reconciliation -------------------------------------------------------

    def _beat_loop(self) -> None:
        while not self._lease_end.wait(self.settings.heartbeat_s):
            try:
                if not engines.beat(self.db, self.ctx.instance_id):
                    self._fenced()
                    return
            except Exception:
                log.exception("heartbeat failed; retrying")

    def _reap_loop(self) -> None:
        every = self.settings.heartbeat_s * self.settings.reap_every_beats
        while not self.ctx.stopping.wait(every):
            try:
                self.reap(at_start=False)
            except Exception:
                log.exception("looking for dead engines failed; retrying")

    def _fenced(self) -> None:
        """Another engine found this one dead (it stalled past its lease) and took its work
        over. Stop at once: its session candles and working-model saves are refused by
        ownership checks from now on, and a supervisor restarts it as a new instance."""
        self.ctx.fenced = True
        log.error("engine %s was found dead by another engine and its work taken over; "
                  "stopping without saving (a restart joins as a new engine)",
                  self.ctx.instance_id)  # fmt: skip
        self._lease_end.set()
        self.stop("stopped: its lease had expired and its work was taken over")

    def reap(self, at_start: bool) -> None:
        """Close out engine instances that died without a clean stop."""
        now = utcnow()
        for row in engines.unstopped(self.db):
            if row.id == self.ctx.instance_id or engines.is_alive(row, now):
                continue
            when = now.strftime("%Y-%m-%d %H:%M:%S UTC")
            found = (
                f"found at the restart of the engine (new instance {self.ctx.instance_id}) at {when}"
                if at_start
                else f"found by engine {self.ctx.instance_id} at {when}"
            )
            reason = (
                f"interrupted: engine {row.id} stopped without finishing this "
                f"(last heartbeat {row.last_beat:%Y-%m-%d %H:%M:%S} UTC); {found}"
            )
            if not engines.mark_stopped(self.db, row.id, f"died; {found}"):
                continue  # another engine found it first and closes it out
            failed = bus.fail_running_of(self.db, [row.id], reason)
            interrupted = jobs.interrupt_running_of(self.db, [row.id], reason)
            log.warning(
                "engine %s had died: %d command(s) failed, %d job(s) interrupted",
                row.id,
                len(failed),
                len(interrupted),
            )
        if not at_start:
            self._resume_sessions()  # before the commands about them are claimed anew

    def _resume_sessions(self) -> None:
        for sid in self.ctx.sessions.resume_orphans():
            log.info("resumed session %s", sid)

    def _seed_first_run(self) -> None:
        from db import candles
        from market.importer import seed_samples

        try:
            if candles.imports(self.db, limit=1):
                return  # the database has had data; never re-seed what a person removed
            for outcome in seed_samples(self.db, created_by=SYSTEM_ACCOUNT):
                log.info("seeded %s", outcome.message())
        except Exception as exc:
            log.error("could not seed sample market data: %s", exc)
