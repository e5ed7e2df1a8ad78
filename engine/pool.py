"""The engine's models: frozen checkpoints and working models.

- `frozen(N)` is checkpoint N exactly as stored: read-only snapshots (eager + traced), loaded
  once and cached. Backtests, inference-only sessions and anything else that names checkpoint N
  use these, so "checkpoint N" means the same weights in any engine at any time.
- `working(W)` is working model W: trainable, with its one trainer and lock (engine/working.py),
  loaded on first use from its state file (or its base checkpoint), owned by this engine.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import Engine

from db import checkpoints as checkpoint_rows
from db import working_models as rows
from engine import checkpoints, priority
from engine.model import CandleTransformer, ModelConfig
from engine.runner import Snapshot
from engine.working import WorkingModel

log = logging.getLogger(__name__)
FROZEN_CACHE = 8  # checkpoints kept loaded for inference


@dataclass(frozen=True)
class FrozenModel:
    """A checkpoint as stored, for inference only: nothing trains it."""

    checkpoint_id: int
    snapshot: Snapshot

    @property
    def config(self) -> ModelConfig:
        return self.snapshot.model.cfg


class ModelPool:
    def __init__(self, database: Engine, engine_id: str | None = None,
                 lock_timeout_s: float = 30.0) -> None:  # fmt: skip
        self.db, self.engine_id, self.lock_timeout_s = database, engine_id, lock_timeout_s
        self._frozen: OrderedDict[int, FrozenModel] = OrderedDict()
        self._working: dict[int, WorkingModel] = {}
        self._lock = threading.Lock()

    def active_id(self) -> int:
        """The active checkpoint (on a fresh database, a new untrained default)."""
        return checkpoints.ensure_default(self.db)

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

    def new_working(self, checkpoint_id: int | None, *, created_by: str | None,
                    name: str | None = None) -> WorkingModel:  # fmt: skip
        """A new working model started from checkpoint `checkpoint_id` (default: active)."""
        if checkpoint_id is None:
            checkpoint_id = self.active_id()
        base = checkpoint_rows.get(self.db, checkpoint_id)
        wid = rows.create(
            self.db, name=name or f"from #{base.id} {base.name}", base_checkpoint_id=base.id,
            created_by=created_by, engine_id=self.engine_id, saved_steps=base.steps,
        )  # fmt: skip
        return self.working(wid)

    def working(self, working_model_id: int) -> WorkingModel:
        """Working model `working_model_id`, loaded here on first use."""
        with self._lock:
            found = self._working.get(working_model_id)
            if found is not None:
                return found
            row = rows.get(self.db, working_model_id)
            cfg, state, optimizer = self._weights_of(row)
            model = WorkingModel(self.db, row, cfg, state, optimizer, self.lock_timeout_s)
            # The file is the truth: a crash between writing it and updating the row leaves the
            # row behind, never ahead.
            lost = rows.mark_lost(self.db, row.id, kept_steps=model.runner.steps)
            if lost:
                log.warning(
                    "working model %s lost %d training step(s) to a crash (kept: step %d)",
                    row.id, lost, model.runner.steps,
                )  # fmt: skip
            rows.update_row(self.db, row.id, engine_id=self.engine_id)
            self._working[row.id] = model
        priority.settle_heap()
        return model

    def _weights_of(self, row) -> tuple[ModelConfig, dict, dict | None]:
        """Its state file if it has been autosaved, else its base checkpoint."""
        if row.state_file is None:
            return checkpoints.load(self.db, row.base_checkpoint_id)
        payload = checkpoints.read(checkpoints.resolve(row.state_file))
        return ModelConfig.from_dict(payload["config"]), payload["model"], payload["optimizer"]

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
