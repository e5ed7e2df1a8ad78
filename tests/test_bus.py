"""The command bus contract: idempotent submit, atomic claim, final states."""

from __future__ import annotations

import multiprocessing as mp

from sqlalchemy import func, select

from contract.access import SYSTEM_ACCOUNT
from contract.payloads import MAX_ID
from db import bus, connection
from db.models import Command


def test_same_request_id_twice_queues_one_command(any_database):
    first = bus.submit(any_database, "ping", {}, request_id="double-click", created_by="ana")
    second = bus.submit(
        any_database, "ping", {"other": 1}, request_id="double-click", created_by="ana"
    )
    assert first == second
    with any_database.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Command)) == 1
    assert bus.get(any_database, first).payload == "{}"


def test_a_subject_id_no_column_can_hold_is_submitted_and_routed_to_no_engine(any_database):
    """Found by the command fuzzer on PostgreSQL: `model.save` naming working model 2**31 made
    the submit's routing query fail (integer out of range) instead of the command."""
    for too_big in (MAX_ID + 1, 2**63, 10**30):
        for field in ("session_id", "working_model_id"):
            command_id = bus.submit(any_database, "model.save", {field: too_big, "name": "x"},
                                    created_by=SYSTEM_ACCOUNT)  # fmt: skip
            assert bus.get(any_database, command_id).target is None
    assert bus.get(any_database, bus.submit(any_database, "ping", {"session_id": MAX_ID},
                                            created_by=SYSTEM_ACCOUNT)).target is None  # fmt: skip


def test_claim_takes_oldest_pending_and_marks_it_running(any_database):
    a = bus.submit(any_database, "ping", created_by="ana")
    b = bus.submit(any_database, "ping", created_by=SYSTEM_ACCOUNT)
    got = bus.claim(any_database, "engine-1")
    assert got.id == a and got.status == "running" and got.claimed_by == "engine-1"
    assert got.claimed_at >= got.created_at
    assert got.created_by == "ana"
    assert bus.claim(any_database, "engine-1").id == b
    assert bus.claim(any_database, "engine-1") is None


def test_finish_fail_and_cancel_only_from_the_right_state(any_database):
    cid = bus.submit(any_database, "ping", created_by=SYSTEM_ACCOUNT)
    assert bus.cancel(any_database, cid)
    assert not bus.cancel(any_database, cid)
    assert bus.claim(any_database, "e") is None  # a cancelled command is never claimed

    cid = bus.submit(any_database, "ping", created_by=SYSTEM_ACCOUNT)
    bus.claim(any_database, "e")
    assert not bus.cancel(any_database, cid)  # too late: it is running
    assert bus.finish(any_database, cid, {"ok": True})
    assert not bus.fail(any_database, cid, "late")  # done stays done
    row = bus.get(any_database, cid)
    assert (row.status, row.result, row.error) == ("done", {"ok": True}, None)
    assert row.finished_at >= row.claimed_at


def test_timestamps_are_utc_with_subsecond_resolution(any_database):
    cid = bus.submit(any_database, "ping", created_by=SYSTEM_ACCOUNT)
    bus.claim(any_database, "e")
    bus.finish(any_database, cid)
    row = bus.get(any_database, cid)
    assert row.created_at.utcoffset().total_seconds() == 0
    stamps = {row.created_at.microsecond, row.claimed_at.microsecond, row.finished_at.microsecond}
    assert stamps != {0}


def _claim_all(url: str, name: str, start, out) -> None:
    engine = connection.make_engine(url)
    start.wait()
    got = []
    while (cmd := bus.claim(engine, name)) is not None:
        got.append(cmd.id)
    out.put((name, got))


def test_two_processes_claiming_1000_commands_get_each_exactly_once(any_database):
    with any_database.begin() as conn:  # queue 1,000 in one go
        conn.execute(
            Command.__table__.insert(),
            [{"request_id": f"r{i}", "kind": "ping", "payload": "{}"} for i in range(1000)],
        )
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    url = any_database.url.render_as_string(hide_password=False)
    procs = [ctx.Process(target=_claim_all, args=(url, f"p{i}", start, out)) for i in range(2)]
    for p in procs:
        p.start()
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    a, b = results["p0"], results["p1"]
    assert not set(a) & set(b), "a command was claimed twice"
    assert len(a) + len(b) == 1000 and len(set(a) | set(b)) == 1000, "a command was lost"
    assert a and b, "both processes should have claimed some (the test must race)"
    with any_database.connect() as conn:
        rows = conn.execute(
            select(Command.id, Command.claimed_by).where(Command.status == "running")
        ).all()
    claimed_by = {cid: who for cid, who in rows}
    assert len(claimed_by) == 1000
    assert all(claimed_by[i] == "p0" for i in a) and all(claimed_by[i] == "p1" for i in b)


def test_a_transaction_left_idle_by_a_stalled_process_lets_go_of_its_locks(
    pg_database, monkeypatch
):
    """PostgreSQL ends a transaction idle for two heartbeat timeouts: a row a stopped engine
    had updated becomes writable for the engine taking over, and the stalled connection fails
    when it wakes instead of committing."""
    import time

    import pytest
    from sqlalchemy import text, update
    from sqlalchemy.exc import DBAPIError

    from tests.conftest import PG_URL, settings_url

    monkeypatch.setenv("CANDLELAB_HEARTBEAT_TIMEOUT", "0.5")  # idle transactions end after 1 s
    stalled, other = (connection.make_engine(settings_url(PG_URL)) for _ in range(2))
    cid = bus.submit(pg_database, "noop", {}, created_by=SYSTEM_ACCOUNT)
    stall = stalled.connect()
    stall.begin()
    stall.execute(update(Command).where(Command.id == cid).values(error="stalled"))
    t0 = time.monotonic()
    with other.begin() as conn:  # waits for the row lock until the server ends the stall
        conn.execute(text("SET LOCAL lock_timeout = '10s'"))  # fail, not hang, without it
        conn.execute(update(Command).where(Command.id == cid).values(error="took over"))
    assert 0.8 < time.monotonic() - t0 < 5
    with pytest.raises(DBAPIError):
        stall.execute(select(func.count()).select_from(Command))
    stall.close()
    with pg_database.begin() as conn:
        assert conn.scalar(select(Command.error).where(Command.id == cid)) == "took over"
    for engine in (stalled, other):
        engine.dispose()


def test_an_import_that_spends_long_in_python_is_not_ended_as_a_stall(pg_database, monkeypatch):
    """A large import is one transaction with seconds of Python between its statements: it
    opts out of the idle limit and completes."""
    import time

    import numpy as np
    import pandas as pd

    from db import candles
    from db.models import Candle
    from tests.conftest import PG_URL, settings_url

    monkeypatch.setenv("CANDLELAB_HEARTBEAT_TIMEOUT", "0.2")  # idle transactions end at 0.4 s
    engine = connection.make_engine(settings_url(PG_URL))
    insert = candles.insert

    def slow_insert(table):  # what building a million rows' records costs, between statements
        if table is Candle:
            time.sleep(1.0)
        return insert(table)

    monkeypatch.setattr(candles, "insert", slow_insert)
    close = 100 + np.arange(10.0)
    frame = pd.DataFrame({"ts": np.arange(10) * 60_000, "open": close, "high": close + 1,
                          "low": close - 1, "close": close, "volume": 1.0})  # fmt: skip
    done = candles.store(engine, frame, symbol="X", timeframe="1m", source="t", sha256="t",
                         format="generic", rows_in_file=10, rows_skipped=0,
                         created_by=SYSTEM_ACCOUNT)  # fmt: skip
    assert done.added == 10 and len(candles.load(pg_database, "X", "1m")) == 10
    engine.dispose()
