"""Batch training ("Train Model"): all annotations of the chosen datasets, several epochs, in the
background, every step through the model's training lock.

Training is causal: each sequence of `seq_len` candles is one forward pass, and the loss is
taken at every labelled candle that has the model's full context inside the sequence (the
first receptive_field − 1 positions are context only, unless the sequence starts at the first
stored candle, where live inference has no more history either). Validation is the last
`validation_split` of each dataset by time; its labels never reach the training loss, and the
ghost-candle targets of training candles stop before the validation period starts.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sqlalchemy import Engine

from contract.vocab import ACTIONS
from db import annotations as annotation_rows
from db import candle_cache
from engine import features, labels, priority, step_worker
from engine.lock import TrainingLockTimeout
from engine.runner import IGNORE, Batch, snapshot_shares

log = logging.getLogger(__name__)
LOCK_RETRIES = 3
MIN_TRAIN_CANDLES = 200  # below this a run is worth a warning
MIN_VAL_CANDLES = 50
_EVAL_THREADS = priority.ThreadChoice()  # validation's parts on spare cores


@dataclass
class TrainSettings:
    epochs: int = 5
    batch_size: int = 8
    learning_rate: float = 1e-3
    validation_split: float = 0.2
    seq_len: int = 512
    unannotated_as_hold: bool = False
    seed: int = 0


@dataclass
class Series:
    """One dataset prepared for training: features, labels and ghost targets per candle."""

    symbol: str
    timeframe: str
    feats: np.ndarray
    labels: np.ndarray
    ghost: np.ndarray
    split: int  # first validation candle
    unmatched: int


@dataclass
class Window:
    series: Series
    start: int
    end: int
    score_from: int
    score_to: int


def prepare(database: Engine, datasets: list[tuple[str, str]], s: TrainSettings, horizon: int):
    """Load candles and annotations; returns the series (only those with labels)."""
    out = []
    for symbol, timeframe in datasets:
        df = candle_cache.shared.load(database, symbol, timeframe)
        if df.empty:
            continue
        ohlcv = df[["open", "high", "low", "close", "volume"]].to_numpy()
        ts = df["ts"].to_numpy()
        anns = annotation_rows.list_for(database, symbol, timeframe)
        y, unmatched = labels.from_annotations(ts, anns, s.unannotated_as_hold)
        if not (y != IGNORE).any():
            continue
        split = _split_point(y, s.validation_split)
        ghost = features.future_ohlc(ohlcv, horizon)
        ghost[max(0, split - horizon) : split] = np.nan  # no peeking into validation
        out.append(Series(symbol, timeframe, features.compute(ohlcv), y, ghost, split, unmatched))
    return out


def _split_point(y: np.ndarray, fraction: float) -> int:
    """The candle index where validation starts: the last `fraction` of labelled candles."""
    idx = np.flatnonzero(y != IGNORE)
    if fraction <= 0 or len(idx) < 2:
        return len(y)
    return int(idx[min(len(idx) - 1, int(math.floor(len(idx) * (1 - fraction))))])


def windows(series: Series, lo: int, hi: int, seq_len: int, warmup: int) -> list[Window]:
    """Sequences of `seq_len` candles whose scored parts cover every labelled candle in
    [lo, hi) exactly once."""
    out = []
    labelled = np.flatnonzero(series.labels[lo:hi] != IGNORE) + lo
    n = len(series.labels)
    i = 0
    while i < len(labelled):
        first = int(labelled[i])
        start = max(0, first - warmup)
        end = min(n, start + seq_len)
        score_from = first
        score_to = min(end, hi)
        out.append(Window(series, start, end, score_from, score_to))
        i = int(np.searchsorted(labelled, score_to))
    return out


def assemble(ws: list[Window], seq_len: int, horizon: int, with_ghost: bool = True) -> Batch:
    """Stack windows into one Batch, padding short ones at the end (padding is never scored
    and, being in the future, never seen by earlier positions)."""
    b = len(ws)
    x = np.zeros((b, seq_len, features.N_FEATURES), dtype=np.float32)
    y = np.full((b, seq_len), IGNORE, dtype=np.int64)
    g = np.full((b, seq_len, horizon, 4), np.nan, dtype=np.float32)
    for j, w in enumerate(ws):
        t = w.end - w.start
        x[j, :t] = w.series.feats[w.start : w.end]
        a, z = w.score_from - w.start, w.score_to - w.start
        y[j, a:z] = w.series.labels[w.score_from : w.score_to]
        if with_ghost:
            g[j, a:z] = w.series.ghost[w.score_from : w.score_to]
    return Batch(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(g))


@dataclass
class Evaluation:
    loss: float | None
    accuracy: float | None
    samples: int
    baseline: float | None  # share of the most common label: what always guessing it scores
    per_class: dict = field(default_factory=dict)


def evaluate(snapshot, ws: list[Window], seq_len: int, horizon: int, batch_size: int) -> Evaluation:
    """Loss and accuracy of a model's `snapshot` on the scored candles of `ws` (no weight
    update); a batch runs in parts on the spare cores, as a training step does."""
    if not ws:
        return Evaluation(None, None, 0, None)
    total_loss = correct = n = 0
    counts = np.zeros(len(ACTIONS), dtype=np.int64)
    for i in range(0, len(ws), batch_size):
        batch = assemble(ws[i : i + batch_size], seq_len, horizon)
        k = batch.labelled
        if not k:
            continue
        with priority.timed(_EVAL_THREADS, batch.x.shape[0] * batch.x.shape[1]) as threads:
            loss, hits = _scored(snapshot, batch, threads)
        total_loss += loss * k
        correct += hits
        n += k
        counts += np.bincount(
            batch.actions[batch.actions != IGNORE].numpy(), minlength=len(ACTIONS)
        )
    if not n:
        return Evaluation(None, None, 0, None)
    return Evaluation(
        total_loss / n,
        correct / n,
        n,
        float(counts.max() / n),
        {a: int(c) for a, c in zip(ACTIONS, counts, strict=True)},
    )


def _scored(snapshot, batch: Batch, threads: int) -> tuple[float, int]:
    """The batch's loss and how many of its labelled candles the model gets right, computed in
    parts on `threads` threads (in a step worker process, as a training step's)."""
    shares = snapshot_shares(snapshot, batch, threads)
    return sum(loss for loss, _ in shares), sum(hits for _, hits in shares)


def sequence_lengths(cfg, s: TrainSettings) -> tuple[int, int]:
    """The candles a sequence starts with for context only (the receptive field, less its
    own) and its length: the settings' seq_len, but always room for 16 scored candles."""
    warmup = cfg.receptive_field - 1
    return warmup, max(s.seq_len, warmup + 16)


def run(
    database: Engine,
    model,
    datasets: list[tuple[str, str]],
    s: TrainSettings,
    *,
    job_id: int | None = None,
    progress: Callable[..., None] | None = None,
) -> dict:
    """Train `model` — a WorkingModel (updates go through its trainer) or a bare ModelRunner
    (tests, benchmarks): anything with `config`, `snapshot` and `train_step` — on the labelled
    candles of `datasets`; returns the job result (per-epoch metrics).

    `progress(fraction, message, result=None)` is called before every batch and after every
    epoch; a job's progress raises to stop the run (cancel, shutdown), leaving the weights so
    far in the model."""
    cfg = model.config
    warmup, seq_len = sequence_lengths(cfg, s)
    step_worker.shared.prestart()  # its imports overlap reading the data
    series = prepare(database, datasets, s, cfg.horizon)
    if not series:
        raise ValueError(
            "no labelled candles in "
            + ", ".join(f"{a} {b}" for a, b in datasets)
            + ": annotate some trades first (or tick 'unannotated candles are HOLD')"
        )
    train_ws = [w for sr in series for w in windows(sr, 0, sr.split, seq_len, warmup)]
    val_ws = [w for sr in series for w in windows(sr, sr.split, len(sr.labels), seq_len, warmup)]
    if not train_ws:
        raise ValueError("every labelled candle fell into validation: lower validation_split")
    report = progress or (lambda *a, **k: None)
    rng = np.random.default_rng(s.seed)
    per_epoch = math.ceil(len(train_ws) / s.batch_size)
    total = per_epoch * s.epochs
    result = {
        "datasets": [f"{a} {b}" for a, b in datasets],
        "train_candles": int(sum(((sr.labels[: sr.split] != IGNORE).sum()) for sr in series)),
        "val_candles": int(sum(((sr.labels[sr.split :] != IGNORE).sum()) for sr in series)),
        "unmatched_annotations": int(sum(sr.unmatched for sr in series)),
        "steps_per_epoch": per_epoch,
        "epochs": [],  # per-batch losses are in training_events (job_id)
    }
    result["warnings"] = data_warnings(result)
    done = 0
    t0 = time.monotonic()
    for epoch in range(1, s.epochs + 1):
        order = rng.permutation(len(train_ws))
        losses, accs, weights = [], [], []
        for b in range(per_epoch):
            elapsed = time.monotonic() - t0
            eta = elapsed / done * (total - done) if done else None
            msg = f"epoch {epoch}/{s.epochs}, batch {b + 1}/{per_epoch}" + (
                f", ETA {eta:.0f} s" if eta is not None else ""
            )
            report(done / total, msg, result if b == 0 else None)
            batch = assemble(
                [train_ws[i] for i in order[b * s.batch_size : (b + 1) * s.batch_size]],
                seq_len,
                cfg.horizon,
            )
            step = _step_with_retries(model, batch, job_id, s.learning_rate)
            done += 1
            losses.append(step.loss)
            if step.accuracy is not None:
                accs.append(step.accuracy)
                weights.append(step.samples)
        val = evaluate(model.snapshot, val_ws, seq_len, cfg.horizon, s.batch_size)
        train_eval = {
            "loss": float(np.mean(losses)),
            "accuracy": float(np.average(accs, weights=weights)) if accs else None,
        }
        result["epochs"].append(
            {
                "epoch": epoch,
                "train_loss": train_eval["loss"],
                "train_accuracy": train_eval["accuracy"],
                "val_loss": val.loss,
                "val_accuracy": val.accuracy,
                "val_baseline": val.baseline,
                "val_samples": val.samples,
                "val_labels": val.per_class,
            }
        )
        log.info("job %s epoch %d: %s", job_id, epoch, result["epochs"][-1])
        result["warnings"] = data_warnings(result) + accuracy_warnings(result["epochs"][-1])
        report(done / total, f"epoch {epoch} done", result)
    result["elapsed_s"] = time.monotonic() - t0
    return result


def data_warnings(result: dict) -> list[str]:
    """What a person should know about the data before trusting the run."""
    out = []
    if result["train_candles"] < MIN_TRAIN_CANDLES:
        out.append(
            f"only {result['train_candles']} labelled candles to train on (fewer than "
            f"{MIN_TRAIN_CANDLES}): the model can memorise them without learning anything "
            "general; annotate more trades, or tick 'unannotated candles are HOLD'"
        )
    if result["val_candles"] < MIN_VAL_CANDLES:
        out.append(
            f"only {result['val_candles']} labelled candles to validate on: validation "
            "accuracy is noise at this size; annotate more of the latest stretch"
        )
    return out


def accuracy_warnings(epoch: dict) -> list[str]:
    """Whether validation beats always answering the most common label."""
    acc, base = epoch.get("val_accuracy"), epoch.get("val_baseline")
    if acc is None or base is None or acc > base:
        return []
    return [
        f"validation accuracy {acc:.1%} does not beat always answering the most common label "
        f"({base:.1%}): the model has not learned anything the validation stretch rewards"
    ]


def _step_with_retries(model, batch: Batch, job_id: int | None, lr: float):
    for attempt in range(1, LOCK_RETRIES + 1):
        try:
            return model.train_step(
                batch,
                operation=f"batch training job {job_id}",
                source="batch",
                lr=lr,
                spare_cores=True,
                job_id=job_id,
            )
        except TrainingLockTimeout:
            if attempt == LOCK_RETRIES:
                raise
            log.warning("job %s: lock busy, retrying (%d/%d)", job_id, attempt, LOCK_RETRIES)
    raise AssertionError("unreachable")
