"""Predictions from candles: one causal pass over a stretch, or the latest candle alone.

Both paths use the same features and the same model, and agree to float precision: the output
at candle t depends on the last `context_size` candles only (feature lookback plus the model's
receptive field), so a chunked pass overlapping by context_size − 1 candles, a single pass, and
live inference on the last context_size candles give the same numbers.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from contract.vocab import ACTIONS
from engine import features, priority
from engine.model import CandleTransformer, ModelConfig

CHUNK = 4096  # candles per model call on the CPU
_PASS_THREADS = priority.ThreadChoice()  # chunks at once on spare cores, measured
GPU_CHUNK = 65_536  # and on a GPU


def context_size(cfg: ModelConfig) -> int:
    """Candles live inference needs to reproduce the batch pass exactly."""
    return cfg.receptive_field + features.LOOKBACK - 1


@dataclass(frozen=True)
class Prediction:
    """The model's view at the close of one candle."""

    action: str
    probs: dict[str, float]
    confidence: float
    ghost: np.ndarray  # (horizon, 4) absolute OHLC prices of the next candles


def _probs_and_ghost(
    model: CandleTransformer, ohlcv: np.ndarray, chunk: int, progress=None, ghost: bool = True
):
    """Run candles `ohlcv` (n, 5) through the model in chunks that overlap by R−1 rows, on the
    device the model is on (results come back to the CPU); ghost candles only if asked. Each
    chunk computes its own features (`features.rows`: the same numbers as for the whole), on
    its own thread like the rest of its work.

    On the CPU, while cores are spare (engine/priority.py: no live session, one job), several
    chunks run at once, each on a thread of its own with one intra-op thread, as a batch job's
    training step runs its parts: 1.4x the candles/s of one chunk at a time on two OpenMP
    threads on a 2-core machine, whose barriers after every small op cost more than they save.
    Whether that beats one chunk at a time is measured as the pass goes (`ThreadChoice`)."""
    r = model.cfg.receptive_field
    device = next(model.parameters()).device
    n = len(ohlcv)
    probs = np.empty((n, len(ACTIONS)), dtype=np.float32)
    ghosts = np.empty((n, model.cfg.horizon, 4), dtype=np.float32) if ghost else None

    def run(span: tuple[int, int]) -> None:
        start, end = span
        lo = max(0, start - (r - 1))
        x = torch.from_numpy(features.rows(ohlcv, lo, end)).to(device).unsqueeze(0)  # (1, T, F)
        with torch.inference_mode():  # a thread's own setting
            logits, g = model(x)
            probs[start:end] = torch.softmax(logits[0, start - lo :], -1).cpu().numpy()
            if ghost:
                ghosts[start:end] = g[0, start - lo :].cpu().numpy()

    spans = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    cpu = device.type == "cpu"
    done, i = 0, 0
    with _one_intra_op_thread(device):
        while i < len(spans):
            parts = spans[i : i + (_PASS_THREADS.pick(priority.spare_cores()) if cpu else 1)]
            t0 = time.perf_counter()
            priority.parallel_parts(run, parts)
            if cpu:  # under the count that ran (fewer parts may be left than were picked)
                candles = sum(e - s for s, e in parts)
                _PASS_THREADS.record(len(parts), time.perf_counter() - t0, candles)
            i, done = i + len(parts), parts[-1][1]
            if progress is not None and progress(done / n) is False:
                break  # cancelled: return what is done
    return probs[:done], None if ghosts is None else ghosts[:done]


@contextlib.contextmanager
def _one_intra_op_thread(device: torch.device):
    """The calling thread on one intra-op thread for a CPU pass (its chunks run beside the
    helper threads' chunks), given back its own count afterwards."""
    before = torch.get_num_threads()
    if device.type == "cpu" and before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def predict_all(
    model: CandleTransformer, ohlcv: np.ndarray, chunk: int | None = None, progress=None,
    device: torch.device | str | None = None, ghost: bool = True,
):  # fmt: skip
    """Every candle's action probabilities (n, 3) and ghost candles (n, horizon, 4) as
    100·ln(price / close), from one causal pass; `progress(fraction)` after each chunk (if it
    returns False the pass stops and returns the candles done so far).

    With `device` (e.g. "cuda"), the pass runs on a copy of the model there, in chunks of
    `chunk_size(device)` candles unless `chunk` says otherwise, in fp32: the same numbers as the
    CPU's to float precision. `ghost=False` skips the ghost candles (a backtest needs none)."""
    device = torch.device(device or "cpu")
    if next(model.parameters()).device != device:
        model = copy.deepcopy(model).to(device)  # the caller's model stays where it is
    chunk = chunk or chunk_size(device)
    return _probs_and_ghost(model, np.asarray(ohlcv), chunk, progress, ghost)


def chunk_size(device: torch.device) -> int:
    """Candles per model call of a causal pass: on the CPU larger chunks gain nothing (the
    work is linear in the length); a GPU needs large ones to fill it (65,536 ran 6.7x faster
    than 4,096 on an H100)."""
    return CHUNK if device.type == "cpu" else GPU_CHUNK


class _LastCandle(nn.Module):
    def __init__(self, model: CandleTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model(x, last_only=True)


def trace_last_candle(model: CandleTransformer) -> torch.jit.ScriptModule:
    """The model's last-candle forward compiled for a window of exactly context_size rows.

    Why: an eager forward takes and releases the GIL around each of its ~60 small ops, so a
    Python-busy thread (a training loop) can delay it many times over; a traced module runs
    the whole forward in one call. Copies are cheap (`copy.deepcopy` + `load_state_dict`), so
    each published snapshot gets its own (see ModelRunner)."""
    x = torch.zeros(1, context_size(model.cfg), model.cfg.n_features)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are fixed on purpose
        # torch 2.13 marks jit.trace deprecated; it is still the one way to get a one-call CPU
        # forward without a compile step at run time. Revisit with torch.export when it can.
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.trace(_LastCandle(model).eval(), x, check_trace=False)


def predict_last(
    model: CandleTransformer | None, ohlcv: np.ndarray,
    traced: torch.jit.ScriptModule | None = None, cfg: ModelConfig | None = None,
) -> Prediction:  # fmt: skip
    """The prediction at the last candle of `ohlcv`, from its last context_size candles (with
    `traced`, the same weights compiled by `trace_last_candle`, used when the window is full;
    `model` may then be None, given the architecture `cfg`)."""
    cfg = cfg or model.cfg
    window = np.asarray(ohlcv)[-context_size(cfg) :]
    feats = torch.from_numpy(features.compute(window)).unsqueeze(0)
    with torch.inference_mode():
        if traced is not None and len(window) == context_size(cfg):
            logits, g = traced(feats)
        else:
            logits, g = model(feats, last_only=True)
    p = torch.softmax(logits[0, -1], -1).numpy()
    close = float(window[-1, 3])
    best = int(p.argmax())
    return Prediction(
        ACTIONS[best],
        {a: float(p[i]) for i, a in enumerate(ACTIONS)},
        float(p[best]),
        close * np.exp(g[0, -1].numpy().astype(np.float64) / 100),
    )
