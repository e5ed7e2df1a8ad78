"""One in-memory model: its weights, optimizer, training lock and published snapshot.

Every weight update in the engine goes through `ModelRunner.train_step`, which holds the lock,
so two trainers can never interleave a backward pass and an optimizer step (the seed system's
"inplace operation" / version-mismatch bug). After each step the runner publishes a frozen copy
of the weights; inference only ever reads such a snapshot, so it never waits for training and
never sees half-updated weights.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.device import training_device
from engine.inference import Prediction, predict_last, trace_last_candle
from engine.lock import TrainingLock, TrainingLockTimeout
from engine.model import CandleTransformer, ModelConfig

log = logging.getLogger(__name__)
GHOST_WEIGHT = 0.1
IGNORE = -100


@dataclass
class Batch:
    """Training input: features (B, T, F), action targets (B, T) with IGNORE where unlabelled,
    ghost targets (B, T, k, 4) with NaN where the future is unknown."""

    x: torch.Tensor
    actions: torch.Tensor
    ghost: torch.Tensor

    @property
    def labelled(self) -> int:
        return int((self.actions != IGNORE).sum())


@dataclass(frozen=True)
class StepResult:
    step: int
    loss: float
    accuracy: float | None
    samples: int
    lock_wait_ms: float
    duration_ms: float


@dataclass(frozen=True)
class Snapshot:
    """Weights as they were after optimizer step `step`, never modified: the eager model (any
    length, batch passes) and the same weights traced for live last-candle inference."""

    step: int
    model: CandleTransformer
    traced: torch.jit.ScriptModule

    def predict_last(self, ohlcv: np.ndarray) -> Prediction:
        """Live inference at the last candle of `ohlcv`."""
        return predict_last(self.model, ohlcv, self.traced)

    @classmethod
    def freeze(
        cls, model: CandleTransformer, step: int, traced_template: torch.jit.ScriptModule | None
    ) -> Snapshot:
        """Frozen CPU copies of `model`'s weights as they are now (`traced_template`: the same
        architecture traced once, reused so a snapshot costs a copy, not a trace)."""
        # The dense-mask caches are rebuilt on demand: copying them would copy (and, training
        # on a GPU, keep) device tensors in every snapshot.
        memo = {id(m._dense_cache): {} for m in model.modules() if hasattr(m, "_dense_cache")}
        eager = copy.deepcopy(model, memo).to("cpu").eval()
        for p in eager.parameters():
            p.requires_grad_(False)
        if traced_template is None:
            return cls(step, eager, trace_last_candle(eager))
        traced = copy.deepcopy(traced_template)
        traced.model.load_state_dict(eager.state_dict(), strict=False)
        return cls(step, eager, traced)


def loss_and_accuracy(model, batch: Batch) -> tuple[torch.Tensor, float | None, int]:
    """Cross-entropy on labelled candles plus a small ghost-candle term where the future exists."""
    logits, ghost = model(batch.x)
    mask = batch.actions != IGNORE
    n = int(mask.sum())
    loss = logits.sum() * 0.0
    acc = None
    if n:
        loss = loss + F.cross_entropy(logits[mask], batch.actions[mask])
        acc = float((logits[mask].argmax(-1) == batch.actions[mask]).float().mean())
    known = ~torch.isnan(batch.ghost)
    if known.any():
        loss = loss + GHOST_WEIGHT * F.smooth_l1_loss(ghost[known], batch.ghost[known])
    return loss, acc, n


class ModelRunner:
    def __init__(
        self,
        key: str,
        config: ModelConfig,
        state_dict: dict | None = None,
        optimizer_state: dict | None = None,
        lr: float = 1e-3,
        lock_timeout_s: float = 30.0,
        on_step: Callable[..., None] | None = None,
        seed: int = 0,
        device: torch.device | None = None,
    ) -> None:
        self.key = key
        self.config = config
        torch.manual_seed(seed)
        self.device = device or training_device()
        self.model = CandleTransformer(config)
        if state_dict is not None:
            self.model.load_state_dict(state_dict)
        # Traced from a CPU copy: live inference stays on the CPU whatever trains the model.
        self._traced_template = trace_last_candle(copy.deepcopy(self.model))
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.lock = TrainingLock(key, lock_timeout_s)
        self.on_step = on_step
        self.steps = self.optimizer_steps()
        self._snapshot = self._publish()

    # -- inference side ---------------------------------------------------------------------

    def _publish(self) -> Snapshot:
        """Frozen copies of the current weights (call with the lock held, or before sharing)."""
        return Snapshot.freeze(self.model, self.steps, self._traced_template)

    @property
    def snapshot(self) -> Snapshot:
        """The latest published weights (a whole step's worth, never mid-update)."""
        return self._snapshot

    # -- training side ----------------------------------------------------------------------

    def optimizer_steps(self) -> int:
        """AdamW's own count of steps taken (what the tests compare recorded steps with)."""
        states = [s.get("step") for s in self.optimizer.state.values() if "step" in s]
        return int(max((float(s) for s in states), default=0))

    def train_step(
        self,
        batch: Batch,
        *,
        operation: str,
        source: str,
        lr: float | None = None,
        timeout_s: float | None = None,
        **event: object,
    ) -> StepResult:
        """One weight update under the lock (at learning rate `lr` for this step only; others
        sharing the model keep theirs). Raises TrainingLockTimeout (after recording a skipped
        event) if the lock is not free in time."""
        t0 = time.perf_counter()
        try:
            with self.lock.hold(operation, timeout_s) as waited:
                loss, acc, n = self._update(batch, lr)
                step = self.steps
        except TrainingLockTimeout as exc:
            self._report(model_key=self.key, source=source, skipped=True, error=str(exc),
                         lock_wait_ms=(time.perf_counter() - t0) * 1000, samples=0, **event)  # fmt: skip
            raise
        result = StepResult(
            step, float(loss.detach()), acc, n, waited * 1000, (time.perf_counter() - t0) * 1000
        )
        self._report(
            model_key=self.key, source=source, step=result.step, loss=result.loss,
            samples=result.samples, lock_wait_ms=result.lock_wait_ms,
            duration_ms=result.duration_ms, **event,
        )  # fmt: skip
        return result

    def _update(self, batch: Batch, lr: float | None):
        """Forward, backward, optimizer step, publish (call with the lock held)."""
        self.model.train()
        groups = self.optimizer.param_groups
        usual = [g["lr"] for g in groups]
        if lr is not None:
            for group in groups:
                group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type != "cpu":
            batch = Batch(*(t.to(self.device) for t in (batch.x, batch.actions, batch.ghost)))
        try:
            loss, acc, n = loss_and_accuracy(self.model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
        finally:
            for group, rate in zip(groups, usual, strict=True):
                group["lr"] = rate
        self.steps += 1
        self._snapshot = self._publish()
        return loss, acc, n

    def _report(self, **event) -> None:
        """Tell `on_step` (a training event); a failure to record never undoes an update."""
        if self.on_step is None:
            return
        try:
            self.on_step(**event)
        except Exception:
            log.exception("model %s: could not record a training event", self.key)

    def state(self, operation: str = "checkpoint save") -> tuple[dict, dict, int]:
        """Model and optimizer state_dicts and the step count, copied under the lock
        (consistent with each other). Raises TrainingLockTimeout if the lock stays busy."""
        with self.lock.hold(operation):
            model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            optimizer = copy.deepcopy(self.optimizer.state_dict())
            return model, _to_cpu(optimizer), self.steps


def _to_cpu(state):
    """A state_dict (nested dicts / lists of tensors) with every tensor on the CPU, so a
    checkpoint written from a GPU loads anywhere."""
    if isinstance(state, torch.Tensor):
        return state.to("cpu")
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_to_cpu(v) for v in state)
    return state
