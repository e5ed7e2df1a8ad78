"""What the Live page reads each second (db.sessions.updates / keep_up): only the rows written
since its last read, through index ranges, adding up to what a full read gives."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from db import checkpoints, training
from db import sessions as session_rows
from db import working_models as working_rows
from db.connection import readonly

T0, STEP = 1_600_000_000_000, 60_000


@pytest.fixture
def session(database):
    ckpt = checkpoints.insert(database, name="c", feature_version=1, config={}, file="x.pt")
    wm = working_rows.create(database, name="w", base_checkpoint_id=ckpt, created_by="ana",
                             engine_id=None)  # fmt: skip
    sid = session_rows.create(database, symbol="X", timeframe="1m", checkpoint_id=ckpt,
                              working_model_id=wm, mode="manual", feed={"kind": "replay"},
                              settings={}, created_by="ana")  # fmt: skip
    return database, sid, wm


def candle(database, sid: int, wm: int, i: int, *, trade=False, pivot=False, manual=None):
    """Candle i as a session stores it, with its training event(s)."""
    ts = T0 + STEP * i
    session_rows.record_candle(
        database, sid, received=time.monotonic(), last_ts=ts, state={"position": 1},
        trades=[{"side": "long", "entry_ts": ts - STEP, "entry_price": 1.0, "exit_ts": ts,
                 "exit_price": 1.1, "pnl": 0.1, "return_pct": 10.0, "fees": 0.0}] if trade else [],
        pivots=[{"ts": ts - 2 * STEP, "kind": "H", "price": 2.0, "confirmed_ts": ts}] if pivot else [],
        prediction={"ts": ts, "action": "BUY", "p_buy": 0.5, "p_sell": 0.25, "p_hold": 0.25,
                    "confidence": 0.5, "ghost": {"ohlc": [[1, 2, 0.5, 1.5]] * 5}, "model_step": i},
    )  # fmt: skip
    training.record(database, model_key="k", source="pivot", working_model_id=wm, session_id=sid,
                    step=2 * i + 1, candle_ts=ts, label="SELL", skipped=i % 3 == 0)  # fmt: skip
    if manual:
        training.record(database, model_key="k", source="manual", working_model_id=wm,
                        session_id=sid, step=2 * i + 2, candle_ts=ts, label=manual)  # fmt: skip


def test_keep_up_reads_only_new_rows_and_adds_up_to_a_full_read(session):
    database, sid, wm = session
    for i in range(10):
        candle(
            database,
            sid,
            wm,
            i,
            trade=i % 4 == 0,
            pivot=i % 5 == 2,
            manual="BUY" if i == 3 else None,
        )
    kept = session_rows.keep_up(database, sid)
    assert len(kept.predictions) == 10 and kept.latest["ts"] == T0 + 9 * STEP
    assert kept.latest["ghost"] == {"ohlc": [[1, 2, 0.5, 1.5]] * 5}
    assert kept.steps == training.count(database, session_id=sid, skipped=False)
    assert kept.model_step == working_rows.latest_step(database, wm)
    assert list(kept.manual.label) == ["BUY"] and list(kept.manual.ts) == [T0 + 3 * STEP]

    nothing = session_rows.updates(database, sid, kept.seen)
    assert nothing.predictions.empty and nothing.pivots.empty and nothing.trades.empty
    assert nothing.manual.empty and nothing.steps == 0 and nothing.latest is None
    assert nothing.seen == kept.seen

    for i in range(10, 13):
        candle(database, sid, wm, i, trade=True, pivot=i == 12, manual="SELL" if i == 11 else None)
    new = session_rows.updates(database, sid, kept.seen)
    assert list(new.predictions.ts) == [T0 + STEP * i for i in range(10, 13)]
    assert len(new.trades) == 3 and len(new.pivots) == 1 and list(new.manual.label) == ["SELL"]
    kept = session_rows.keep_up(database, sid, kept)

    full = session_rows.predictions(database, sid)
    assert list(kept.predictions.ts) == list(full.ts)
    assert list(kept.predictions.action) == list(full.action)
    assert list(kept.trades.id) == list(session_rows.trades(database, sid).id)
    assert list(kept.pivots.id) == list(session_rows.pivots(database, sid).id)
    assert kept.steps == training.count(database, session_id=sid, skipped=False)
    assert kept.model_step == working_rows.latest_step(database, wm)
    assert kept.session.candles == 13 and kept.latest["ts"] == T0 + 12 * STEP
    assert list(kept.manual.label) == ["BUY", "SELL"]
    other = session_rows.keep_up(database, sid + 1, kept)  # another session: a fresh read
    assert other.session is None and other.predictions.empty and other.seen.prediction_ts is None


def test_each_refresh_query_is_an_index_range(session):
    """EXPLAIN QUERY PLAN of the statements `updates` runs after a first read: every table is
    searched through an index bounded by the last row seen, none scanned."""
    database, sid, wm = session
    for i in range(5):
        candle(database, sid, wm, i, trade=True, pivot=i == 3, manual="HOLD" if i == 2 else None)
    kept = session_rows.keep_up(database, sid)
    statements: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    from sqlalchemy import event

    event.listen(database, "before_cursor_execute", capture)
    try:
        session_rows.updates(database, sid, kept.seen)
    finally:
        event.remove(database, "before_cursor_execute", capture)
    tables = set()
    with readonly(database).connect() as conn:
        for statement, parameters in statements:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                            parameters).all()]  # fmt: skip
            assert plan and all(step.startswith("SEARCH") for step in plan), (statement, plan)
            tables.update(step.split()[1] for step in plan)
    assert {"predictions", "pivots", "trades", "training_events", "sessions"} <= tables


def test_an_empty_session_reads_as_empty_frames(session):
    database, sid, _ = session
    kept = session_rows.keep_up(database, sid)
    assert kept.session.id == sid and kept.latest is None and kept.steps == 0
    for frame in (kept.predictions, kept.pivots, kept.trades, kept.manual):
        assert isinstance(frame, pd.DataFrame) and frame.empty and ("ts" in frame or "id" in frame)
