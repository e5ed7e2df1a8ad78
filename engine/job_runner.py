"""Background jobs (batch training, backtests): one owner for their bookkeeping.

A command handler checks its request, creates the job (`JobRunner.create`) and hands the work
to `JobRunner.run`. From there the runner owns every state change of the job row: it runs the
work on a thread of its own at background priority and ends the job exactly once —
- `done` with the work's message and result;
- `cancelled` when a person asked (the cancel flag) or `interrupted` when the engine shuts
  down: `Job.progress` raises `JobStopped`, and the work's `on_stop` may keep what was done
  (weights so far, a partial report);
- `failed` when the work raised, with the exception as the message.
A job whose engine dies is ended `interrupted` by the next engine to notice
(`db.jobs.interrupt_running_of`, with the backtest report it was writing).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from db import jobs
from engine import priority

log = logging.getLogger(__name__)


class JobStopped(Exception):
    """The job must stop: a person cancelled it, or the engine is shutting down."""

    def __init__(self, status: str, where: str) -> None:
        self.status, self.where = status, where
        how = "engine shutdown" if status == "interrupted" else "cancel"
        super().__init__(f"stopped by {how} at {where}")


@dataclass
class Outcome:
    """How a job ended: its message, its result, and its status when not `done`."""

    message: str
    result: dict | None = None
    status: str = "done"


class Job:
    """What the work sees of its job: its id, and progress reporting that stops it."""

    PROGRESS_EVERY_S = 0.25  # progress without a result is written (and cancel read) this often

    def __init__(self, database: Engine, job_id: int, kind: str, stopping: threading.Event):
        self.db, self.id, self.kind, self._stopping = database, job_id, kind, stopping
        self._written = -self.PROGRESS_EVERY_S

    def progress(
        self, fraction: float, message: str, result: dict | None = None, *, final: bool = False
    ) -> None:
        """Record progress (0–1); raises JobStopped if a cancel was asked or the engine stops.

        Work reports as often as it likes (a pass every chunk, training every batch): a write
        and the cancel check that comes with it cost a transaction, so progress is written at
        most every PROGRESS_EVERY_S — always when it brings a result, and at the end of the
        work (`fraction` 1, or `final` for a stage that ends below 1)."""
        if self._stopping.is_set():
            raise JobStopped("interrupted", message)
        now = time.monotonic()
        final = final or fraction >= 1
        if result is None and not final and now - self._written < self.PROGRESS_EVERY_S:
            return
        self._written = now
        if jobs.update_progress(self.db, self.id, fraction, message, result):
            raise JobStopped("cancelled", message)


Work = Callable[[Job], Outcome]
OnStop = Callable[[Job, JobStopped], Outcome]


class JobRunner:
    def __init__(self, database: Engine, engine_id: str, stopping: threading.Event,
                 on_free: Callable[[], None] | None = None) -> None:  # fmt: skip
        """`on_free` is called whenever a job ends (a slot is free: the engine may take more)."""
        self.db, self.engine_id, self.stopping = database, engine_id, stopping
        self.on_free = on_free
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def create(self, kind: str, cmd, *, message: str = "queued",
               working_model_id: int | None = None) -> Job:  # fmt: skip
        """The job row for command `cmd`, queued; `run` starts it (rows that point at the job,
        such as a backtest report, can be written in between)."""
        job_id = jobs.create(
            self.db, kind, command_id=cmd.id, engine_id=self.engine_id,
            created_by=cmd.created_by, message=message, working_model_id=working_model_id,
        )  # fmt: skip
        return Job(self.db, job_id, kind, self.stopping)

    def run(self, job: Job, work: Work, *, on_stop: OnStop | None = None,
            on_failure: Callable[[BaseException], None] | None = None,
            on_end: Callable[[], None] | None = None) -> int:  # fmt: skip
        """Run `work` on its own thread; returns the job id. `on_end` runs once the job row is
        final, however it ended."""
        thread = threading.Thread(
            target=self._run, args=(job, work, on_stop, on_failure, on_end), name=f"job-{job.id}",
            daemon=True,
        )  # fmt: skip
        with self._lock:
            self._threads[job.id] = thread
        thread.start()
        return job.id

    def _run(self, job: Job, work: Work, on_stop: OnStop | None, on_failure, on_end) -> None:
        priority.background_thread()
        try:
            self._carry_out(job, work, on_stop, on_failure)
        finally:
            if on_end is not None:
                try:
                    on_end()
                except Exception:
                    log.exception("%s job %s: on_end failed", job.kind, job.id)
            with self._lock:  # an engine running for weeks keeps no trace of ended jobs
                self._threads.pop(job.id, None)
            if self.on_free is not None:
                self.on_free()

    def _carry_out(self, job: Job, work: Work, on_stop: OnStop | None, on_failure) -> None:
        try:
            try:
                outcome = work(job)
            except JobStopped as stop:
                outcome = on_stop(job, stop) if on_stop else Outcome(str(stop), status=stop.status)
        except Exception as exc:
            log.error("%s job %s failed:\n%s", job.kind, job.id, traceback.format_exc())
            if on_failure is not None:
                try:
                    on_failure(exc)
                except Exception:
                    log.exception(
                        "%s job %s: cleaning up after the failure failed", job.kind, job.id
                    )
            jobs.finish(self.db, job.id, "failed", f"failed: {exc}",
                        error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            return
        jobs.finish(self.db, job.id, outcome.status, outcome.message, outcome.result)

    def running(self) -> list[int]:
        """Ids of the jobs whose thread still runs."""
        with self._lock:
            return [j for j, t in self._threads.items() if t.is_alive()]

    def join(self, timeout: float) -> None:
        """Wait for the running jobs (shutdown: they see the stop flag and end interrupted)."""
        with self._lock:
            threads = list(self._threads.items())
        for job_id, thread in threads:
            if thread.is_alive():
                log.info("waiting for job %s to stop", job_id)
                thread.join(timeout)
