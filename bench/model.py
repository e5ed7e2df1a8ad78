"""Model speed on this machine, as ratios measured in one run.

    python bench/model.py [--repeats 3]

Prints, for the default model, medians over the repeats:
  - per-candle inference latency (batch 1, features included) p50 / p99
  - one causal pass over 10,000 real candles vs the per-candle loop: candles/s, ratio, and the
    largest difference between the two at any candle
  - batch training throughput (labelled candles/s; `batch_training.run` on hindsight annotations,
    5 epochs, sequences of 512, batches of 8, validation included, training events recorded) with
    the engine's thread policy vs the one intra-op thread every batch job had before
  - per-candle inference p99 while a batch training job trains the same model, / idle, with
    predictions back to back (a stress: every moment of the job's own Python meets one) and at
    a session's pace (one every PACE_S, as a fast replay asks); and, back to back,
    beside the same training steps run by a process of their own, sharing nothing with this
    one but the machine (nice 19, on the cores a step worker gets): what the machine's other
    core costs a prediction whatever the engine does (its caches, memory bandwidth)
Real candles: the packaged S&P 500 daily series (5,031) followed by the NASDAQ Composite
rescaled to continue from its last close (5,031) — 10,062 candles in all.

The machine is shared: every figure is a median of repeats, and each ratio compares two things
measured alternately in this run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EPOCHS, SEQ_LEN, BATCH = 5, 512, 8
PACE_S, PACED = 0.02, 500  # a prediction every 20 ms (a replay at 50 candles/s), 500 a window


def real_candles(database) -> np.ndarray:
    from db import candles

    cols = ["open", "high", "low", "close", "volume"]
    a = candles.load(database, "SP500", "1d")[cols].to_numpy()
    b = candles.load(database, "NASDAQ", "1d")[cols].to_numpy().copy()
    b[:, :4] *= a[-1, 3] / b[0, 0]
    return np.concatenate([a, b])


def annotate_hindsight(database) -> None:
    """A trade wherever the close two candles later moved more than 1 % (as the tests do)."""
    from contract.access import SYSTEM_ACCOUNT
    from db import annotations, candles

    df = candles.load(database, "SP500", "1d")
    c, ts = df.close.to_numpy(), df.ts.to_numpy()
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


def latencies(runner, x: np.ndarray, ends: range) -> np.ndarray:
    """Live inference as a session does it: the latest published snapshot, last candle."""
    out = []
    for t in ends:
        t0 = time.perf_counter()
        runner.snapshot.predict_last(x[: t + 1])
        out.append(time.perf_counter() - t0)
    return np.array(out) * 1000


ALONE = """
import sys, numpy as np, torch
from engine import priority
from engine.model import ModelConfig, CandleTransformer
from engine.runner import Batch, MAX_GRAD_NORM, part_shares
priority.trainer_thread()
model = CandleTransformer(ModelConfig()).train()
batch = Batch(*(torch.from_numpy(a) for a in np.load(sys.argv[1]).values()))
while True:
    model.zero_grad(set_to_none=True)
    part_shares(model, batch, 1, backward=True, clip=MAX_GRAD_NORM)
"""


def training_alone(database) -> subprocess.Popen:
    """A process doing a batch job's steps (a real batch of the job's shape, forward, backward
    and clipping, as a step worker does) in a loop, at nice 19 on every core but the first."""
    from engine import batch_training
    from engine.batch_training import TrainSettings
    from engine.model import ModelConfig

    cfg, s = ModelConfig(), TrainSettings(epochs=1, seq_len=SEQ_LEN, batch_size=BATCH)
    warmup, seq_len = batch_training.sequence_lengths(cfg, s)
    series = batch_training.prepare(database, [("SP500", "1d")], s, cfg.horizon)
    ws = batch_training.windows(series[0], 0, series[0].split, seq_len, warmup)
    batch = batch_training.assemble(ws[:BATCH], seq_len, cfg.horizon)
    path = Path(os.environ["CANDLELAB_HOME"]) / "batch.npz"
    np.savez(path, x=batch.x.numpy(), actions=batch.actions.numpy(), ghost=batch.ghost.numpy())
    allowed = sorted(os.sched_getaffinity(0))
    cores = ",".join(map(str, allowed[1:] or allowed))
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(["taskset", "-c", cores, sys.executable, "-c", ALONE, str(path)],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip


def paced_latencies(runner, x: np.ndarray, ends: range, every_s: float) -> np.ndarray:
    """`latencies`, one prediction every `every_s` on a fixed schedule, as a session's come."""
    out, due = [], time.perf_counter()
    for t in ends:
        due += every_s
        time.sleep(max(0.0, due - time.perf_counter()))
        t0 = time.perf_counter()
        runner.snapshot.predict_last(x[: t + 1])
        out.append(time.perf_counter() - t0)
    return np.array(out) * 1000


def on_own_thread(fn):
    """`fn()` on a thread of its own (a session's or a job's), returning its result."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["CANDLELAB_HOME"] = tempfile.mkdtemp(prefix="candlelab-bench-")
    import db
    from db import jobs, training
    from engine import batch_training, priority
    from engine.batch_training import TrainSettings
    from engine.inference import predict_all
    from engine.model import ModelConfig
    from engine.runner import ModelRunner
    from market.importer import seed_samples

    priority.configure_process()  # as the engine does
    database = db.init()
    seed_samples(database)
    annotate_hindsight(database)
    x = real_candles(database)

    def recording_runner(key: str) -> ModelRunner:  # as a working model: an event per step
        return ModelRunner(key, ModelConfig(), on_step=lambda **e: training.record(database, **e))

    runner = recording_runner("bench")
    model = runner.snapshot.model
    print(
        f"torch {torch.__version__}, {priority.CORES} cores, training on {runner.device}, "
        f"model {model.n_params():,} parameters, R = {model.cfg.receptive_field}"
    )

    # -- a live session's view: per-candle latency, and the causal pass ------------------------
    def serving():
        priority.inference_thread()
        return latencies(runner, x, range(200, 1200))

    lat = on_own_thread(serving)
    print(
        f"per-candle inference, batch 1: p50 {np.percentile(lat, 50):.2f} ms, "
        f"p99 {np.percentile(lat, 99):.2f} ms"
    )

    def loop_vs_pass():
        priority.inference_thread()
        loops, passes = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            snap = runner.snapshot
            live = np.stack(
                [list(snap.predict_last(x[: t + 1]).probs.values()) for t in range(len(x))]
            )
            loops.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            probs, _ = predict_all(model, x)
            passes.append(time.perf_counter() - t0)
        return statistics.median(loops), statistics.median(passes), np.abs(live - probs).max()

    loop_s, pass_s, diff = on_own_thread(loop_vs_pass)
    print(
        f"{len(x):,} candles: per-candle loop {len(x) / loop_s:,.0f} candles/s, one causal pass "
        f"{len(x) / pass_s:,.0f} candles/s -> {loop_s / pass_s:.0f}x; max |diff| at any candle "
        f"{diff:.2e}"
    )

    # -- batch training alone: the engine's thread policy vs one intra-op thread ---------------
    def train_once(trainee: ModelRunner, beside_a_session: bool) -> float:
        """Labelled candles/s of a 5-epoch run on a thread of its own, at normal priority (on a
        shared machine a nice-19 thread measures other people's load); beside a session (a
        thread serving predictions is alive) every step keeps to one intra-op thread, as every
        batch job did before."""

        def run() -> float:
            if beside_a_session:
                priority.inference_thread()
            else:
                torch.set_num_threads(1)  # a job's thread: its steps take the spare cores
            job = jobs.create(
                database, "train", command_id=None, engine_id="bench", created_by=None
            )
            settings = TrainSettings(epochs=EPOCHS, seq_len=SEQ_LEN, batch_size=BATCH)
            res = batch_training.run(database, trainee, [("SP500", "1d")], settings, job_id=job)
            return res["train_candles"] * EPOCHS / res["elapsed_s"]

        return on_own_thread(run)

    policy, single = recording_runner("bench-policy"), recording_runner("bench-one-thread")
    train_once(policy, False), train_once(single, True)  # warm-up (and the policy's first tries)
    rates: dict[str, list[float]] = {"policy": [], "one": []}
    for _ in range(args.repeats):
        rates["policy"].append(train_once(policy, False))
        rates["one"].append(train_once(single, True))
    now, before = statistics.median(rates["policy"]), statistics.median(rates["one"])
    costs = ", ".join(
        f"{n} thread{'s' * (n > 1)} {c * 1e6:.0f} us"
        for n, c in sorted(policy.threads.costs().items())
    )
    print(
        f"batch training: {now:,.0f} labelled candles/s (one intra-op thread, as every job had "
        f"before and has beside a live session: {before:,.0f} -> {now / before:.2f}x; target "
        f">= 20,000); cost per candle of batch by threads: {costs}"
    )

    # -- inference while a batch job trains the same model --------------------------------------
    stop = threading.Event()

    class Stop(Exception):
        pass

    def until_stopped(*_):
        if stop.is_set():
            raise Stop

    def train_forever():  # a job's thread, at the priority the engine gives it
        priority.background_thread()
        settings = TrainSettings(epochs=100_000, seq_len=SEQ_LEN, batch_size=BATCH)
        with contextlib.suppress(Stop):
            batch_training.run(
                database, runner, [("SP500", "1d")], settings, progress=until_stopped
            )

    def p99(paced: bool = False) -> float:
        if paced:
            return float(np.percentile(paced_latencies(runner, x, range(200, 200 + PACED),
                                                       PACE_S), 99))  # fmt: skip
        return float(np.percentile(latencies(runner, x, range(200, 1200)), 99))

    def idle_and_busy():  # alternate; medians of the p99s over the repeats
        priority.inference_thread()
        latencies(runner, x, range(200, 400))  # warm
        idle_p99, busy_p99, alone_p99, steps = [], [], [], 0
        idle_paced, busy_paced = [], []
        for _ in range(args.repeats):
            idle_p99.append(p99())
            idle_paced.append(p99(paced=True))
            stop.clear()
            trainer = threading.Thread(target=train_forever, daemon=True)
            trainer.start()
            time.sleep(1.0)
            before = runner.steps
            busy_p99.append(p99())
            busy_paced.append(p99(paced=True))
            steps += runner.steps - before
            stop.set()
            trainer.join()
            alone = training_alone(database)
            time.sleep(3.0)  # its imports
            alone_p99.append(p99())
            alone.kill()
            alone.wait()
        windows = (idle_p99, busy_p99, alone_p99, idle_paced, busy_paced)
        return [statistics.median(p) for p in windows], steps

    (p_idle, p_busy, p_alone, paced_idle, paced_busy), steps = on_own_thread(idle_and_busy)
    print(
        f"inference p99 while training, predictions back to back: {p_busy:.2f} ms vs idle "
        f"{p_idle:.2f} ms -> {p_busy / p_idle:.2f}x (target <= 1.5x; medians of {args.repeats}; "
        f"training steps taken while measuring: {steps}); beside the same steps in a process "
        f"of their own {p_alone:.2f} ms -> {p_alone / p_idle:.2f}x (the machine's share of it)"
    )
    print(
        f"inference p99 while training, a prediction every {PACE_S * 1000:.0f} ms: "
        f"{paced_busy:.2f} ms vs idle {paced_idle:.2f} ms -> {paced_busy / paced_idle:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
