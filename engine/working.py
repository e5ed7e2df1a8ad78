"""A working model: the trainable copy of a checkpoint that sessions, manual training and
batch jobs train, in this engine.

Checkpoints never change. Training happens here: a `ModelRunner` (weights, optimizer, the one
training lock every update holds, the published snapshot predictions read) and its one
`Trainer`, which applies every update in hand-over order. What it learns is kept two ways:
- its state file (`state_file(id)`, overwritten atomically) holds the weights and optimizer at
  most AUTOSAVE_STEPS updates or AUTOSAVE_S seconds after an update, right after each manual
  step, and whenever a checkpoint is saved from it — so a kill -9 loses less than either bound,
  and the file never lags a checkpoint made from it. After a crash the next engine loads the
  file and marks the training events of the steps it lost (`db.working_models.claim`);
- checkpoints: `save_checkpoint` writes a new child checkpoint (parent: the last one saved from
  this working model, else its base; `sources`: what trained it since) — when a job ends, a
  learning session stops, or a person asks.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future

from sqlalchemy import Engine

from db import checkpoints as checkpoint_rows
from db import training
from db import working_models as rows
from engine import checkpoints
from engine.lock import TrainingLockTimeout
from engine.model import ModelConfig
from engine.online import Sample
from engine.runner import Batch, ModelRunner, Snapshot, StepResult
from engine.trainer import Trainer

log = logging.getLogger(__name__)
AUTOSAVE_STEPS = 100  # updates between autosaves, at most
AUTOSAVE_S = 5.0  # seconds between an update and the autosave that keeps it, at most
STATE_DIR = "working"


def state_file(working_model_id: int) -> str:
    """The working model's state file, relative to the data directory."""
    return f"{checkpoints.DIR}/{STATE_DIR}/{working_model_id:06d}.pt"


class WorkingModel:
    def __init__(self, database: Engine, row, config: ModelConfig, state: dict,
                 optimizer_state: dict | None, lock_timeout_s: float,
                 engine_id: str | None = None) -> None:  # fmt: skip
        self.db, self.id, self.name, self.engine_id = database, row.id, row.name, engine_id
        self.base_checkpoint_id = row.base_checkpoint_id
        self.last_checkpoint_id = row.last_checkpoint_id
        self.runner = ModelRunner(f"working-model-{row.id}", config, state, optimizer_state,
                                  lock_timeout_s=lock_timeout_s, on_step=self._record)  # fmt: skip
        self.saved_steps, self.saved_at = self.runner.steps, time.monotonic()
        self.trainer = Trainer(f"model-{row.id}", tick=self._autosave_if_due)

    @property
    def config(self) -> ModelConfig:
        return self.runner.config

    @property
    def snapshot(self) -> Snapshot:
        """The latest published weights: what predictions read, never waiting for training."""
        return self.runner.snapshot

    def _record(self, **event) -> None:
        training.record(self.db, working_model_id=self.id, **event)

    # -- handing training over (never waits for the lock) -----------------------------------

    def offer(self, sample: Sample, *, session_id: int, operation: str) -> None:
        """A live session's sample: queued, never waited for; dropped if the queue overflows."""
        self.trainer.offer(
            lambda: self.runner.train_step(
                sample.batch,
                operation=operation,
                source=sample.source,
                session_id=session_id,
                **sample.event,
            ),  # fmt: skip
            session_id=session_id,
        )

    def request(self, sample: Sample, *, operation: str, **event) -> Future:
        """A sample a person labelled (manual training): never dropped, and autosaved as soon
        as it is applied — a person's label is worth a save of its own. The Future says when it
        was applied (a StepResult) or why not; either way a training event records it (with
        `event`, e.g. the command id), so the person's page can show the outcome."""

        def apply_and_keep() -> StepResult:
            result = self.runner.train_step(
                sample.batch, operation=operation, source=sample.source, **sample.event, **event
            )
            self._autosave_logged()
            return result

        future = self.trainer.submit(apply_and_keep)
        future.add_done_callback(lambda f: self._record_failure(f, sample, event))
        return future

    def _record_failure(self, future: Future, sample: Sample, event: dict) -> None:
        """A request that never reached the lock (the engine stopped, the database failed) still
        leaves a skipped training event; a lock timeout has recorded its own already."""
        exc = future.exception()
        if exc is None or isinstance(exc, TrainingLockTimeout):
            return
        try:
            self._record(model_key=self.runner.key, source=sample.source, skipped=True,
                         error=f"not applied: {type(exc).__name__}: {exc}", **sample.event,
                         **event)  # fmt: skip
        except Exception:
            log.exception("working model %s: could not record a failed request", self.id)

    def train_step(self, batch: Batch, *, operation: str, source: str, **kw) -> StepResult:
        """One update through the trainer, waiting for it (batch jobs run on their own thread,
        so they may wait); raises what the update raised."""
        return self.trainer.submit(
            lambda: self.runner.train_step(batch, operation=operation, source=source, **kw)
        ).result()

    # -- keeping what it learned ----------------------------------------------------------------

    def save_checkpoint(self, *, name: str, created_by: str | None,
                        only_if_changed: bool = False, **row) -> Future:  # fmt: skip
        """A new child checkpoint of the weights after everything handed over before this call
        (`row`: metrics, activate, job_id). The Future holds its id — or None when
        `only_if_changed` and nothing was learned since the last checkpoint. A failure is
        logged here whether or not the caller waits for the Future."""
        future = self.trainer.submit(
            lambda: self._save_checkpoint(name, created_by, only_if_changed, row)
        )
        future.add_done_callback(
            lambda f: f.exception() and log.error(
                "working model %s: checkpoint %r not saved: %s", self.id, name, f.exception()
            )
        )  # fmt: skip
        return future

    def learned_since_checkpoint(self) -> bool:
        """Whether a save now would hold anything its last checkpoint (or base) does not:
        updates applied since, or training still queued."""
        parent = self.last_checkpoint_id or self.base_checkpoint_id
        return self.trainer.busy() or (
            self.runner.steps != checkpoint_rows.get(self.db, parent).steps
        )

    def _save_checkpoint(self, name: str, created_by: str | None, only_if_changed: bool,
                         row: dict) -> int | None:  # fmt: skip
        parent = self.last_checkpoint_id or self.base_checkpoint_id
        parent_steps = checkpoint_rows.get(self.db, parent).steps
        if only_if_changed and self.runner.steps == parent_steps:
            return None
        rows.check_owner(self.db, self.id, self.engine_id)  # not if another engine took it over
        model_state, optimizer_state, steps = self.runner.state()
        cid = checkpoints.save(
            self.db, name=name, config=self.config, model_state=model_state,
            optimizer_state=optimizer_state, steps=steps, parent_id=parent, created_by=created_by,
            working_model_id=self.id, sources=rows.sources(self.db, self.id, parent_steps, steps),
            **row,
        )  # fmt: skip
        self.last_checkpoint_id = cid
        rows.update_row(self.db, self.id, last_checkpoint_id=cid)
        if steps != self.saved_steps:  # the state file never lags a checkpoint made from it
            self._write_state(model_state, optimizer_state, steps)
        log.info("working model %s saved as checkpoint %s (step %s)", self.id, cid, steps)
        return cid

    def autosave(self) -> None:
        """Write the weights and optimizer to the state file if they changed since the last
        time (a busy lock postpones it to the next tick)."""
        if self.runner.steps == self.saved_steps:
            return
        try:
            model_state, optimizer_state, steps = self.runner.state("autosave")
        except TrainingLockTimeout as exc:
            log.warning("working model %s: autosave postponed: %s", self.id, exc)
            return
        self._write_state(model_state, optimizer_state, steps)

    def _autosave_logged(self) -> None:
        try:
            self.autosave()
        except Exception:  # the update itself was applied: say so, keep going
            log.exception("working model %s: autosave failed", self.id)

    def _write_state(self, model_state: dict, optimizer_state: dict, steps: int) -> None:
        """Keep the state, only while this engine still owns the model: an engine that was
        taken for dead (and replaced) must not overwrite what its successor trains. In the
        database store the ownership check and the bytes commit together; in a file store the
        check comes first."""
        rel = state_file(self.id)
        payload = {"format": checkpoints.FORMAT, "config": self.config.to_dict(),
                   "model": model_state, "optimizer": optimizer_state, "steps": steps}  # fmt: skip
        if checkpoints.in_database(self.db):
            with self.db.begin() as conn:
                rows.mark_saved(conn, self.id, state_file=rel, steps=steps, owner=self.engine_id)
                checkpoints.store(self.db, rel, payload, conn)
        else:  # the file is written outside the transaction: SQLite has one writer
            rows.check_owner(self.db, self.id, self.engine_id)
            checkpoints.store(self.db, rel, payload)
            with self.db.begin() as conn:
                rows.mark_saved(conn, self.id, state_file=rel, steps=steps, owner=self.engine_id)
        self.saved_steps, self.saved_at = steps, time.monotonic()

    def _autosave_if_due(self) -> None:
        unsaved = self.runner.steps - self.saved_steps
        if unsaved >= AUTOSAVE_STEPS or (
            unsaved and time.monotonic() - self.saved_at >= AUTOSAVE_S
        ):
            self.autosave()

    def close(self, drain_s: float = 5.0) -> None:
        """Finish what is queued (briefly), stop the trainer, autosave; then drop the
        references that tie this object in a cycle, so it is freed even after
        `priority.settle_heap` exempted it from the cyclic collector."""
        self.trainer.stop(drain_s)
        self._autosave_logged()
        rows.let_go(self.db, self.id, self.engine_id)  # unloaded: the next engine to use it owns it
        self.runner.on_step = None
