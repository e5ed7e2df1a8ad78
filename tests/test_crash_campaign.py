"""Twenty kill -9s of an engine busy with learning sessions, manual training, batch jobs and
backtests. Afterwards: every fill follows its stored prediction, each kill lost at most the
autosave bound of learning, every job and backtest ended with a reason, the database is intact
and every checkpoint and working-model state loads weights-only."""

from __future__ import annotations

import random
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from db import backtests, bus, candles, engines, jobs, training
from db import checkpoints as checkpoint_rows
from db import sessions as session_rows
from db import working_models as working_rows
from db.connection import readonly
from db.models import TrainingEvent
from engine import checkpoints
from engine.account import Account
from market.importer import seed_samples
from tests.conftest import make_account, wait_until
from tests.test_training import annotate_future_moves

KILLS = 20
BOUND_STEPS, BOUND_S = 200, 30  # learning a kill may lose, at most (the promise)


def send(database, kind, payload, who="ana") -> dict:
    row = bus.wait(database, bus.submit(database, kind, payload, created_by=who), 30)
    assert row.status == "done", f"{kind}: {row.error}"
    return row.result


def newest_step(database, model_id) -> int:
    """The last update recorded for a working model (what a kill now may lose is above the
    last autosave)."""
    with readonly(database).begin() as conn:
        return conn.scalar(
            select(func.max(TrainingEvent.step)).where(
                TrainingEvent.working_model_id == model_id,
                TrainingEvent.skipped.is_(False),
                TrainingEvent.lost.is_(False),
            )
        ) or 0  # fmt: skip


def lost_between(database, model_id, since, until):
    """The updates the engine that died at `until` had recorded and lost, oldest first."""
    events = training.frame(database, 100_000, working_model_id=model_id, lost=True)
    return events[(events.created_at > since) & (events.created_at <= until)].sort_values("step")


def replayed_trades(database, sid) -> list[dict]:
    """The trades the fill rule makes from the session's stored predictions."""
    row = session_rows.get(database, sid)
    preds = session_rows.predictions(database, sid)
    bars = candles.load(database, row.symbol, row.timeframe).set_index("ts")
    account = Account(fee_bps=row.settings["fee_bps"], long_only=row.settings["long_only"])
    out = []
    for p in preds.itertuples():
        out += account.open_bar(int(p.ts), float(bars.at[p.ts, "open"]))
        account.mark(float(bars.at[p.ts, "close"]))
        account.signal(p.action)
    return out


@pytest.fixture
def annotated(database):
    """Sample data, hindsight annotations, the trader ana and the admin bo (who trains on
    ana's manual session)."""
    make_account(database, "ana")
    make_account(database, "bo", "admin")
    seed_samples(database)
    annotate_future_moves(database, "SP500")
    return database


def test_twenty_kills_lose_nothing_they_should_keep(annotated, engine_process):
    rng = random.Random(20261126)
    ts = candles.load(annotated, "SP500", "1d").ts
    replay = {"kind": "replay", "pace_s": 0.03, "start_ts": int(ts.iloc[-4000])}
    common = {"symbol": "SP500", "timeframe": "1d", "feed": replay}
    killed_at = previous_kill = datetime.now(UTC)  # before anything trains
    engine = engine_process("--no-seed")
    learner = send(annotated, "session.start", {**common, "mode": "every_candle"})
    shared = learner["working_model_id"]
    pivots = send(annotated, "session.start", {**common, "mode": "pivots_only",
                  "working_model_id": shared})  # fmt: skip
    manual = send(annotated, "session.start", {**common, "mode": "manual",
                  "feed": {**replay, "pace_s": 0.1}})  # fmt: skip
    sessions = [learner["session_id"], pivots["session_id"], manual["session_id"]]
    models = [shared, manual["working_model_id"]]
    lost_per_kill = []
    before: dict[int, int] = {}
    for round_ in range(KILLS + 1):
        if round_:
            engine = engine_process("--no-seed")
        send(annotated, "train.start", {"working_model_id": shared, "epochs": 500})
        if round_:  # both models loaded again: what did the kill lose?
            me = instance_of(annotated, engine)
            for m in models:
                wait_until(lambda m=m, me=me: working_rows.get(annotated, m).engine_id == me,
                           30, 0.1, f"model {m} to load")  # fmt: skip
                lost = lost_between(annotated, m, previous_kill, killed_at)
                lost_per_kill.append(len(lost))
                assert len(lost) <= BOUND_STEPS, (round_, m, len(lost))
                if len(lost):  # the newest updates of the dead engine, and recent ones
                    assert lost.step.tolist() == list(
                        range(before[m] - len(lost) + 1, before[m] + 1)
                    )
                    assert killed_at - lost.created_at.min() <= timedelta(seconds=BOUND_S)
        if round_ == KILLS:
            break
        send(annotated, "backtest.start", {"symbol": "SP500", "timeframe": "1d",
             "start": int(ts.iloc[-1500]), "checkpoint_id": 1,
             **({"train_mode": "every_candle"} if round_ % 2 else {})})  # fmt: skip
        until = time.monotonic() + rng.uniform(0.5, 2.5)  # the kill lands 0.5-2.5 s in
        while time.monotonic() < until:
            bus.submit(annotated, "session.train_manual", {"session_id": manual["session_id"],
                       "action": rng.choice(["BUY", "SELL", "HOLD"])}, created_by="bo")  # fmt: skip
            time.sleep(rng.uniform(0.05, 0.4))
        engine.stop(signal.SIGKILL)
        previous_kill, killed_at = killed_at, datetime.now(UTC)
        before = {m: newest_step(annotated, m) for m in models}  # the dead engine's last word
    engine.stop(signal.SIGTERM, timeout=60)

    check_fills(annotated, sessions)
    for m in models:
        row = working_rows.get(annotated, m)
        assert row.lost_steps == training.count(annotated, working_model_id=m, lost=True)
    assert sum(lost_per_kill) == sum(working_rows.get(annotated, m).lost_steps for m in models)
    print(f"learning lost per kill (steps): {sorted(lost_per_kill)}")
    manual_kept = training.frame(annotated, session_id=manual["session_id"], source="manual")
    print(f"manual steps applied {len(manual_kept)}, lost {int(manual_kept.lost.sum())}")
    check_every_job_ended(annotated)
    check_storage(annotated)


def instance_of(database, proc) -> str:
    return next(r.id for r in engines.alive(database) if r.pid == proc.proc.pid)


def check_fills(database, sessions):
    for sid in sessions:
        preds = session_rows.predictions(database, sid)
        stored = session_rows.trades(database, sid)
        replay = replayed_trades(database, sid)
        assert len(preds) > 50 and preds.ts.is_unique and preds.ts.is_monotonic_increasing
        everything = candles.load(database, "SP500", "1d").ts
        start = int(everything.searchsorted(preds.ts.iloc[0]))
        assert preds.ts.tolist() == everything.iloc[start : start + len(preds)].tolist()  # no gap
        assert len(stored) == len(replay), f"session {sid}: fills contradict stored predictions"
        for got, want in zip(stored.to_dict("records"), replay, strict=True):
            for key in ("side", "entry_ts", "exit_ts", "entry_price", "exit_price"):
                assert got[key] == want[key], (sid, key, got, want)
            assert got["pnl"] == pytest.approx(want["pnl"], rel=1e-9, abs=1e-9)


def check_every_job_ended(database):
    all_jobs = jobs.recent_of(database, "train", 100) + jobs.recent_of(database, "backtest", 100)
    assert len(all_jobs) >= 2 * KILLS
    for job in all_jobs:
        assert job.status not in jobs.UNFINISHED, (job.id, job.status)
        assert job.message, job.id
        if job.status == "interrupted":
            assert "interrupted" in job.message or "shutdown" in job.message, job.message
    reports = backtests.all_(database)
    assert len(reports) == KILLS
    assert {r.status for r in reports} <= {"done", "interrupted", "cancelled"}
    assert all(r.finished_at is not None for r in reports)


def check_storage(database):
    with database.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    for row in checkpoint_rows.all_(database):
        payload = checkpoints.read(checkpoints.resolve(row.file))  # weights_only=True
        assert payload["steps"] == row.steps
    for row in working_rows.all_(database):
        if row.state_file is not None:  # None: nothing it learned outlived a kill
            state = checkpoints.read(checkpoints.resolve(row.state_file))
            assert state["steps"] == row.saved_steps
