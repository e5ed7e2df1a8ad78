"""The one training lock: concurrent updates cannot corrupt a model, a hung holder is named,
inference only sees whole steps, and training really learns."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from db import accounts, annotations, candles, jobs, training
from engine import batch_training
from engine.batch_training import TrainSettings
from engine.inference import context_size, predict_last
from engine.lock import TrainingLockTimeout
from engine.model import ModelConfig
from engine.runner import GHOST_WEIGHT, IGNORE, Batch, ModelRunner, loss_and_accuracy
from market.importer import seed_samples
from tests.conftest import make_account

SMALL = ModelConfig(d_model=32, n_heads=2, n_layers=2, d_ff=64, window=16)


def random_batch(seed: int, cfg: ModelConfig = SMALL, b: int = 2, t: int = 48) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, cfg.n_features, generator=g)
    y = torch.randint(0, 3, (b, t), generator=g)
    y[:, : t // 2] = IGNORE
    ghost = torch.randn(b, t, cfg.horizon, 4, generator=g)
    return Batch(x, y, ghost)


def recording_runner(database, **kw) -> ModelRunner:
    return ModelRunner(
        "test-model", SMALL, on_step=lambda **e: training.record(database, **e), **kw
    )


@pytest.fixture
def sp500(database):
    seed_samples(database)
    return database


def annotate_future_moves(database, symbol="SP500", hold=2, threshold=0.01) -> int:
    """Trades a hindsight trader would mark: whenever the close `hold` candles later moved
    more than `threshold`, a long (up) or short (down) trade over those candles, by the
    trader `hindsight`."""
    if accounts.get(database, "hindsight") is None:
        make_account(database, "hindsight")
    df = candles.load(database, symbol, "1d")
    c, ts = df.close.to_numpy(), df.ts.to_numpy()
    i = n = 0
    while i + hold < len(c):
        move = c[i + hold] / c[i] - 1
        if abs(move) > threshold:
            side = "long" if move > 0 else "short"
            annotations.create(
                database,
                annotations.AnnotationIn(symbol, "1d", int(ts[i]), int(ts[i + hold]), side),
                "hindsight",
            )
            n += 1
            i += hold + 1
        else:
            i += 1
    return n


def test_batch_job_and_per_candle_steps_on_one_model_never_corrupt_it(sp500):
    annotate_future_moves(sp500)
    runner = recording_runner(sp500)
    job = jobs.create(sp500, "train", command_id=None, engine_id="test", created_by=None)
    errors: list[BaseException] = []
    per_candle_steps = 0
    done = threading.Event()

    def batch_job():
        try:
            batch_training.run(
                sp500, runner, [("SP500", "1d")], TrainSettings(epochs=3, seq_len=160), job_id=job
            )
        except BaseException as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=batch_job)
    thread.start()
    while not done.is_set() or per_candle_steps < 20:
        try:
            runner.train_step(
                random_batch(per_candle_steps), operation="per-candle", source="every_candle"
            )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            break
        per_candle_steps += 1
    thread.join()
    assert errors == [], f"concurrent training raised: {errors!r}"
    batch_steps = training.count(sp500, job_id=job, skipped=False)
    recorded = training.count(sp500, model_key="test-model", skipped=False)
    assert batch_steps > 0 and per_candle_steps >= 20
    assert recorded == batch_steps + per_candle_steps
    assert runner.optimizer_steps() == recorded == runner.steps
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_a_training_event_with_a_field_it_does_not_have_is_refused_not_cut(database):
    with pytest.raises(ValueError, match="lock_wait"):
        training.record(database, model_key="m", source="batch", step=1, lock_wait=2.0)
    assert training.count(database, model_key="m") == 0  # nothing stored without it
    training.record(database, model_key="m", source="batch", step=1, lock_wait_ms=2.0)
    assert training.frame(database, model_key="m").lock_wait_ms.tolist() == [2.0]


def test_hung_holder_makes_the_next_caller_fail_naming_it_in_time(database):
    runner = recording_runner(database, lock_timeout_s=1.0)
    holding, release = threading.Event(), threading.Event()

    def hang():
        with runner.lock.hold("a stuck manual training step"):
            holding.set()
            release.wait(30)

    threading.Thread(target=hang, name="stuck-trainer").start()
    holding.wait(5)
    t0 = time.monotonic()
    with pytest.raises(TrainingLockTimeout) as err:
        runner.train_step(random_batch(0), operation="pivot step", source="pivot")
    waited = time.monotonic() - t0
    release.set()
    assert 1.0 <= waited <= 2.0
    message = str(err.value)
    assert "a stuck manual training step" in message and "stuck-trainer" in message
    assert "since" in message
    skipped = training.frame(database, skipped=True)
    assert len(skipped) == 1 and "stuck-trainer" in skipped.error[0]
    runner.train_step(random_batch(1), operation="after", source="manual")  # lock usable again


def test_inference_during_training_sees_only_whole_published_steps(database):
    batches = [random_batch(i) for i in range(25)]
    reference = ModelRunner("ref", SMALL)  # same seed: identical start
    after_step = {0: [p.detach().clone() for p in reference.model.parameters()]}
    for i, b in enumerate(batches, start=1):
        reference.train_step(b, operation="reference", source="batch")
        after_step[i] = [p.detach().clone() for p in reference.model.parameters()]

    runner = ModelRunner("live", SMALL)
    seen: list[tuple[int, list[torch.Tensor], bool]] = []
    stop = threading.Event()
    x = torch.randn(1, 40, SMALL.n_features)

    def infer():
        while not stop.is_set():
            snap = runner.snapshot
            with torch.inference_mode():
                logits, _ = snap.model(x)
            params = [p.detach().clone() for p in snap.model.parameters()]
            seen.append((snap.step, params, bool(torch.isfinite(logits).all())))

    reader = threading.Thread(target=infer)
    reader.start()
    for b in batches:
        runner.train_step(b, operation="trainer", source="batch")
    stop.set()
    reader.join()
    assert len({step for step, _, _ in seen}) > 3, "the reader should overlap several steps"
    for step, params, finite in seen:
        assert finite
        for got, want in zip(params, after_step[step], strict=True):
            assert torch.equal(got, want), f"snapshot of step {step} is not that step's weights"


def test_each_snapshot_predicts_live_with_its_own_weights(sp500):
    """The traced last-candle forward is shared by all of a model's snapshots, each calling it
    with its own weights: live predictions equal the snapshot's eager model at every step."""
    ohlcv = candles.load(sp500, "SP500", "1d")[["open", "high", "low", "close", "volume"]]
    ohlcv = ohlcv.to_numpy()[:600]
    runner = ModelRunner("live", SMALL)
    snaps = [runner.snapshot]
    for i in range(3):
        runner.train_step(random_batch(i), operation="t", source="batch")
        snaps.append(runner.snapshot)
    assert len({id(s.model) for s in snaps}) == 4  # a model of its own per step
    probs = []
    for snap in snaps:
        live = snap.predict_last(ohlcv)  # traced, with the snapshot's weights
        eager = predict_last(snap.model, ohlcv)
        np.testing.assert_allclose(list(live.probs.values()), list(eager.probs.values()), atol=1e-6)
        np.testing.assert_allclose(live.ghost, eager.ghost, rtol=1e-6)
        probs.append(list(live.probs.values()))
    assert len({tuple(p) for p in probs}) == 4  # and the weights really differ


def test_a_live_prediction_is_not_held_up_by_a_thread_running_python():
    """The traced forward runs without the GIL, taking it back only a few times a call: each
    time waits out a thread running Python for up to a switch interval (5 ms here, to see it),
    on one intra-op thread as live inference runs. With the weights as 37 separate inputs a
    call took 0.14 s here (the GIL taken back about 27 times), against 0.012 s."""
    snap = ModelRunner("live", ModelConfig()).snapshot
    x = torch.randn(1, context_size(snap.config), snap.config.n_features)
    busy = threading.Event()

    def python():
        while not busy.is_set():
            pass

    before, threads = sys.getswitchinterval(), torch.get_num_threads()
    sys.setswitchinterval(0.005)
    torch.set_num_threads(1)  # as a thread serving live predictions runs it
    spinner = threading.Thread(target=python)
    spinner.start()
    try:
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            snap.traced(x)
            times.append(time.perf_counter() - t0)
    finally:
        busy.set()
        spinner.join()
        sys.setswitchinterval(before)
        torch.set_num_threads(threads)
    assert sorted(times)[len(times) // 2] < 0.05, times


def test_the_loss_is_the_mean_over_what_is_known():
    """Cross-entropy averaged over labelled candles plus 0.1 x smooth-L1 averaged over known
    ghost values; a batch with nothing known still gives a loss to step on."""
    torch.manual_seed(0)
    model = ModelRunner("loss", SMALL).model
    batch = random_batch(3, t=40)
    batch.ghost[0, 30:] = float("nan")  # the future not known yet
    loss, acc, n = loss_and_accuracy(model, batch)
    logits, ghost = model(batch.x)
    labelled, known = batch.actions != IGNORE, ~torch.isnan(batch.ghost)
    want = F.cross_entropy(logits[labelled], batch.actions[labelled]) + GHOST_WEIGHT * (
        F.smooth_l1_loss(ghost[known], batch.ghost[known])
    )
    torch.testing.assert_close(loss, want)
    assert n == int(labelled.sum())
    assert acc == pytest.approx(
        float((logits[labelled].argmax(-1) == batch.actions[labelled]).float().mean())
    )
    nothing = Batch(batch.x, torch.full_like(batch.actions, IGNORE), batch.ghost * float("nan"))
    loss, acc, n = loss_and_accuracy(model, nothing)
    assert (n, acc, loss.item()) == (0, None, 0.0)
    loss.backward()


def test_an_optimizer_state_saved_without_the_fused_kernel_keeps_training(database):
    """States written before AdamW ran fused (and on other devices) load and train on."""
    old = ModelRunner("old", SMALL)
    plain = torch.optim.AdamW(old.model.parameters(), lr=1e-3, weight_decay=0.01)
    loss, _, _ = loss_and_accuracy(old.model, random_batch(0))
    loss.backward()
    plain.step()
    runner = ModelRunner("new", SMALL, old.model.state_dict(), plain.state_dict())
    assert runner.optimizer.param_groups[0]["fused"] and runner.steps == 1
    runner.train_step(random_batch(1), operation="t", source="batch")
    assert runner.optimizer_steps() == runner.steps == 2


def test_learning_is_real_validation_beats_the_majority_baseline(sp500):
    n = annotate_future_moves(sp500)
    assert n > 500
    runner = ModelRunner("learner", ModelConfig())
    job = jobs.create(sp500, "train", command_id=None, engine_id="test", created_by=None)
    result = batch_training.run(
        sp500,
        runner,
        [("SP500", "1d")],
        TrainSettings(epochs=15, batch_size=8, learning_rate=3e-3, seq_len=256),
        job_id=job,
    )
    last = result["epochs"][-1]
    assert last["val_samples"] > 300
    assert last["val_accuracy"] > last["val_baseline"] + 0.1, last
    assert result["val_candles"] and result["train_candles"] > 3 * result["val_candles"]


def test_validation_labels_never_reach_the_training_loss(sp500):
    annotate_future_moves(sp500)
    s = TrainSettings(validation_split=0.25, seq_len=200)
    (series,) = batch_training.prepare(sp500, [("SP500", "1d")], s, horizon=5)
    ws = batch_training.windows(series, 0, series.split, 200, 126)
    assert ws and max(w.score_to for w in ws) <= series.split
    assert np.isnan(series.ghost[series.split - 5 : series.split]).all()
