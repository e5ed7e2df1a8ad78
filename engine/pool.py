"""The engine's models: frozen checkpoints and working models.

- `frozen(N)` is checkpoint N exactly as stored: read-only snapshots (eager + traced), loaded
  once and cached. Backtests, inference-only sessions and anything else that names checkpoint N
  use these, so "checkpoint N" means the same weights in any engine at any time.
- `working(W)` is working model W: trainable, with its one trainer and lock (engine/working.py),
  loaded on first use from its state file (or its base checkpoint) and claimed for this engine
  (another live engine's working model is refused). Sessions and jobs `retain` the working
  models they train and `release` them when they end; the last release unloads it (the trainer
  finishes its queue, the state is saved), so an engine running for weeks holds only the
  working models something still trains.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

from sqlalchemy import Engine

from db import checkpoints as checkpoint_rows
from db import working_models as rows
from engine import checkpoints, priority
from engine.model import CandleTransformer, ModelConfig
from engine.runner import Snapshot
from engine.working import WorkingModel, state_file

log = logging.getLogger(__name__)
FROZEN_CACHE = 8  # checkpoints kept loaded for inference


class WorkingModelElsewhere(RuntimeError):
    """Another engine that is running trains this working model."""


@dataclass(frozen=True)
class FrozenModel:
    """A checkpoint as stored, for inference only: nothing trains it."""

    checkpoint_id: int
    snapshot: Snapshot

    @property
    def config(self) -> ModelConfig:
        return self.snapshot.config


class ModelPool:
    def __init__(self, database: Engine, engine_id: str | None = None,
                 lock_timeout_s: float = 30.0) -> None:  # fmt: skip
        self.db, self.engine_id, self.lock_timeout_s = database, engine_id, lock_timeout_s
        self._frozen: OrderedDict[int, FrozenModel] = OrderedDict()
        self._working: dict[int, WorkingModel] = {}
        self._users: Counter[int] = Counter()
        self._closing: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def active_id(self) -> int:
        """The active checkpoint (on a fresh database, a new untrained default)."""
        return checkpoints.ensure_default(self.db)

    # -- frozen checkpoints -------------------------------------------------------------------

    def frozen(self, checkpoint_id: int | None = None) -> FrozenModel:
        """Checkpoint `checkpoint_id` (default: the active one) exactly as stored."""
        if checkpoint_id is None:
            checkpoint_id = self.active_id()
        with self._lock:
            found = self._frozen.get(checkpoint_id)
            if found is not None:
                self._frozen.move_to_end(checkpoint_id)
                return found
        cfg, state, _ = checkpoints.load(self.db, checkpoint_id)
        model = CandleTransformer(cfg)
        model.load_state_dict(state)
        step = checkpoint_rows.get(self.db, checkpoint_id).steps
        frozen = FrozenModel(checkpoint_id, Snapshot.freeze(model, step, None))
        with self._lock:
            self._frozen[checkpoint_id] = frozen
            while len(self._frozen) > FROZEN_CACHE:
                self._frozen.popitem(last=False)
        priority.settle_heap()
        return frozen

    # -- working models -----------------------------------------------------------------------

    def new_working(self, checkpoint_id: int | None, *, created_by: str | None) -> WorkingModel:
        """A new working model started from checkpoint `checkpoint_id` (default: active)."""
        if checkpoint_id is None:
            checkpoint_id = self.active_id()
        base = checkpoint_rows.get(self.db, checkpoint_id)
        wid = rows.create(
            self.db, name=f"from checkpoint #{base.id}", base_checkpoint_id=base.id,
            created_by=created_by, engine_id=self.engine_id, saved_steps=base.steps,
        )  # fmt: skip
        return self.working(wid)

    def working(self, working_model_id: int) -> WorkingModel:
        """Working model `working_model_id`, loaded here on first use. Raises
        UnknownWorkingModel, or WorkingModelElsewhere if another live engine trains it."""
        self._wait_until_closed(working_model_id)
        with self._lock:
            found = self._working.get(working_model_id)
            if found is not None:
                return found
            row = rows.get(self.db, working_model_id)
            cfg, state, optimizer, kept = self._weights_of(row)
            found = rows.claim(self.db, row.id, self.engine_id, kept_steps=kept)
            if found.owner is not None:
                raise WorkingModelElsewhere(
                    f"working model {row.id} is trained by engine {found.owner}, which is "
                    "running: one engine trains a working model at a time"
                )
            if found.lost:
                log.warning(
                    "working model %s lost %d training step(s) to a crash (kept: step %d)",
                    row.id, found.lost, kept,
                )  # fmt: skip
            model = WorkingModel(
                self.db, row, cfg, state, optimizer, self.lock_timeout_s, self.engine_id
            )
            self._working[row.id] = model
        priority.settle_heap()
        return model

    def _weights_of(self, row) -> tuple[ModelConfig, dict, dict | None, int]:
        """Config, weights, optimizer and step count of its state file if one was ever written
        (the file is the truth: a crash between writing it and updating the row leaves the row
        behind, never ahead), else of its base checkpoint."""
        payload = checkpoints.fetch(self.db, state_file(row.id))
        if payload is None:
            cfg, state, optimizer = checkpoints.load(self.db, row.base_checkpoint_id)
            return cfg, state, optimizer, checkpoint_rows.get(self.db, row.base_checkpoint_id).steps
        return (ModelConfig.from_dict(payload["config"]), payload["model"], payload["optimizer"],
                payload["steps"])  # fmt: skip

    def retain(self, model: WorkingModel) -> None:
        """Something (a session, a job) trains `model` from now on."""
        with self._lock:
            self._users[model.id] += 1

    def release(self, model: WorkingModel) -> None:
        """Something that trained `model` ended. When nothing else does, the model is unloaded
        on a thread of its own: its trainer finishes what was handed over (a checkpoint save,
        say), stops, and the state is saved; the next `working()` loads it again."""

        def unload() -> None:
            try:
                model.close(drain_s=self.lock_timeout_s + 5)
            except Exception:
                log.exception("working model %s: could not unload cleanly", model.id)

        with self._lock:
            self._users[model.id] -= 1
            if self._users[model.id] > 0 or self._working.get(model.id) is not model:
                return
            del self._users[model.id]
            del self._working[model.id]
            closing = self._closing[model.id] = threading.Thread(
                target=unload, name=f"unload-model-{model.id}", daemon=True
            )
        closing.start()

    def _wait_until_closed(self, working_model_id: int, timeout: float | None = None) -> None:
        """Join the unloading of `working_model_id` if one is under way (a thread that has
        used torch must not outlive the interpreter: its C++ side aborts the process)."""
        with self._lock:
            closing = self._closing.get(working_model_id)
        if closing is not None:
            closing.join(self.lock_timeout_s + 10 if timeout is None else timeout)
            with self._lock:
                if self._closing.get(working_model_id) is closing and not closing.is_alive():
                    del self._closing[working_model_id]

    def loaded(self) -> list[WorkingModel]:
        """The working models this engine has loaded."""
        with self._lock:
            return list(self._working.values())

    def close_all(self) -> None:
        """Engine shutdown: every working model finishes what is queued and autosaves."""
        for model in self.loaded():
            try:
                model.close()
            except Exception:
                log.exception("working model %s: could not close cleanly", model.id)
        with self._lock:
            closing = list(self._closing)
        for working_model_id in closing:
            self._wait_until_closed(working_model_id, timeout=30)
