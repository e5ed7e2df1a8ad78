"""Live sessions: candle in → prediction committed, sustainable pace, four sessions at once,
predictions while the training lock is busy, and what autosaving learning costs.

    python bench/live.py [--candles 500] [--four-seconds 30] [--hold-seconds 10]

Runs sessions inside this process with the engine's own classes (SessionManager, ModelPool),
replaying the packaged S&P 500 daily candles, on a fresh SQLite database:
  1. one session in `none`, as fast as it goes: latency p50 / p99 and candles/s
  2. one session in `every_candle`, as fast as it goes: the same
  3. four sessions at once (none, pivots_only, every_candle, manual) at one candle a second,
     the three learning ones sharing one working model: candles handled, worst lag
  4. an `every_candle` session at 0.05 s a candle while its working model's lock is held for
     `--hold-seconds`, then while a batch job trains the same working model: the share of
     candles in that window whose prediction was committed before the next candle was due,
     and latency p99 — ours (samples handed to the trainer) vs the same session training
     inline on its own thread (how sessions trained before working models), in one run
  5. autosave: time to write a working model's state file vs one training step
Latency = from the candle's slot on the replay's schedule to the commit of its prediction row
(`predictions.latency_ms`).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PACE = 0.05


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candles", type=int, default=500)
    ap.add_argument("--four-seconds", type=float, default=30)
    ap.add_argument("--hold-seconds", type=float, default=10)
    args = ap.parse_args()
    os.environ["CANDLELAB_HOME"] = tempfile.mkdtemp(prefix="candlelab-bench-")
    import db
    from db import candles
    from engine import checkpoints, priority
    from engine.job_runner import JobRunner
    from engine.pool import ModelPool
    from engine.service import EngineContext, Settings
    from engine.sessions import SessionManager
    from market.importer import seed_samples
    from tests.test_training import annotate_future_moves

    priority.configure_process()
    database = db.init()
    seed_samples(database)
    annotate_future_moves(database)
    ctx = EngineContext(database, "bench", Settings())
    ctx.models = ModelPool(database, "bench")
    ctx.sessions = SessionManager(ctx)
    ctx.jobs = JobRunner(database, "bench", ctx.stopping)
    cid = checkpoints.ensure_default(database)
    ts = candles.load(database, "SP500", "1d").ts.to_numpy()
    priority.settle_heap()  # as the engine does once it has started
    bench = Bench(ctx, cid, ts)
    bench.as_fast_as_it_goes(args.candles)
    bench.four_at_once(args.four_seconds)
    bench.busy_lock(args.hold_seconds)
    bench.autosave()
    return 0


class Bench:
    def __init__(self, ctx, cid, ts) -> None:
        self.ctx, self.db, self.cid, self.ts = ctx, ctx.db, cid, ts

    def launch(self, mode: str, n: int, pace: float, working_model_id=None):
        from db import sessions as rows

        sid = rows.create(
            self.db, symbol="SP500", timeframe="1d", checkpoint_id=self.cid, mode=mode,
            working_model_id=working_model_id,
            feed={"kind": "replay", "pace_s": pace, "start_ts": int(self.ts[-n])},
            settings={"fee_bps": 10, "long_only": False, "pivot_left": 5, "pivot_right": 5},
            created_by="bench", engine_id="bench",
        )  # fmt: skip
        return sid, self.ctx.sessions.launch(rows.get(self.db, sid))

    def as_fast_as_it_goes(self, n: int) -> None:
        from db import sessions as rows
        from db import training

        for mode in ("none", "every_candle"):
            t0 = time.perf_counter()
            sid, session = self.launch(mode, n, 0.0)
            session.thread.join()
            wall = time.perf_counter() - t0
            if session.working:
                session.working.trainer.drain(300)
            lat = rows.predictions(self.db, sid).latency_ms.to_numpy()
            steps = training.count(self.db, session_id=sid, skipped=False)
            print(
                f"{mode:<13} {len(lat)} candles: candle -> committed prediction p50 "
                f"{np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms; "
                f"{len(lat) / wall:.0f} candles/s as fast as it goes ({steps} training steps), "
                f"so it keeps up with a pace down to {wall / len(lat) * 1000:.0f} ms per candle"
            )

    def four_at_once(self, seconds: float) -> None:
        from db import sessions as rows
        from db import training

        n = int(seconds) + 5
        shared = self.ctx.models.new_working(self.cid, created_by="bench").id
        modes = ("none", "pivots_only", "every_candle", "manual")
        started = time.monotonic()
        four = [self.launch(m, n, 1.0, None if m == "none" else shared) for m in modes]
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        for _, s in four:
            s.stop()
        for _, s in four:
            s.thread.join()
        print(f"four sessions at 1 candle/s for {elapsed:.0f} s, three on one working model:")
        for (sid, _s), mode in zip(four, modes, strict=True):
            p = rows.predictions(self.db, sid)
            lat = p.latency_ms.to_numpy()
            print(
                f"  {mode:<13} {len(p)} candles (schedule allowed {int(elapsed) + 1}), latency "
                f"p50 {np.percentile(lat, 50):.1f} ms, worst {lat.max():.0f} ms, training steps "
                f"{training.count(self.db, session_id=sid, skipped=False)}"
            )

    def busy_lock(self, hold_s: float) -> None:
        """Section 4: ours vs inline training, under a held lock and under a batch job."""
        results = {}
        for how in ("trainer", "inline"):
            results[how] = (self.under_hold(hold_s, how), self.under_batch_job(how))
        for i, what in enumerate((f"lock held {hold_s:.0f} s", "batch job on the same model")):
            (share, p99, worst), (old_share, old_p99, old_worst) = (
                results["trainer"][i], results["inline"][i],
            )  # fmt: skip
            print(
                f"every_candle at {PACE * 1000:.0f} ms a candle, {what}: on schedule {share:.0%} "
                f"(trainer) vs {old_share:.0%} (inline); latency p99 {p99:.1f} vs {old_p99:.1f} ms, "
                f"worst {worst:.0f} vs {old_worst:.0f} ms -> worst {old_worst / worst:.0f}x lower"
            )

    def _session_on_new_model(self, how: str, n: int):
        model = self.ctx.models.new_working(self.cid, created_by="bench")
        if how == "inline":  # apply each sample on the session's thread, waiting for the lock
            model.offer = lambda sample, session_id, operation, m=model: _inline(m, sample)
        return model, *self.launch("every_candle", n, PACE, model.id)

    def under_hold(self, hold_s: float, how: str) -> tuple[float, float]:
        n = int((hold_s + 4) / PACE)
        model, sid, session = self._session_on_new_model(how, n)
        time.sleep(1.0)
        held, release = threading.Event(), threading.Event()

        def hang():
            with model.runner.lock.hold("bench hold"):
                held.set()
                release.wait(hold_s)

        threading.Thread(target=hang, daemon=True).start()
        held.wait()
        t0 = _now()
        time.sleep(hold_s)
        release.set()
        t1 = _now()
        time.sleep(1.5)  # a candle held up by the hold lands now
        session.stop()
        session.thread.join()
        return _window(self.db, sid, t0, t1)

    def under_batch_job(self, how: str) -> tuple[float, float]:
        from engine import batch_training
        from engine.batch_training import TrainSettings

        n = int(12 / PACE)
        model, sid, session = self._session_on_new_model(how, n)
        time.sleep(1.0)
        stop = threading.Event()

        def until_stopped(*_):
            if stop.is_set():
                raise InterruptedError

        def job():
            from engine import priority

            priority.background_thread()
            with contextlib.suppress(InterruptedError):
                batch_training.run(self.db, model, [("SP500", "1d")], TrainSettings(epochs=500),
                                   progress=until_stopped)  # fmt: skip

        t = threading.Thread(target=job, daemon=True)
        t0 = _now()
        t.start()
        time.sleep(8)
        t1 = _now()
        stop.set()
        session.stop()
        session.thread.join()
        t.join()
        return _window(self.db, sid, t0, t1)

    def autosave(self) -> None:
        from tests.test_training import random_batch

        model = self.ctx.models.new_working(self.cid, created_by="bench")
        steps, saves = [], []
        for i in range(20):
            t0 = time.perf_counter()
            model.train_step(random_batch(i, model.config, b=1, t=147), operation="bench",
                             source="bench")  # fmt: skip
            steps.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.autosave()
            saves.append(time.perf_counter() - t0)
        step, save = statistics.median(steps) * 1000, statistics.median(saves) * 1000
        print(
            f"autosave of a working model: {save:.1f} ms (median of 20) vs {step:.1f} ms for one "
            f"every_candle training step -> one save costs {save / step:.1f} steps; at the "
            f"autosave bound (100 steps or 5 s) that is <= {save / (100 * step):.1%} of training"
        )


def _inline(model, sample):
    from engine.lock import TrainingLockTimeout

    with contextlib.suppress(TrainingLockTimeout):
        model.runner.train_step(sample.batch, operation="inline", source=sample.source,
                                **sample.event)  # fmt: skip


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _window(database, sid, t0, t1) -> tuple[float, float, float]:
    """For candles due in [t0, t1]: the share whose prediction was committed within one pace
    (candles never predicted count as late), and the latency p99 and worst of the predictions
    committed from t0 to a second after t1 (a candle held up meanwhile lands there)."""
    from datetime import timedelta

    from db import sessions as rows

    p = rows.predictions(database, sid)
    made = p[(p.created_at >= t0) & (p.created_at <= t1 + timedelta(seconds=1))]
    due = max(1, int((t1 - t0).total_seconds() / PACE))
    in_window = made[made.created_at <= t1 + timedelta(seconds=PACE)]
    on_time = int((in_window.latency_ms <= PACE * 1000).sum())
    lat = made.latency_ms.to_numpy() if len(made) else np.array([float("nan")])
    return min(1.0, on_time / due), float(np.percentile(lat, 99)), float(lat.max())


if __name__ == "__main__":
    raise SystemExit(main())
