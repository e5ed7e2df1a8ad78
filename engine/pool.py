"""The engine's in-memory models, one `ModelRunner` (and so one training lock) per checkpoint
loaded. Everything that trains or predicts on checkpoint N shares the same runner."""

from __future__ import annotations

import threading

from sqlalchemy import Engine

from db import checkpoints as rows
from db import training
from engine import checkpoints
from engine.runner import ModelRunner


class ModelPool:
    def __init__(self, database: Engine, lock_timeout_s: float = 30.0) -> None:
        self.db = database
        self.lock_timeout_s = lock_timeout_s
        self._runners: dict[int, ModelRunner] = {}
        self._lock = threading.Lock()

    def _record(self, **event) -> None:
        training.record(self.db, **event)

    def get(self, checkpoint_id: int | None = None) -> ModelRunner:
        """The runner for a checkpoint (default: the active one), loaded on first use."""
        if checkpoint_id is None:
            checkpoint_id = checkpoints.ensure_default(self.db)
        with self._lock:
            runner = self._runners.get(checkpoint_id)
            if runner is None:
                cfg, state, opt = checkpoints.load(self.db, checkpoint_id)
                runner = ModelRunner(
                    f"checkpoint-{checkpoint_id}",
                    cfg,
                    state,
                    opt,
                    lock_timeout_s=self.lock_timeout_s,
                    on_step=self._record,
                    checkpoint_id=checkpoint_id,
                )
                self._runners[checkpoint_id] = runner
            return runner

    def save(self, runner: ModelRunner, *, name: str, created_by: str | None,
             metrics: dict | None = None, activate: bool = False,
             job_id: int | None = None) -> int:  # fmt: skip
        """Save the runner's current weights as a child of the checkpoint it came from."""
        model_state, opt_state = runner.state()
        return checkpoints.save(
            self.db,
            name=name,
            config=runner.config,
            model_state=model_state,
            optimizer_state=opt_state,
            steps=runner.optimizer_steps(),
            parent_id=runner.checkpoint_id,
            created_by=created_by,
            metrics=metrics,
            activate=activate,
            job_id=job_id,
        )

    def alias(self, checkpoint_id: int, runner: ModelRunner) -> None:
        """Record that `runner` now holds checkpoint `checkpoint_id` (an autosave of it), so
        sessions started on that checkpoint share the same model and lock."""
        with self._lock:
            self._runners[checkpoint_id] = runner
        runner.checkpoint_id = checkpoint_id

    def active_id(self) -> int | None:
        row = rows.active(self.db)
        return row.id if row else None
