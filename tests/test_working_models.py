"""The model's identity through the real engine: checkpoint N stays N whatever trains from it,
working models carry the training, predictions never wait for the training lock, and manual
training is accepted at once."""

from __future__ import annotations

import hashlib
import json
import signal
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from contract.access import SYSTEM_ACCOUNT
from db import backtests, bus, candles, jobs, quotas, training
from db import checkpoints as checkpoint_rows
from db import sessions as session_rows
from db import working_models as working_rows
from engine import checkpoints
from market.importer import seed_samples
from tests.conftest import make_account, run_cli, wait_until
from tests.test_training import annotate_future_moves

PACE = 0.05


@pytest.fixture
def annotated(database):
    """Sample data, hindsight annotations, the trader ana and the admin bo (who may train on
    ana's sessions)."""
    make_account(database, "ana")
    make_account(database, "bo", "admin")
    seed_samples(database)
    annotate_future_moves(database, "SP500")
    return database


def send(database, kind, payload, timeout=30, who="ana"):
    row = bus.wait(database, bus.submit(database, kind, payload, created_by=who), timeout)
    assert row.status == "done", f"{kind}: {row.error}"
    return row.result


def start_session(database, mode, n, pace=0.0, **extra) -> dict:
    ts = candles.load(database, "SP500", "1d").ts
    feed = {"kind": "replay", "pace_s": pace, "start_ts": int(ts.iloc[-n])}
    return send(database, "session.start",
                {"symbol": "SP500", "timeframe": "1d", "mode": mode, "feed": feed, **extra})  # fmt: skip


def backtest(database, checkpoint_id) -> backtests.Backtest:
    ts = candles.load(database, "SP500", "1d").ts
    bid = send(database, "backtest.start", {"symbol": "SP500", "timeframe": "1d",
               "start": int(ts.iloc[-400]), "checkpoint_id": checkpoint_id})["backtest_id"]  # fmt: skip
    return wait_until(
        lambda: (b := backtests.get(database, bid)).status != "running" and b, 120, 0.2, "report"
    )


def finished(database, job_id, timeout=240):
    return wait_until(
        lambda: (j := jobs.get(database, job_id)).status not in jobs.UNFINISHED and j,
        timeout, 0.2, f"job {job_id} to end",
    )  # fmt: skip


def all_applied(database, sid: int, n: int) -> bool:
    """Every sample of a finished n-candle every_candle session is applied, skipped or dropped."""
    row = session_rows.get(database, sid)
    return (
        row.status != "running"
        and training.count(database, session_id=sid) + (row.samples_dropped) >= n
    )


def file_digest(database, checkpoint_id) -> str:
    path = checkpoints.resolve(checkpoint_rows.get(database, checkpoint_id).file)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_n_backtests_the_same_after_training_from_it_and_after_a_restart(
    annotated, engine_process
):
    first = engine_process("--no-seed")
    before = backtest(annotated, 1)
    digest = file_digest(annotated, 1)
    trained = send(annotated, "train.start", {"base_checkpoint": 1, "epochs": 2})
    session = start_session(annotated, "every_candle", 150, checkpoint_id=1)
    assert session["working_model_id"] not in (None, trained["working_model_id"])
    assert finished(annotated, trained["job_id"]).status == "done"
    wait_until(lambda: all_applied(annotated, session["session_id"], 150), 120, 0.2, "learning")
    after_training = backtest(annotated, 1)
    first.stop()
    engine_process("--no-seed")
    after_restart = backtest(annotated, 1)

    for report in (after_training, after_restart):
        assert report.status == "done"
        assert report.metrics == before.metrics
        pd.testing.assert_frame_equal(
            backtests.trades(annotated, report.id), backtests.trades(annotated, before.id)
        )
        pd.testing.assert_frame_equal(
            backtests.predictions(annotated, report.id), backtests.predictions(annotated, before.id)
        )
    assert file_digest(annotated, 1) == digest
    default = checkpoint_rows.get(annotated, 1)
    assert default.name == "default (untrained)" and default.steps == 0
    # what the training made are new checkpoints, children of 1, that do trade differently
    children = [c for c in checkpoint_rows.all_(annotated) if c.parent_id == 1]
    assert {c.working_model_id for c in children} == {
        trained["working_model_id"], session["working_model_id"],
    }  # fmt: skip
    moved = backtest(annotated, finished(annotated, trained["job_id"]).result["checkpoint_id"])
    assert moved.metrics != before.metrics or not backtests.trades(annotated, moved.id).equals(
        backtests.trades(annotated, before.id)
    )


def test_a_learning_session_predicts_on_schedule_while_its_model_lock_is_held(
    annotated, engine_process, home
):
    engine_process("--no-seed", "--debug-commands")
    n = 300  # the 10 s hold starts near candle 40 and ends near 240: a few seconds to spare
    started = start_session(annotated, "every_candle", n, pace=PACE)
    sid = started["session_id"]
    wait_until(lambda: session_rows.get(annotated, sid).candles >= 40, 30, 0.05, "candles")
    hold = send(
        annotated, "debug.hold_lock", {"session_id": sid, "seconds": 10}, who=SYSTEM_ACCOUNT
    )
    held_from = datetime.fromisoformat(hold["held_from"])
    held_until = datetime.fromisoformat(hold["held_until"])
    wait_until(lambda: all_applied(annotated, sid, n), 120, 0.2, "every sample to be handled")

    preds = session_rows.predictions(annotated, sid)
    assert len(preds) == n
    in_hold = preds[(preds.created_at >= held_from) & (preds.created_at <= held_until)]
    assert len(in_hold) >= 0.8 * 10 / PACE
    assert share_on_schedule(preds, in_hold.index) >= 0.8
    assert np.percentile(in_hold.latency_ms, 99) <= 50
    assert in_hold.model_step.nunique() == 1  # the weights could not change meanwhile

    events = training.frame(annotated, session_id=sid)
    held_samples = events[events.candle_ts.isin(in_hold.ts)]
    applied = held_samples[~held_samples.skipped]
    dropped = session_rows.get(annotated, sid).samples_dropped
    assert len(applied) + dropped >= len(in_hold) - 5  # every_candle: one sample per candle
    assert (applied.created_at >= held_until).all()  # applied once the lock came free
    shown = json.loads(run_cli(home, "show", "session", str(sid)).stdout)
    assert shown["samples_dropped"] == dropped and shown["working_model_id"] is not None


def test_a_learning_session_predicts_on_schedule_while_a_batch_job_trains_its_model(
    annotated, engine_process
):
    engine_process("--no-seed")
    n = 400
    started = start_session(annotated, "every_candle", n, pace=PACE)
    sid, model = started["session_id"], started["working_model_id"]
    wait_until(lambda: session_rows.get(annotated, sid).candles >= 40, 30, 0.05, "candles")
    job = send(annotated, "train.start", {"working_model_id": model, "epochs": 500})
    assert job["working_model_id"] == model
    wait_until(lambda: training.count(annotated, job_id=job["job_id"]) >= 1, 60, 0.1, "batch")
    job_from = jobs.get(annotated, job["job_id"]).started_at
    wait_until(lambda: session_rows.get(annotated, sid).status == "finished", 120, 0.2, "replay")
    assert jobs.request_cancel(annotated, job["job_id"], "ana")
    assert finished(annotated, job["job_id"]).status == "cancelled"
    wait_until(lambda: all_applied(annotated, sid, n), 120, 0.2, "every sample to be handled")

    preds = session_rows.predictions(annotated, sid)
    during = preds[preds.created_at >= job_from]
    assert len(during) >= 100
    assert share_on_schedule(preds, during.index) >= 0.8
    assert np.percentile(during.latency_ms, 99) <= 50
    interleaved = training.frame(annotated, working_model_id=model, skipped=False)
    by_session = interleaved[interleaved.session_id == sid]
    dropped = session_rows.get(annotated, sid).samples_dropped
    assert len(by_session) + dropped == n
    batch_steps = interleaved[interleaved.job_id == job["job_id"]]
    assert len(batch_steps) >= 1 and interleaved.step.is_monotonic_increasing  # one trainer
    summary = working_rows.summary(annotated, model)
    assert summary["jobs"][0]["id"] == job["job_id"] and summary["sessions"][0]["id"] == sid


def share_on_schedule(preds: pd.DataFrame, which) -> float:
    """Share of `which` predictions committed before the next candle was due: the replay's
    latency counts from the candle's slot on its fixed schedule, so a late pick-up counts."""
    return float((preds.latency_ms[which] <= PACE * 1000).mean())


def test_manual_training_is_accepted_at_once_and_applied_when_the_lock_frees(
    annotated, engine_process
):
    engine_process("--no-seed", "--debug-commands")
    sid = start_session(annotated, "manual", 300, pace=0.2)["session_id"]
    wait_until(lambda: session_rows.get(annotated, sid).candles >= 3, 30, 0.05, "candles")
    hold = send(annotated, "debug.hold_lock", {"session_id": sid, "seconds": 4}, who=SYSTEM_ACCOUNT)
    manual = bus.wait(annotated, bus.submit(annotated, "session.train_manual",
                      {"session_id": sid, "action": "BUY"}, created_by="bo"), 5)  # fmt: skip
    assert manual.status == "done" and manual.result["queued"]
    assert (manual.finished_at - manual.created_at).total_seconds() < 0.1
    for _ in range(5):  # the command loop answers while the step waits for the lock
        ping = bus.wait(annotated, bus.submit(annotated, "ping", created_by=SYSTEM_ACCOUNT), 5)
        assert ping.status == "done"
        assert (ping.finished_at - ping.created_at).total_seconds() < 0.1
    assert training.count(annotated, command_id=manual.id) == 0
    wait_until(lambda: training.count(annotated, command_id=manual.id), 30, 0.1, "the step")
    event = training.frame(annotated, command_id=manual.id).iloc[0]
    assert not event.skipped and event.label == "BUY" and event.requested_by == "bo"
    assert event.created_at >= datetime.fromisoformat(hold["held_until"])
    assert event.candle_ts == manual.result["candle_ts"]


def test_show_model_tells_where_it_came_from_and_who_trains_it(annotated, engine_process, home):
    engine_process("--no-seed")
    started = start_session(annotated, "manual", 300, pace=0.1, checkpoint_id=1)
    sid, model = started["session_id"], started["working_model_id"]
    wait_until(lambda: session_rows.get(annotated, sid).candles >= 2, 30, 0.05, "candles")
    send(annotated, "session.train_manual", {"session_id": sid, "action": "SELL"}, who="bo")
    wait_until(lambda: training.count(annotated, working_model_id=model) == 1, 20, 0.1, "step")
    job = send(annotated, "train.start", {"working_model_id": model, "epochs": 1})
    assert finished(annotated, job["job_id"]).status == "done"
    send(annotated, "session.stop", {"session_id": sid})
    shown = json.loads(run_cli(home, "show", "model", str(model)).stdout)
    assert shown["base_checkpoint"]["id"] == 1
    assert shown["manual_steps_by"] == {"bo": 1}
    assert shown["steps_by_source"]["batch"] >= 1
    assert [s["id"] for s in shown["sessions"]] == [sid]
    assert [j["id"] for j in shown["jobs"]] == [job["job_id"]]
    assert shown["steps"] == shown["steps_trained_here"] == 1 + shown["steps_by_source"]["batch"]
    last = wait_until(lambda: working_rows.get(annotated, model).last_checkpoint_id, 20, 0.1,
                      "the stop's checkpoint")  # fmt: skip
    assert checkpoint_rows.get(annotated, last).parent_id is not None
    again = bus.wait(
        annotated,
        bus.submit(annotated, "model.save", {"working_model_id": model}, created_by="ana"),
        20,
    )
    assert again.status == "failed" and f"learned nothing since checkpoint #{last}" in again.error
    missing = run_cli(home, "show", "model", "999")
    assert missing.returncode == 2 and "unknown working model 999" in missing.stderr


def test_sessions_choose_frozen_new_or_existing_models(annotated, engine_process):
    quotas.set_(annotated, "trader", "sessions", 10, by=SYSTEM_ACCOUNT)  # six at once here
    engine_process("--no-seed")
    frozen = start_session(annotated, "none", 50, checkpoint_id=1)
    assert frozen["working_model_id"] is None
    learner = start_session(annotated, "pivots_only", 50, checkpoint_id=1)
    shared = start_session(annotated, "every_candle", 50,
                           working_model_id=learner["working_model_id"])  # fmt: skip
    assert shared["working_model_id"] == learner["working_model_id"]
    assert shared["checkpoint_id"] == 1
    fresh = start_session(annotated, "none", 50, checkpoint_id=1, frozen=False)
    assert fresh["working_model_id"] not in (None, learner["working_model_id"])
    refused = bus.wait(annotated, bus.submit(annotated, "session.start", {
        "symbol": "SP500", "timeframe": "1d", "mode": "every_candle", "frozen": True},
        created_by="ana"), 20)  # fmt: skip
    assert refused.status == "failed" and "frozen checkpoint never changes" in refused.error
    # Asked by an admin: a trader is only told the model is not theirs.
    unknown = bus.wait(
        annotated,
        bus.submit(
            annotated,
            "session.start",
            {"symbol": "SP500", "timeframe": "1d", "working_model_id": 99},
            created_by="bo",
        ),
        20,
    )
    assert unknown.status == "failed" and "unknown working model 99" in unknown.error


def test_switching_a_frozen_session_to_learning_gives_it_a_working_model(annotated, engine_process):
    engine_process("--no-seed")
    sid = start_session(annotated, "none", 300, pace=0.05, checkpoint_id=1)["session_id"]
    wait_until(lambda: session_rows.get(annotated, sid).candles >= 5, 30, 0.05, "candles")
    switched = send(annotated, "session.set_mode", {"session_id": sid, "mode": "every_candle"})
    model = switched["working_model_id"]
    assert model is not None and session_rows.get(annotated, sid).working_model_id == model
    wait_until(lambda: training.count(annotated, working_model_id=model) >= 5, 30, 0.1, "steps")
    assert working_rows.get(annotated, model).base_checkpoint_id == 1
    send(annotated, "session.stop", {"session_id": sid})


def test_a_backtest_whose_engine_dies_ends_interrupted_with_the_reason(annotated, engine_process):
    first = engine_process("--no-seed")
    ts = candles.load(annotated, "SP500", "1d").ts
    started = send(annotated, "backtest.start", {"symbol": "SP500", "timeframe": "1d",
                   "start": int(ts.iloc[-3000]), "train_mode": "every_candle"})  # fmt: skip
    wait_until(lambda: jobs.get(annotated, started["job_id"]).progress > 0, 60, 0.1, "progress")
    first.stop(signal.SIGKILL)
    engine_process("--no-seed")  # its start-up finds the dead engine's work
    job = wait_until(lambda: (j := jobs.get(annotated, started["job_id"])).status != "running"
                     and j, 30, 0.1, "the job to be closed")  # fmt: skip
    report = backtests.get(annotated, started["backtest_id"])
    assert report.status == "interrupted" and report.finished_at is not None
    assert job.status == "interrupted" and "stopped without finishing" in job.message
    assert first.proc.pid and str(first.proc.pid) in job.message  # names the dead engine


def test_a_cancelled_backtest_job_keeps_a_partial_report(annotated, engine_process):
    engine_process("--no-seed")
    ts = candles.load(annotated, "SP500", "1d").ts
    started = send(annotated, "backtest.start", {"symbol": "SP500", "timeframe": "1d",
                   "start": int(ts.iloc[-3000]), "train_mode": "every_candle"})  # fmt: skip
    wait_until(lambda: jobs.get(annotated, started["job_id"]).progress > 0.05, 60, 0.1, "progress")
    assert jobs.request_cancel(annotated, started["job_id"], "ana")
    job = finished(annotated, started["job_id"], 60)
    report = backtests.get(annotated, started["backtest_id"])
    assert job.status == report.status == "cancelled"
    assert 2 <= report.settings.get("training_steps", 0) < 3000
    assert len(report.equity["ts"]) < 3000
