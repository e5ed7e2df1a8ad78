"""Train Model through the real engine: the command, the job, the checkpoint it makes."""

from __future__ import annotations

import signal

import pytest

from contract.access import SYSTEM_ACCOUNT
from db import bus, jobs, training
from db import checkpoints as rows
from market.importer import seed_samples
from tests.conftest import make_account, wait_until
from tests.test_training import annotate_future_moves


@pytest.fixture
def annotated(database):
    make_account(database, "ana", "admin")  # her runs also activate their checkpoint
    seed_samples(database)
    annotate_future_moves(database, "SP500")
    return database


def start_training_row(database, timeout=20, **payload) -> dict:
    row = bus.wait(
        database, bus.submit(database, "train.start", payload, created_by="ana"), timeout
    )
    assert row.status == "done", row.error
    return row.result


def start_training(database, timeout=20, **payload) -> int:
    return start_training_row(database, timeout, **payload)["job_id"]


def test_train_start_runs_a_job_to_a_new_active_child_checkpoint(annotated, engine_process):
    engine_process("--no-seed")
    started = start_training_row(annotated, epochs=2, activate=True, name="first run")
    job_id, base_id = started["job_id"], started["base_checkpoint"]
    assert rows.get(annotated, base_id).name == "default (untrained)"
    seen = []
    job = wait_until(
        lambda: (seen.append(j := jobs.get(annotated, job_id)) or j.status in ("done", "failed")) and j,
        120, 0.2, "training to finish",
    )  # fmt: skip
    assert job.status == "done", job.message
    progress = [j.progress for j in seen if j.status == "running"]
    assert progress == sorted(progress) and job.progress == 1.0
    child = rows.get(annotated, job.result["checkpoint_id"])
    assert (child.parent_id, child.name, child.created_by) == (base_id, "first run", "ana")
    assert rows.active(annotated).id == child.id
    assert child.metrics["val_accuracy"] is not None and len(job.result["epochs"]) == 2
    steps = training.count(annotated, job_id=job_id, skipped=False)
    assert steps == 2 * job.result["steps_per_epoch"] == child.steps


BAD_TRAINING_REQUESTS = [  # payload, what the failure must say
    ({"base_checkpoint": 999}, "unknown checkpoint 999"),
    ({"datasets": [{"symbol": "NOPE", "timeframe": "1d"}]}, "no candles stored for NOPE 1d"),
    ({"epochs": 0}, "epochs"),
]


def test_bad_training_requests_fail_with_a_reason(annotated, engine_process):
    engine_process("--no-seed")  # one engine takes them all in turn
    for payload, expected in BAD_TRAINING_REQUESTS:
        cid = bus.submit(annotated, "train.start", payload, created_by=SYSTEM_ACCOUNT)
        row = bus.wait(annotated, cid, 20)
        assert row.status == "failed" and expected in row.error, (payload, row.error)


def test_training_without_annotations_says_what_to_do(database, engine_process):
    seed_samples(database)
    engine_process("--no-seed")
    row = bus.wait(database, bus.submit(database, "train.start", {}, created_by=SYSTEM_ACCOUNT), 20)
    assert row.status == "failed" and "annotate" in row.error.lower()


def test_hung_lock_holder_fails_training_naming_it_and_engine_still_answers(
    annotated, engine_process
):
    engine_process("--no-seed", "--debug-commands", "--lock-timeout", "1")
    started = start_training_row(annotated, epochs=200)
    job_id = started["job_id"]
    hold = bus.wait(annotated, bus.submit(annotated, "debug.hold_lock", {
        "working_model_id": started["working_model_id"], "seconds": 60},
        created_by=SYSTEM_ACCOUNT), 20)  # fmt: skip
    assert hold.status == "done", hold.error
    first = wait_until(
        lambda: training.count(annotated, job_id=job_id, skipped=True), 10, 0.1, "a skipped step"
    )
    assert first
    ping = bus.wait(annotated, bus.submit(annotated, "ping", created_by=SYSTEM_ACCOUNT), 5)
    assert ping.status == "done"
    job = wait_until(
        lambda: (j := jobs.get(annotated, job_id)).status == "failed" and j, 20, 0.2, "job failure"
    )
    assert "debug.hold_lock" in job.message and "hung-trainer" in job.message
    skipped = training.frame(annotated, job_id=job_id, skipped=True)
    assert len(skipped) == 3 and (skipped.lock_wait_ms < 2000).all()


def test_sigterm_mid_training_saves_the_weights_and_marks_the_job_interrupted(
    annotated, engine_process
):
    proc = engine_process("--no-seed")
    job_id = start_training(annotated, epochs=200)
    wait_until(lambda: jobs.get(annotated, job_id).progress > 0, 60, 0.1, "training to progress")
    assert proc.stop(signal.SIGTERM, timeout=60) == 0
    job = jobs.get(annotated, job_id)
    assert job.status == "interrupted" and "shutdown" in job.message
    saved = rows.get(annotated, job.result["checkpoint_id"])
    assert "shutdown" in saved.name and saved.steps > 0
