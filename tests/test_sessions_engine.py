"""Live sessions through the real engine: commands, manual training, restart and resume."""

from __future__ import annotations

import json
import signal

import pytest

from db import bus, candles, training
from db import sessions as session_rows
from market.importer import seed_samples
from tests.conftest import make_account, run_cli, wait_until


@pytest.fixture
def stored(database):
    make_account(database, "ana")
    seed_samples(database)
    return database


def send(database, kind, payload, timeout=20):
    return bus.wait(database, bus.submit(database, kind, payload, created_by="ana"), timeout)


def start(database, mode, n=None, pace=0.0):
    df = candles.load(database, "SP500", "1d")
    feed = {"kind": "replay", "pace_s": pace, "start_ts": int(df.ts.iloc[-(n or 300)])}
    row = send(
        database,
        "session.start",
        {"symbol": "SP500", "timeframe": "1d", "mode": mode, "feed": feed},
    )
    assert row.status == "done", row.error
    return row.result["session_id"]


def test_manual_mode_trains_once_per_request_with_the_chosen_action(stored, engine_process, home):
    engine_process("--no-seed")
    sid = start(stored, "manual", n=400, pace=0.05)
    wait_until(lambda: session_rows.get(stored, sid).candles >= 3, 30, 0.05, "candles")
    commands = []
    for action in ("BUY", "HOLD", "SELL"):
        row = send(stored, "session.train_manual", {"session_id": sid, "action": action})
        assert row.status == "done", row.error
        assert row.result["action"] == action and row.result["queued"]
        commands.append(row.id)
    wait_until(lambda: training.count(stored, session_id=sid) == 3, 20, 0.1, "3 manual steps")
    events = training.frame(stored, session_id=sid)
    assert events.label.tolist() == ["BUY", "HOLD", "SELL"] and set(events.source) == {"manual"}
    assert events.command_id.tolist() == commands and set(events.requested_by) == {"ana"}
    assert send(stored, "session.set_mode", {"session_id": sid, "mode": "none"}).status == "done"
    refused = send(stored, "session.train_manual", {"session_id": sid, "action": "BUY"})
    assert refused.status == "failed" and "switch it to manual" in refused.error
    assert training.count(stored, session_id=sid) == 3
    shown = json.loads(run_cli(home, "show", "session", str(sid)).stdout)
    assert shown["mode"] == "none" and shown["training_steps"] == {"manual": 3}
    assert send(stored, "session.stop", {"session_id": sid}).status == "done"
    assert session_rows.get(stored, sid).status == "stopped"


BAD_SESSION_REQUESTS = [  # payload, what the failure must say
    ({"symbol": "NOPE", "timeframe": "1d"}, "no stored candles for NOPE 1d"),
    ({"symbol": "SP500", "timeframe": "1d", "mode": "sometimes"}, "mode"),
    ({"symbol": "SP500", "timeframe": "1d", "checkpoint_id": 77}, "unknown checkpoint 77"),
    ({"symbol": "SP500", "timeframe": "1d", "feed": {"kind": "exchange"}}, "needs 'exchange'"),
]


def test_bad_session_requests_fail_with_a_reason(stored, engine_process):
    engine_process("--no-seed")  # one engine takes them all in turn
    for payload, expected in BAD_SESSION_REQUESTS:
        row = send(stored, "session.start", payload)
        assert row.status == "failed" and expected in row.error, (payload, row.error)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_restart_resumes_from_the_last_candle_without_duplicates_or_gaps(
    stored, engine_process, how
):
    first = engine_process("--no-seed")
    n = 200
    sid = start(stored, "every_candle", n=n, pace=0.02)
    wait_until(lambda: session_rows.get(stored, sid).candles >= 40, 60, 0.05, "some candles")
    first.stop(how)
    done_before = session_rows.get(stored, sid).candles
    assert done_before < n
    engine_process("--no-seed")
    wait_until(
        lambda: session_rows.get(stored, sid).status == "finished", 120, 0.2, "the replay to end"
    )
    preds = session_rows.predictions(stored, sid)
    expected = candles.load(stored, "SP500", "1d").ts.iloc[-n:].tolist()
    assert preds.ts.tolist() == expected  # each candle once, in order, none skipped
    assert session_rows.get(stored, sid).candles == n
