"""One in-memory model: its weights, optimizer, training lock and published snapshot.

Every weight update in the engine goes through `ModelRunner.train_step`, which holds the lock,
so two trainers can never interleave a backward pass and an optimizer step (the seed system's
"inplace operation" / version-mismatch bug). After each step the runner publishes a frozen copy
of the weights; inference only ever reads such a snapshot, so it never waits for training and
never sees half-updated weights.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import priority, step_worker
from engine.device import training_device
from engine.inference import Prediction, context_size, predict_last
from engine.lock import TrainingLock, TrainingLockTimeout
from engine.model import CandleTransformer, ModelConfig

log = logging.getLogger(__name__)
GHOST_WEIGHT = 0.1
MAX_GRAD_NORM = 1.0  # every step's gradients are clipped to this norm
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

    @property
    def known(self) -> int:
        """Ghost target values known (not NaN)."""
        return int((~torch.isnan(self.ghost)).sum())

    def split(self, parts: int) -> list[Batch]:
        """At most `parts` batches of whole rows (views, no copy)."""
        k = max(1, min(parts, len(self.x)))
        x, actions, ghost = (t.tensor_split(k) for t in (self.x, self.actions, self.ghost))
        return [Batch(*r) for r in zip(x, actions, ghost, strict=True)]


@dataclass(frozen=True)
class StepResult:
    step: int
    loss: float
    accuracy: float | None
    samples: int
    lock_wait_ms: float
    duration_ms: float


class LiveForward:
    """One architecture's last-candle forward, traced once with the weights as one flat input,
    so every snapshot of that model shares one compiled function and costs only its tensors.

    Why one trace: a traced module holds its weights, so each published snapshot used to
    deep-copy a module tree (eager model and traced copy: ~37 ms of Python a step under load,
    with the GIL held — the training thread's largest GIL hold, and about a fifth of a batch
    step). Why one flat input: a traced call takes the GIL again for each tensor it was given,
    at the end (with the 37 weight tensors as inputs, about 54 times a call, against 4 with one
    buffer), and each time it waits for any other thread running Python: beside a Python-busy
    thread a prediction took 6.1 ms instead of 1.1 (a thread of 0.1 ms switches, 54 times)."""

    def __init__(self, model: CandleTransformer) -> None:
        template = copy.deepcopy(model).to("cpu").eval()  # never trained: only its structure
        state = template.state_dict()
        if len({t.dtype for t in state.values()}) != 1:
            raise TypeError("LiveForward keeps weights in one buffer: they need one dtype")
        self.names = list(state)
        self.shapes = [t.shape for t in state.values()]
        self.sizes = [t.numel() for t in state.values()]
        slots = []
        for name in self.names:
            owner, _, attr = name.rpartition(".")
            module = template.get_submodule(owner)
            slots.append((module._parameters if attr in module._parameters else module._buffers,
                          attr))  # fmt: skip

        def last_candle(x: torch.Tensor, flat: torch.Tensor):
            kept = [slot[attr] for slot, attr in slots]
            try:
                for (slot, attr), w in zip(slots, self.unflatten(flat), strict=True):
                    slot[attr] = w
                return template(x, last_only=True)
            finally:
                for (slot, attr), w in zip(slots, kept, strict=True):
                    slot[attr] = w

        x = torch.zeros(1, context_size(template.cfg), template.cfg.n_features)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are fixed on purpose
            warnings.simplefilter("ignore", DeprecationWarning)  # see trace_last_candle
            self.fn = torch.jit.trace(last_candle, (x, self.flatten(state.values())),
                                      check_trace=False)  # fmt: skip
        self.template = template

    def flatten(self, state) -> torch.Tensor:
        """State_dict tensors, in order, copied into one new CPU buffer."""
        with torch.no_grad():
            return torch.cat([t.detach().to("cpu").reshape(-1) for t in state])

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of `flat` shaped as the state_dict's tensors, in order."""
        return [w.view(shape) for w, shape in zip(flat.split(self.sizes), self.shapes, strict=True)]

    def bind(self, flat: torch.Tensor) -> Callable:
        """`x → (logits, ghost)` at the last candle of x, with the weights in `flat`."""
        return functools.partial(_call_with, self.fn, flat)

    def frozen_model(self, weights: dict[str, torch.Tensor]) -> CandleTransformer:
        """An eval-mode model holding `weights`, built as a shallow copy of the template's
        module tree (constant buffers shared): a fraction of a millisecond, not a deep copy."""
        return _rebuilt(self.template, weights, "")


def _call_with(fn, flat: torch.Tensor, x: torch.Tensor):
    return fn(x, flat)


def _rebuilt(module: nn.Module, weights: dict[str, torch.Tensor], prefix: str) -> nn.Module:
    clone = copy.copy(module)
    state = clone.__dict__
    state["_parameters"] = {
        k: None if p is None else nn.Parameter(weights[prefix + k], requires_grad=False)
        for k, p in module._parameters.items()
    }
    state["_buffers"] = {k: weights.get(prefix + k, b) for k, b in module._buffers.items()}
    state["_modules"] = {
        k: None if m is None else _rebuilt(m, weights, f"{prefix}{k}.")
        for k, m in module._modules.items()
    }
    if "_dense_cache" in state:  # masks built per length and device: each copy its own
        state["_dense_cache"] = {}
    return clone


@dataclass(frozen=True)
class Snapshot:
    """Weights as they were after optimizer step `step`, never modified: the same weights in
    the traced last-candle forward (live) and, built on first use, the eager model (any length,
    batch passes). Built lazily because a batch job publishes a snapshot every step and live
    predictions need only the trace: building the module tree cost about a millisecond of the
    engine's GIL per step."""

    step: int
    weights: dict[str, torch.Tensor]
    live: LiveForward
    traced: Callable

    @functools.cached_property
    def model(self) -> CandleTransformer:
        return self.live.frozen_model(self.weights)

    @property
    def config(self) -> ModelConfig:
        return self.live.template.cfg

    def predict_last(self, ohlcv: np.ndarray) -> Prediction:
        """Live inference at the last candle of `ohlcv` (the eager model only for a window
        shorter than the trace's)."""
        full = len(ohlcv) >= context_size(self.config)
        return predict_last(None if full else self.model, ohlcv, self.traced, cfg=self.config)

    @classmethod
    def freeze(cls, model: CandleTransformer, step: int, live: LiveForward | None) -> Snapshot:
        """Frozen CPU copies of `model`'s weights as they are now (`live`: the same
        architecture's LiveForward, shared by a model's snapshots; None traces one)."""
        live = live or LiveForward(model)
        return cls.of(list(model.state_dict().values()), step, live)

    @classmethod
    def of(cls, state: list[torch.Tensor], step: int, live: LiveForward) -> Snapshot:
        """Frozen CPU copies of `state` (a model's state_dict tensors, in order)."""
        flat = live.flatten(state)  # a copy: never the trained tensors themselves
        weights = dict(zip(live.names, live.unflatten(flat), strict=True))
        return cls(step, weights, live, live.bind(flat))


def loss_and_accuracy(model, batch: Batch) -> tuple[torch.Tensor, float | None, int]:
    """Cross-entropy on labelled candles plus a small ghost-candle term where the future exists;
    the accuracy on the labelled candles, and how many there are."""
    n, m = batch.labelled, batch.known
    loss, correct = loss_share(model, batch, n, m)
    return loss, (correct / n if n else None), n


def part_shares(
    model, batch: Batch, parts: int, *, backward: bool, clip: float | None = None
) -> list[tuple[float, int]]:
    """Each part's (loss share, hits) when `batch` is split into `parts` parts that run at
    once, each on a thread of its own here; with `backward`, their gradients summed in
    `model`'s parameters' `.grad` and clipped to norm `clip`. (`engine.step_worker` computes
    the same in another process.)"""
    n, m = batch.labelled, batch.known

    def share(part: Batch) -> tuple[float, int]:
        if backward:
            loss, hits = loss_share(model, part, n, m)
            loss.backward()
            return float(loss.detach()), hits
        with torch.inference_mode():  # a thread's own setting
            loss, hits = loss_share(model, part, n, m)
        return float(loss), hits

    shares = priority.parallel_parts(share, batch.split(parts))
    if backward and clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    return shares


def shares_in_a_worker(config: ModelConfig, state: list[torch.Tensor],
                       params: list[torch.Tensor] | None, here: Callable[[], nn.Module],
                       batch: Batch, parts: int, clip: float | None = None):  # fmt: skip
    """`part_shares` in a step worker process (`engine.step_worker`), for the model of
    architecture `config` whose state_dict tensors are `state`; with `params` (its parameters)
    a training step whose gradients land in their `.grad`. Here, on `here()`'s model (built
    only then), when no worker can."""
    shares = step_worker.shared.shares(config, state, params, batch, parts, clip=clip)
    if shares is not None:
        return shares
    return part_shares(here(), batch, parts, backward=params is not None, clip=clip)


def snapshot_shares(snapshot: Snapshot, batch: Batch, parts: int) -> list[tuple[float, int]]:
    """`part_shares` of a snapshot's weights, no gradients, in a step worker when one can (the
    snapshot's eager model is then never built)."""
    state = list(snapshot.weights.values())
    return shares_in_a_worker(snapshot.config, state, None, lambda: snapshot.model, batch, parts)


def loss_share(model, part: Batch, n: int, m: int) -> tuple[torch.Tensor, int]:
    """The share of `part` (some rows of a batch with `n` labelled candles and `m` known ghost
    values) in that batch's loss, and how many of its labelled candles the model gets right:
    the shares of a batch's parts add up to its loss, so their gradients add up to its
    gradient.

    Both terms are means over what is known, taken with masks rather than boolean indexing:
    indexing a (B, T, k, 4) target costs a nonzero, a gather and a scatter in backward — about
    a sixth of a batch step on the CPU."""
    logits, ghost = model(part.x)  # (B, T, 3), (B, T, k, 4)
    loss = logits.sum() * 0.0  # a graph to step on even when nothing is known
    correct = 0
    if n:
        flat = logits.flatten(0, 1), part.actions.flatten()
        loss = loss + F.cross_entropy(*flat, ignore_index=IGNORE, reduction="sum") / n
        hits = (logits.detach().argmax(-1) == part.actions) & (part.actions != IGNORE)
        correct = int(hits.sum())
    if m:
        known = ~torch.isnan(part.ghost)
        err = F.smooth_l1_loss(ghost, part.ghost.nan_to_num(0.0), reduction="none")
        loss = loss + GHOST_WEIGHT * (err * known).sum() / m
    return loss, correct


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
        # Traced on the CPU: live inference stays there whatever trains the model.
        self._live = LiveForward(self.model)
        self.model.to(self.device)
        # Updated in place from here on (steps, load_state_dict), never replaced.
        self._state = list(self.model.state_dict(keep_vars=True).values())
        self._params = list(self.model.parameters())
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        _fuse(self.optimizer, self.device)
        self.lock = TrainingLock(key, lock_timeout_s)
        # Threads a batch job's step runs its parts on while cores are spare, measured.
        self.threads = priority.ThreadChoice()
        self.on_step = on_step
        self.steps = self.optimizer_steps()
        self._snapshot = self._publish()

    # -- inference side ---------------------------------------------------------------------

    def _publish(self) -> Snapshot:
        """Frozen copies of the current weights (call with the lock held, or before sharing)."""
        return Snapshot.of(self._state, self.steps, self._live)

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
        spare_cores: bool = False,
        **event: object,
    ) -> StepResult:
        """One weight update under the lock (at learning rate `lr` for this step only; others
        sharing the model keep theirs). Raises TrainingLockTimeout (after recording a skipped
        event) if the lock is not free in time.

        With `spare_cores` (a batch job's steps) the step may run in parts on every core nothing
        else here needs (`priority.spare_cores`, timed by `self.threads`); other steps run on
        the calling thread alone, so a backtest that trains, say, gives the same weights
        whatever the load."""
        background = spare_cores and self.device.type == "cpu"
        threads = (
            priority.timed(self.threads, batch.x.shape[0] * batch.x.shape[1])
            if background
            else contextlib.nullcontext(1)
        )
        t0 = time.perf_counter()
        try:
            with self.lock.hold(operation, timeout_s) as waited, threads as parts:
                loss, acc, n = self._update(batch, lr, parts, elsewhere=background)
                step = self.steps
        except TrainingLockTimeout as exc:
            self._report(model_key=self.key, source=source, skipped=True, error=str(exc),
                         lock_wait_ms=(time.perf_counter() - t0) * 1000, samples=0, **event)  # fmt: skip
            raise
        result = StepResult(step, loss, acc, n, waited * 1000, (time.perf_counter() - t0) * 1000)
        self._report(
            model_key=self.key, source=source, step=result.step, loss=result.loss,
            samples=result.samples, lock_wait_ms=result.lock_wait_ms,
            duration_ms=result.duration_ms, **event,
        )  # fmt: skip
        return result

    def _update(self, batch: Batch, lr: float | None, threads: int = 1, elsewhere: bool = False):
        """Forward, backward, optimizer step, publish (call with the lock held). With `threads`
        > 1 the batch's rows are split into that many parts, each part's forward and backward
        on a thread of its own (their gradients add up in the weights'), then one step; with
        `elsewhere`, forward and backward run in a step worker process."""
        if not self.model.training:  # a walk of every module: not once a step
            self.model.train()
        groups = self.optimizer.param_groups
        usual = [g["lr"] for g in groups]
        if lr is not None:
            for group in groups:
                group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type != "cpu":
            batch = Batch(*(t.to(self.device) for t in (batch.x, batch.actions, batch.ghost)))
        n = batch.labelled
        try:
            if elsewhere:  # the model's tensors, found once (a module walk costs ~0.5 ms)
                shares = shares_in_a_worker(self.config, self._state, self._params,
                                            lambda: self.model, batch, threads, MAX_GRAD_NORM)  # fmt: skip
            else:
                shares = part_shares(self.model, batch, threads, backward=True,
                                     clip=MAX_GRAD_NORM)  # fmt: skip
            self.optimizer.step()
        finally:
            for group, rate in zip(groups, usual, strict=True):
                group["lr"] = rate
        self.steps += 1
        self._snapshot = self._publish()
        loss = sum(share for share, _ in shares)
        return loss, (sum(c for _, c in shares) / n if n else None), n

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


def _fuse(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """AdamW's fused kernel on the CPU: one op per step instead of a Python loop of about ten
    ops per parameter tensor, so less time holding the GIL that live inference needs. Other
    devices keep PyTorch's default. Set after loading a state: a saved state brings its own
    flags."""
    for group in optimizer.param_groups:
        group["foreach"], group["fused"] = None, (True if device.type == "cpu" else None)


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
