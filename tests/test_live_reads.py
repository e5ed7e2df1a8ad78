"""What the Live page reads each second (db.sessions.updates / keep_up): only the rows written
since its last read, through index ranges, adding up to what a full read gives."""

from __future__ import annotations

import time
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from contract.access import SYSTEM_ACCOUNT
from db import candles, checkpoints, training
from db import sessions as session_rows
from db import working_models as working_rows
from db.connection import readonly
from tests.conftest import make_account

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
    if wm is None:  # a frozen session: nothing trains
        return
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
    assert len(kept.predictions["ts"]) == 10 and kept.latest["ts"] == T0 + 9 * STEP
    assert kept.latest["ghost"] == {"ohlc": [[1, 2, 0.5, 1.5]] * 5}
    assert kept.steps == training.count(database, session_id=sid, skipped=False)
    assert kept.model_step == working_rows.latest_step(database, wm)
    assert list(kept.manual["label"]) == ["BUY"] and list(kept.manual["ts"]) == [T0 + 3 * STEP]

    nothing = session_rows.updates(database, sid, kept.seen)
    for name in ("predictions", "pivots", "trades", "manual"):
        assert all(not len(values) for values in getattr(nothing, name).values())
    assert nothing.steps == 0 and nothing.latest is None
    assert nothing.seen == kept.seen

    for i in range(10, 13):
        candle(database, sid, wm, i, trade=True, pivot=i == 12, manual="SELL" if i == 11 else None)
    new = session_rows.updates(database, sid, kept.seen)
    assert list(new.predictions["ts"]) == [T0 + STEP * i for i in range(10, 13)]
    assert len(new.trades["id"]) == 3 and len(new.pivots["id"]) == 1
    assert list(new.manual["label"]) == ["SELL"]
    kept = session_rows.keep_up(database, sid, kept)

    full = session_rows.predictions(database, sid)
    assert list(kept.predictions["ts"]) == list(full.ts)
    assert list(kept.predictions["action"]) == list(full.action)
    assert list(kept.trades["id"]) == list(session_rows.trades(database, sid).id)
    assert list(kept.pivots["id"]) == list(session_rows.pivots(database, sid).id)
    assert kept.steps == training.count(database, session_id=sid, skipped=False)
    assert kept.model_step == working_rows.latest_step(database, wm)
    assert kept.session.candles == 13 and kept.latest["ts"] == T0 + 12 * STEP
    assert list(kept.manual["label"]) == ["BUY", "SELL"]
    other = session_rows.keep_up(database, sid + 1, kept)  # another session: a fresh read
    assert (
        other.session is None
        and not len(other.predictions["ts"])
        and other.seen.prediction_ts is None
    )


def test_each_refresh_query_is_an_index_range(session):
    """EXPLAIN QUERY PLAN of the statements `updates` runs after a first read: every table is
    searched through an index bounded by the last row seen, none scanned."""
    database, sid, wm = session
    for i in range(5):
        candle(database, sid, wm, i, trade=True, pivot=i == 3, manual="HOLD" if i == 2 else None)
    kept = session_rows.keep_up(database, sid)
    candle(database, sid, wm, 5, trade=True, pivot=True, manual="BUY")  # something to read
    with selects(database) as statements:
        session_rows.updates(database, sid, kept.seen)
    tables = set()
    with readonly(database).connect() as conn:
        for statement, parameters in statements:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                            parameters).all()]  # fmt: skip
            assert plan and all(step.startswith("SEARCH") for step in plan), (statement, plan)
            tables.update(step.split()[1] for step in plan)
    assert {"predictions", "pivots", "trades", "training_events", "sessions"} <= tables


@contextmanager
def selects(database):
    """The SELECT statements (with their parameters) run on `database` inside the block."""
    from sqlalchemy import event

    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(database, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(database, "before_cursor_execute", capture)


def frozen_session(database) -> int:
    """A session on a checkpoint, inference only (mode none): no working model."""
    ckpt = checkpoints.insert(database, name="f", feature_version=1, config={}, file="f.pt")
    return session_rows.create(database, symbol="X", timeframe="1m", checkpoint_id=ckpt,
                               mode="none", feed={"kind": "replay"}, settings={},
                               created_by="ana")  # fmt: skip


def test_a_refresh_with_no_new_candle_reads_the_session_row_and_no_candle_rows(session):
    """Predictions, trades and pivots are stored only with a candle, which the session row
    counts: without a new one they are not read. A frozen session reads nothing else; a
    learning one also reads its training events (applied after the candle, by its trainer)."""
    database, sid, wm = session
    frozen = frozen_session(database)
    for i in range(3):
        candle(database, sid, wm, i, trade=True, pivot=i == 2)
        candle(database, frozen, None, i, trade=True, pivot=i == 2)
    learning = {"sessions", "training_events", "working_models"}
    for which, reads, n in ((frozen, {"sessions"}, 1), (sid, learning, 5)):
        kept = session_rows.keep_up(database, which)
        with selects(database) as statements:
            again = session_rows.keep_up(database, which, kept)
        tables = {t for statement, _ in statements for t in learning if f"FROM {t}" in statement}
        assert tables == reads and len(statements) == n, statements
        assert again.seen == kept.seen and len(again.predictions["ts"]) == 3


def test_many_small_refreshes_add_up_to_one_full_read_for_a_frozen_session(session):
    """One candle at a time (the ghost candles then come with the new prediction) gives the
    frames, the newest prediction and its ghost candles that one read of everything gives."""
    database, _, _ = session
    sid = frozen_session(database)
    kept = session_rows.keep_up(database, sid)
    for i in range(12):
        candle(database, sid, None, i, trade=i % 3 == 0, pivot=i % 4 == 1)
        kept = session_rows.keep_up(database, sid, kept)
        assert kept.latest["ts"] == T0 + STEP * i and len(kept.latest["ghost"]["ohlc"]) == 5
    full = session_rows.keep_up(database, sid)
    for name in ("predictions", "pivots", "trades", "manual"):
        held, read = getattr(kept, name), getattr(full, name)
        assert list(held) == list(read)
        for column in read:
            assert held[column].dtype == read[column].dtype
            np.testing.assert_array_equal(held[column], read[column])
    assert kept.latest == full.latest and kept.seen == full.seen
    assert kept.steps == full.steps == 0 and kept.working is None and kept.model_step is None


def test_annotations_overlapping_a_window_are_those_a_full_list_overlaps(database):
    from db import annotations

    make_account(database, "ana")
    spans = [(0, 5), (3, 9), (10, 12), (20, 40), (2, 30)]
    for k, (a, b) in enumerate(spans):
        annotations.create(database, annotations.AnnotationIn("X", "1m", T0 + STEP * a,
                           T0 + STEP * b, "long" if k % 2 else "short"), "ana")  # fmt: skip
    annotations.create(database, annotations.AnnotationIn("Y", "1m", T0, T0 + STEP, "long"), "ana")
    annotations.delete(database, 2, "ana")
    every = annotations.list_for(database, "X", "1m")
    for lo, hi in ((0, 1), (4, 11), (13, 19), (25, 50), (41, 60)):
        lo_ms, hi_ms = T0 + STEP * lo, T0 + STEP * hi
        got = annotations.overlapping(database, "X", "1m", lo_ms, hi_ms)
        want = [a for a in every if a.exit_ts >= lo_ms and a.entry_ts <= hi_ms]
        assert [r.id for r in got] == [a.id for a in want]
        assert [(r.side, r.entry_ts, r.exit_ts, r.note, r.author) for r in got] == [
            (a.side, a.entry_ts, a.exit_ts, a.note, a.author) for a in want
        ]


def test_an_empty_session_reads_as_empty_columns(session):
    database, sid, _ = session
    kept = session_rows.keep_up(database, sid)
    assert kept.session.id == sid and kept.latest is None and kept.steps == 0
    for rows in (kept.predictions, kept.pivots, kept.trades, kept.manual):
        assert ("ts" in rows or "id" in rows) and all(not len(v) for v in rows.values())


def test_the_live_page_appends_what_is_new_and_draws_what_a_fresh_tab_draws(session):
    """The Live panel keeps what it read (one copy shared by the app's tabs) and reads only
    what is newer: after more candles its candle window is the newest FOLLOW_SHOWN, and its
    chart's data is what a tab opened afresh (nothing held, no drawing shared) draws."""
    import numpy as np
    import pyarrow as pa
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from contract.access import SYSTEM_ACCOUNT
    from db import candles
    from tests.conftest import ROOT

    database, sid, wm = session
    n = 180
    close = 100 + np.cumsum(np.random.default_rng(3).normal(0, 1, n))
    candles.store(database, pd.DataFrame({"ts": T0 + STEP * np.arange(n), "open": close,
                  "high": close + 1, "low": close - 1, "close": close, "volume": 1.0}),
                  symbol="X", timeframe="1m", source="t", sha256="t", format="generic",
                  rows_in_file=n, rows_skipped=0, created_by=SYSTEM_ACCOUNT)  # fmt: skip

    def page():
        at = AppTest.from_file(str(ROOT / "pages" / "live.py"), default_timeout=60)
        at.run()
        assert not at.exception
        return at

    def datasets(at) -> list[pa.Table]:
        (chart,) = at.get("vega_lite_chart")
        return [pa.ipc.open_stream(d.data.data).read_all() for d in chart.proto.datasets]

    for i in range(130):
        candle(database, sid, wm, i, trade=i % 9 == 0, pivot=i % 7 == 3,
               manual="SELL" if i % 40 == 5 else None)  # fmt: skip
    tab = page()
    for i in range(130, 150):
        candle(database, sid, wm, i, trade=i % 9 == 0, pivot=i % 7 == 3,
               manual="BUY" if i == 145 else None)  # fmt: skip
    time.sleep(0.6)  # tabs share a read for half a second (pages.common.shared_read)
    tab.run()
    (drawn,) = [pa.ipc.open_stream(d.data.data).read_all().to_pandas()
                for d in tab.get("vega_lite_chart")[0].proto.datasets if d.name == "candles"]  # fmt: skip
    want = candles.load(database, "X", "1m", end_ms=T0 + STEP * 149, last=120)
    pd.testing.assert_frame_equal(drawn[list(want.columns)], want, check_dtype=False)
    st.cache_resource.clear()  # no read or drawing shared with the fresh tab
    fresh = page()
    assert [t.equals(f) for t, f in zip(datasets(tab), datasets(fresh), strict=True)] == [True] * 6


def test_a_jobs_loss_curve_read_in_steps_is_the_curve_read_whole(database):
    """The Train page polls a running job's batches with db.training.losses from the last one
    it holds: the pieces add up to one read of the newest `limit` counted batches."""
    from db import jobs

    job = jobs.create(database, "train", command_id=None, engine_id="e", created_by=None)
    held = training.losses(database, job)
    for i in range(40):
        training.record(database, model_key="k", source="batch", job_id=job, step=i + 1,
                        loss=1.0 / (i + 1), skipped=i % 7 == 3)  # fmt: skip
        if i % 6 == 5:
            held = pd.concat([held, training.losses(database, job, after_id=int(held.id.iloc[-1])
                                                    if len(held) else 0)], ignore_index=True)  # fmt: skip
    held = pd.concat([held, training.losses(database, job, after_id=int(held.id.iloc[-1]))],
                     ignore_index=True)  # fmt: skip
    whole = training.losses(database, job)
    pd.testing.assert_frame_equal(held, whole, check_dtype=False)
    counted = training.frame(database, job_id=job, skipped=False)
    assert list(whole.loss) == list(counted.loss) and len(whole) == 40 - 6
    assert list(training.losses(database, job, limit=5).id) == list(counted.id.iloc[-5:])


def test_the_engine_badge_and_a_charts_annotations_are_index_searches(database):
    """Every page's engine badge asks for the engines not stopped every 2 s, and the Live chart
    for the annotations of its window every second: both searched through an index (0009),
    not a scan of every engine that ever ran or every annotation of the dataset."""
    from db import annotations, engines

    with selects(database) as statements:
        engines.status(database)
        annotations.overlapping(database, "X", "1m", T0, T0 + STEP)
    with readonly(database).connect() as conn:
        for statement, parameters in statements:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                            parameters).all()]  # fmt: skip
            reads = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
            assert reads and all("INDEX" in step for step in reads), (statement, plan)


def test_tabs_watching_a_session_share_one_read_each_half_second(session, monkeypatch):
    """Every tab of the app on one session reads through one shared copy (pages.common.watched):
    a refresh within SHARED_FOR_S of the last read reads nothing, a later one reads only the
    new rows into a new copy, and a copy a tab holds never changes under it."""
    from pages.common import SHARED_FOR_S, watched

    database, sid, wm = session
    reads = []
    real = session_rows.updates
    monkeypatch.setattr(session_rows, "updates", lambda *a: reads.append(a[2]) or real(*a))
    for i in range(5):
        candle(database, sid, wm, i)
    first = watched(database, sid)
    assert watched(database, sid) is first and len(reads) == 1  # a second tab, at once
    candle(database, sid, wm, 5)
    time.sleep(SHARED_FOR_S + 0.05)
    later = watched(database, sid)
    assert len(reads) == 2 and reads[1] == first.seen  # only what is newer was read
    assert len(first.predictions["ts"]) == 5 and len(later.predictions["ts"]) == 6
    assert watched(database, sid + 1) is not later  # another session: its own copy


def test_the_live_chart_reads_only_newer_candles_and_forgets_sessions_no_tab_watches(
    database, monkeypatch
):
    """What the chart keeps between drawings is a shared read (an app runs for weeks while
    sessions come and go): a held session's candles are what a fresh read gives, only newer
    candles are read, and a session no tab has drawn in FORGET_AFTER_S is dropped."""
    from pages import common, live_chart

    n = 300
    ts = T0 + STEP * np.arange(n, dtype=np.int64)
    price = 100 + np.arange(n, dtype=np.float64)
    frame = pd.DataFrame({"ts": ts, "open": price, "high": price + 1, "low": price - 1,
                          "close": price + 0.5, "volume": np.ones(n)})  # fmt: skip
    candles.store(database, frame, symbol="X", timeframe="1m", source="test", sha256="-",
                  format="test", rows_in_file=n, rows_skipped=0, created_by=SYSTEM_ACCOUNT)  # fmt: skip
    reads = []
    recent = candles.recent
    monkeypatch.setattr(candles, "recent", lambda *a, **kw: reads.append(kw) or recent(*a, **kw))
    sessions = [SimpleNamespace(id=i, symbol="X", timeframe="1m", last_ts=int(ts[150 + i]))
                for i in range(2)]  # fmt: skip

    def fresh(last_ts):
        return recent(database, "X", "1m", live_chart.FOLLOW_SHOWN, last_ts)

    def same(drawn, read):
        return list(drawn) == list(read) and all(np.array_equal(drawn[c], read[c]) for c in read)

    for sess in sessions:
        live_chart._following(database, sess)
    assert same(live_chart._following(database, sessions[1]), fresh(sessions[1].last_ts))
    assert len(reads) == 2  # another tab, nothing new: nothing read
    for step in (1, 40):  # a new candle, then many: only the newer ones are read
        sessions[1].last_ts += STEP * step
        drawn = live_chart._following(database, sessions[1])
        assert reads[-1] == {"after_ms": sessions[1].last_ts - STEP * step}
        assert same(drawn, fresh(sessions[1].last_ts))
    # Tabs holding session rows a few candles apart draw in either order: the one behind draws
    # from what is held, with nothing read, and the one ahead reads nothing again.
    behind = SimpleNamespace(**{**vars(sessions[1]), "last_ts": sessions[1].last_ts - 3 * STEP})
    n_reads = len(reads)
    for sess in (behind, sessions[1], behind):
        assert same(live_chart._following(database, sess), fresh(sess.last_ts))
    assert len(reads) == n_reads
    # What is held starts at the dataset's first candle (fewer than HELD): all it needs.
    early = SimpleNamespace(**{**vars(sessions[1]), "last_ts": int(ts[20])})
    assert same(live_chart._following(database, early), fresh(early.last_ts))
    assert len(reads) == n_reads
    # Fewer than FOLLOW_SHOWN held candles before it, and older ones not held: read again.
    sessions[1].last_ts = int(ts[-1])
    live_chart._following(database, sessions[1])
    far = SimpleNamespace(**{**vars(sessions[1]), "last_ts": int(ts[n - live_chart.HELD + 50])})
    assert same(live_chart._following(database, far), fresh(far.last_ts))
    assert len(reads) == n_reads + 2 and reads[-1] == {}
    key = ("followed candles", str(database.url), 0)
    assert key in common._READS
    monkeypatch.setattr(common, "FORGET_AFTER_S", 0.0)
    monkeypatch.setattr(common, "_swept_at", float("-inf"))
    live_chart._following(database, sessions[1])  # session 0: no tab asked since
    assert key not in common._READS


def test_a_candle_records_its_counts_and_refuses_a_count_no_column_holds(session):
    """record_candle's statements are built once and take the columns they set from their
    parameters: the learning counts land in the session row, and a misspelt count, which such
    a statement would drop silently, is refused before anything is stored."""
    import pytest

    database, sid, _ = session
    ts = T0 + STEP
    stored = dict(received=time.monotonic(), last_ts=ts, state={"position": 1}, trades=[],
                  pivots=[], prediction={"ts": ts, "action": "BUY", "p_buy": 0.5, "p_sell": 0.25,
                  "p_hold": 0.25, "confidence": 0.5, "ghost": None, "model_step": 1})  # fmt: skip
    session_rows.record_candle(
        database, sid, learning={"samples_waiting": 3, "samples_dropped": 2}, **stored
    )
    row = session_rows.get(database, sid)
    assert (row.candles, row.last_ts, row.state) == (1, ts, {"position": 1})
    assert (row.samples_waiting, row.samples_dropped) == (3, 2)
    with pytest.raises(ValueError, match="samples_wiating"):
        session_rows.record_candle(database, sid, learning={"samples_wiating": 1}, **stored)
    assert session_rows.get(database, sid).candles == 1
    assert len(session_rows.predictions(database, sid)) == 1
