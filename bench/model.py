"""Model speed on this machine, as ratios measured in one run.

    python bench/model.py [--repeats 3]

Prints, for the default model:
  - per-candle inference latency (batch 1, features included) p50 / p99
  - one causal pass over 10,000 real candles vs the per-candle loop: candles/s, ratio, and the
    largest difference between the two at any candle
  - batched training throughput (labelled candles/s)
  - per-candle inference p99 while a batch training job runs on the same model, / idle
Real candles: the packaged S&P 500 daily series (5,031) followed by the NASDAQ Composite
rescaled to continue from its last close (5,031) — 10,062 candles in all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def real_candles(database) -> np.ndarray:
    from db import candles

    cols = ["open", "high", "low", "close", "volume"]
    a = candles.load(database, "SP500", "1d")[cols].to_numpy()
    b = candles.load(database, "NASDAQ", "1d")[cols].to_numpy().copy()
    b[:, :4] *= a[-1, 3] / b[0, 0]
    return np.concatenate([a, b])


def latencies(runner, x: np.ndarray, ends: range) -> np.ndarray:
    """Live inference as a session does it: the latest published snapshot, last candle."""
    out = []
    for t in ends:
        t0 = time.perf_counter()
        runner.snapshot.predict_last(x[: t + 1])
        out.append(time.perf_counter() - t0)
    return np.array(out) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["CANDLELAB_HOME"] = tempfile.mkdtemp(prefix="candlelab-bench-")
    import db
    from contract.access import SYSTEM_ACCOUNT
    from db import annotations, jobs
    from engine import batch_training, priority
    from engine.batch_training import TrainSettings
    from engine.inference import predict_all
    from engine.model import ModelConfig
    from engine.runner import ModelRunner
    from market.importer import seed_samples

    priority.configure_process()  # as the engine does
    database = db.init()
    seed_samples(database)
    x = real_candles(database)
    runner = ModelRunner("bench", ModelConfig())
    model = runner.snapshot.model
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, training on {runner.device}, "
        f"model {model.n_params():,} parameters, R = {model.cfg.receptive_field}"
    )

    priority.inference_thread()  # this thread plays a live session
    lat = latencies(runner, x, range(200, 1200))
    print(
        f"per-candle inference, batch 1: p50 {np.percentile(lat, 50):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms"
    )

    loops, passes = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        snap = runner.snapshot
        live = np.stack([list(snap.predict_last(x[: t + 1]).probs.values()) for t in range(len(x))])
        loops.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        probs, _ = predict_all(model, x)
        passes.append(time.perf_counter() - t0)
    loop_s, pass_s = statistics.median(loops), statistics.median(passes)
    print(
        f"{len(x):,} candles: per-candle loop {len(x) / loop_s:,.0f} candles/s, one causal pass "
        f"{len(x) / pass_s:,.0f} candles/s -> {loop_s / pass_s:.0f}x; max |diff| at any candle "
        f"{np.abs(live - probs).max():.2e}"
    )

    # Training throughput: hindsight annotations on the S&P series (as in the tests).
    c, ts = x[:5031, 3], __import__("db").candles.load(database, "SP500", "1d").ts.to_numpy()
    i = 0
    while i + 2 < len(c):
        if abs(c[i + 2] / c[i] - 1) > 0.01:
            side = "long" if c[i + 2] > c[i] else "short"
            annotations.create(
                database,
                annotations.AnnotationIn("SP500", "1d", int(ts[i]), int(ts[i + 2]), side),
                SYSTEM_ACCOUNT,
            )
            i += 3
        else:
            i += 1
    job = jobs.create(database, "train", command_id=None, engine_id="bench", created_by=None)
    res = batch_training.run(
        database, runner, [("SP500", "1d")], TrainSettings(epochs=5, seq_len=512), job_id=job
    )
    labelled = res["train_candles"] * 5
    print(
        f"batch training: {labelled / res['elapsed_s']:,.0f} labelled candles/s ({5 * res['steps_per_epoch']} steps in {res['elapsed_s']:.1f} s, validation included)"
    )

    # Inference while training runs on the same model.
    stop = threading.Event()

    class Stop(Exception):
        pass

    def until_stopped(*_):
        if stop.is_set():
            raise Stop

    def train_forever():  # at the priority the engine gives a job's thread
        priority.background_thread()
        settings = TrainSettings(epochs=100_000, seq_len=512)
        with contextlib.suppress(Stop):
            batch_training.run(
                database, runner, [("SP500", "1d")], settings, progress=until_stopped
            )

    # Alternate idle and busy measurements; medians of their p99s over the repeats.
    idle_p99, busy_p99 = [], []
    steps_before = runner.steps
    for _ in range(args.repeats):
        idle_p99.append(np.percentile(latencies(runner, x, range(200, 1200)), 99))
        stop.clear()
        trainer = threading.Thread(target=train_forever, daemon=True)
        trainer.start()
        time.sleep(1.0)
        busy_p99.append(np.percentile(latencies(runner, x, range(200, 1200)), 99))
        stop.set()
        trainer.join()
    p_idle, p_busy = statistics.median(idle_p99), statistics.median(busy_p99)
    print(
        f"inference p99 idle {p_idle:.2f} ms, during batch training {p_busy:.2f} ms -> "
        f"{p_busy / p_idle:.2f}x idle (medians of {args.repeats}; training steps taken "
        f"meanwhile: {runner.steps - steps_before})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
