"""The trainer of a working model: hand-over order, a bounded queue that drops the oldest
session sample and says whose, requests that are never dropped, and autosave by steps and time."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from db import checkpoints as checkpoint_rows
from db import training
from db import working_models as rows
from engine import checkpoints
from engine.pool import ModelPool
from engine.trainer import Trainer, TrainerStopped
from tests.test_training import random_batch


def test_work_runs_in_hand_over_order_across_samples_and_requests():
    done = []
    gate = threading.Event()
    trainer = Trainer("t")
    trainer.submit(gate.wait)  # holds the trainer while the rest is queued
    trainer.offer(lambda: done.append("s1"), session_id=1)
    first = trainer.submit(lambda: done.append("r1") or "r1")
    trainer.offer(lambda: done.append("s2"), session_id=2)
    trainer.submit(lambda: done.append("r2"))
    assert trainer.waiting(1) == trainer.waiting(2) == 1
    gate.set()
    assert first.result(5) == "r1" and trainer.drain(5)
    assert done == ["s1", "r1", "s2", "r2"]
    assert trainer.waiting(1) == trainer.waiting(2) == 0
    trainer.stop()


def test_a_full_queue_drops_the_oldest_samples_and_counts_them_per_session():
    gate = threading.Event()
    applied = []
    trainer = Trainer("t", limit=10)
    trainer.submit(gate.wait)
    for i in range(25):
        trainer.offer(lambda i=i: applied.append(i), session_id=7 if i % 2 else 8)
    kept = trainer.submit(lambda: "a manual step is never dropped")
    assert trainer.waiting(7) + trainer.waiting(8) == 10
    assert trainer.dropped(7) + trainer.dropped(8) == 15
    assert (trainer.dropped(7), trainer.dropped(8)) == (7, 8)  # 1, 3, …, 13 and 0, 2, …, 14
    gate.set()
    assert kept.result(5) == "a manual step is never dropped"
    assert trainer.drain(5) and applied == list(range(15, 25))
    trainer.stop()


def test_stopping_fails_requests_left_and_counts_samples_left_as_dropped():
    gate = threading.Event()
    trainer = Trainer("t")
    trainer.submit(gate.wait)
    trainer.offer(lambda: None, session_id=3)
    left = trainer.submit(lambda: None)
    threading.Timer(0.5, gate.set).start()
    trainer.stop(drain_s=0.1)
    with pytest.raises(TrainerStopped):
        left.result(5)
    assert trainer.dropped(3) == 1 and trainer.waiting(3) == 0
    assert isinstance(trainer.submit(lambda: None).exception(1), TrainerStopped)


def test_a_working_model_autosaves_by_steps_and_by_time(database, monkeypatch):
    from engine import working

    monkeypatch.setattr(working, "AUTOSAVE_STEPS", 5)
    monkeypatch.setattr(working, "AUTOSAVE_S", 0.5)
    pool = ModelPool(database, "test")
    model = pool.new_working(None, created_by="ana")
    for i in range(5):
        model.train_step(random_batch(i, model.config), operation="t", source="batch")
    assert model.trainer.drain(5)
    assert rows.get(database, model.id).saved_steps == 5  # by steps, right after the 5th
    model.train_step(random_batch(9, model.config), operation="t", source="batch")
    assert rows.get(database, model.id).saved_steps == 5
    deadline = time.monotonic() + 5
    while rows.get(database, model.id).saved_steps != 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    row = rows.get(database, model.id)
    assert row.saved_steps == 6  # by time, with no further update to trigger it
    payload = checkpoints.read(checkpoints.resolve(row.state_file))  # weights only
    assert payload["steps"] == 6
    weights = model.snapshot.model.state_dict()
    assert all(torch.equal(payload["model"][k], weights[k]) for k in weights)
    pool.close_all()


def test_after_a_crash_the_working_model_resumes_from_its_state_file_and_marks_lost_steps(
    database,
):
    from engine import working

    first = ModelPool(database, "engine-a")
    model = first.new_working(None, created_by="ana")
    for i in range(3):
        model.train_step(random_batch(i, model.config), operation="t", source="batch")
    model.autosave()
    saved = {k: v.clone() for k, v in model.snapshot.model.state_dict().items()}
    for i in range(4):  # applied, recorded, never autosaved: the process "dies" here
        model.train_step(random_batch(10 + i, model.config), operation="t", source="batch")
    model.trainer.stop()

    again = ModelPool(database, "engine-b").working(model.id)
    assert again.runner.steps == 3
    weights = again.snapshot.model.state_dict()
    assert all(torch.equal(saved[k], weights[k]) for k in saved)
    assert rows.get(database, model.id).lost_steps == 4
    lost = training.frame(database, working_model_id=model.id, lost=True)
    assert sorted(lost.step) == [4, 5, 6, 7]
    assert rows.latest_step(database, model.id) == 3
    again.train_step(random_batch(20, again.config), operation="t", source="batch")
    assert rows.latest_step(database, model.id) == 4  # counting goes on from what was kept
    assert working.AUTOSAVE_STEPS <= 200 and working.AUTOSAVE_S <= 30  # the promised bound
    again.close()


def test_one_engine_trains_a_working_model_at_a_time(database):
    from db import engines
    from engine.pool import WorkingModelElsewhere

    first = ModelPool(database, "engine-a")
    model = first.new_working(None, created_by="ana")
    engines.register(database, "engine-a", "test", None)  # alive: this very process
    with pytest.raises(WorkingModelElsewhere, match="trained by engine engine-a"):
        ModelPool(database, "engine-b").working(model.id)
    engines.mark_stopped(database, "engine-a", "test over")
    taken = ModelPool(database, "engine-b").working(model.id)
    assert rows.get(database, model.id).engine_id == "engine-b"
    taken.close()
    first.close_all()


def test_the_last_release_unloads_a_working_model_keeping_what_it_learned(database):
    pool = ModelPool(database, "test")
    model = pool.new_working(None, created_by="ana")
    pool.retain(model)
    pool.retain(model)
    model.train_step(random_batch(0, model.config), operation="t", source="batch")
    pool.release(model)
    assert pool.loaded() == [model]  # still trained by the other user
    saved = model.save_checkpoint(name="kept", created_by="ana")
    pool.release(model)
    again = pool.working(model.id)  # waits for the unload, then loads the state file
    assert again is not model and pool.loaded() == [again]
    assert saved.result(5) is not None and not model.trainer.thread.is_alive()
    assert again.runner.steps == 1 and rows.get(database, model.id).lost_steps == 0
    assert model.runner.on_step is None  # no cycle left: freed like any object
    pool.close_all()


def test_a_checkpoint_save_also_brings_the_state_file_up_to_date(database):
    pool = ModelPool(database, "test")
    model = pool.new_working(None, created_by="ana")
    for i in range(3):
        model.train_step(random_batch(i, model.config), operation="t", source="batch")
    cid = model.save_checkpoint(name="c", created_by="ana").result(10)
    assert rows.get(database, model.id).saved_steps == 3
    state = checkpoints.read(checkpoints.resolve(rows.get(database, model.id).state_file))
    assert state["steps"] == checkpoint_rows.get(database, cid).steps == 3
    unchanged = model.save_checkpoint(name="same", created_by="ana", only_if_changed=True)
    assert unchanged.result(10) is None  # nothing learned since
    pool.close_all()


def test_a_learning_rate_for_one_step_leaves_the_models_own_alone(database):
    pool = ModelPool(database, "test")
    model = pool.new_working(None, created_by="ana")
    usual = model.runner.optimizer.param_groups[0]["lr"]
    model.train_step(random_batch(0, model.config), operation="job", source="batch", lr=0.5)
    assert model.runner.optimizer.param_groups[0]["lr"] == usual
    pool.close_all()


def test_a_manual_request_the_trainer_never_applied_is_recorded_as_skipped(database):
    from engine.online import OnlineLearner

    pool = ModelPool(database, "test")
    model = pool.new_working(None, created_by="ana")
    gate = threading.Event()
    model.trainer.submit(gate.wait)
    ohlcv = np.column_stack([np.linspace(100, 120, 300)] * 4 + [np.ones(300), np.arange(300)])
    sample = OnlineLearner(model.config, 5).sample(ohlcv, 299, 0, "manual")
    future = model.request(sample, operation="manual", command_id=77, requested_by="bo")
    threading.Timer(0.3, gate.set).start()
    model.trainer.stop(drain_s=0.05)
    assert isinstance(future.exception(5), TrainerStopped)
    (event,) = training.frame(database, command_id=77).itertuples()
    assert event.skipped and "TrainerStopped" in event.error and event.requested_by == "bo"
    pool.close_all()


@pytest.fixture
def four_cores(monkeypatch):
    """A machine of four cores with no thread serving predictions and no job yet."""
    from engine import priority

    monkeypatch.setattr(priority, "CORES", 4)
    monkeypatch.setattr(priority, "_serving", set())
    monkeypatch.setattr(priority, "_jobs", set())
    return priority


def on_a_thread(register, release: threading.Event) -> threading.Thread:
    started = threading.Event()

    def body():
        register()
        started.set()
        release.wait(10)

    thread = threading.Thread(target=body)
    thread.start()
    started.wait(5)
    return thread


def test_a_batch_step_takes_every_core_only_while_no_live_inference_and_no_other_job(four_cores):
    priority = four_cores
    assert priority.spare_cores() == 4
    release = threading.Event()
    session = on_a_thread(priority.inference_thread, release)
    assert priority.spare_cores() == 1  # the other cores stay free for live predictions
    release.set()
    session.join()
    assert priority.spare_cores() == 4  # the session ended
    release = threading.Event()
    jobs = [on_a_thread(priority.background_thread, release)]
    assert priority.spare_cores() == 4  # the batch job itself
    jobs.append(on_a_thread(priority.background_thread, release))
    assert priority.spare_cores() == 1  # two jobs: one core each
    release.set()
    for job in jobs:
        job.join()


def test_the_faster_thread_count_is_kept_and_the_other_tried_less_often_while_it_loses():
    from engine import priority

    choice = priority.ThreadChoice()
    seconds = {4: 1.0, 1: 2.0}  # per step of 1,000 candles: four threads twice as fast

    def steps(n: int) -> list[int]:
        picked = []
        for _ in range(n):
            threads = choice.pick(4)
            choice.record(threads, seconds[threads], 1000)
            picked.append(threads)
        return picked

    first = steps(33)
    assert first[:9] == [1] * 8 + [4]  # one thread first, every core after 8 steps
    assert [i for i, n in enumerate(first) if n == 1][8:] == [16, 32]  # retried after 8, 16
    assert choice.pick(1) == 1  # no spare core: no choice
    seconds[1] = 0.25  # one thread became faster
    later = steps(40)
    assert later[:31] == [4] * 31  # the next try comes 32 steps after the last one
    assert later[31:39] == [1] * 8 and later[39] == 4  # it won: kept, the loser retried soon


def test_a_step_split_in_parts_on_threads_gives_the_weights_of_one_whole_step(four_cores):
    """A batch job's step on spare cores runs its rows in parts, each forward and backward on
    a thread of its own: the gradients add up to the whole batch's."""
    from engine.model import ModelConfig
    from engine.priority import ThreadChoice
    from engine.runner import ModelRunner

    class Always(ThreadChoice):
        def __init__(self, threads: int) -> None:
            super().__init__()
            self.threads = threads

        def pick(self, spare: int) -> int:
            return self.threads

    cfg = ModelConfig(d_model=32, n_heads=2, d_ff=64, window=16)
    whole, parts = ModelRunner("whole", cfg), ModelRunner("parts", cfg)
    whole.threads, parts.threads = Always(1), Always(4)
    for i in range(3):
        batch = random_batch(i, cfg, b=6, t=80)  # the banded-block path: 80 > 4 x 16
        a = whole.train_step(batch, operation="t", source="batch", spare_cores=True)
        b = parts.train_step(batch, operation="t", source="batch", spare_cores=True)
        assert a.loss == pytest.approx(b.loss, rel=1e-5) and a.accuracy == b.accuracy
    for p, q in zip(whole.model.parameters(), parts.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
    assert not torch.equal(whole.model.inp.weight, ModelRunner("start", cfg).model.inp.weight)


def test_a_step_on_spare_cores_is_timed_and_gives_the_thread_its_count_back(four_cores):
    from engine.model import ModelConfig
    from engine.runner import ModelRunner

    runner = ModelRunner("threads", ModelConfig(d_model=32, n_heads=2, d_ff=64, window=16))
    before = torch.get_num_threads()
    runner.train_step(random_batch(0, runner.config), operation="t", source="manual")
    assert runner.threads.costs() == {}  # not a batch job's step: the thread's own count
    for i in range(1, 10):  # a batch job's steps: timed, one thread, then every spare core
        runner.train_step(random_batch(i, runner.config), operation="t", source="batch",
                          spare_cores=True)  # fmt: skip
    assert sorted(runner.threads.costs()) == [1, 4] and torch.get_num_threads() == before
