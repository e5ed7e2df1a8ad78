"""Live sessions in each mode, driven by a replay of real candles inside this process."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from contract.access import SYSTEM_ACCOUNT
from db import candles, jobs, training
from db import sessions as session_rows
from engine import batch_training, checkpoints, labels
from engine.batch_training import TrainSettings
from engine.job_runner import JobRunner
from engine.pool import ModelPool
from engine.service import EngineContext, Settings
from engine.sessions import SessionManager
from market.importer import seed_samples
from tests.conftest import wait_until
from tests.test_training import annotate_future_moves


@pytest.fixture
def ctx(database):
    seed_samples(database)
    context = EngineContext(database, "test-engine", Settings())
    context.models = ModelPool(database, context.instance_id)
    context.sessions = SessionManager(context)
    context.jobs = JobRunner(database, context.instance_id, context.stopping)
    yield context
    context.stopping.set()
    context.sessions.stop_all()
    context.models.close_all()


def sp500(database):
    df = candles.load(database, "SP500", "1d")
    return df


def run_session(ctx, mode: str, n: int, right: int = 5, wait=True, working_model_id=None,
                **settings) -> int:  # fmt: skip
    """Replay the last `n` S&P 500 candles as fast as possible in `mode` (a learning mode
    trains a new working model unless one is given); with `wait`, until the session finished
    and its trainer applied everything it was handed."""
    df = sp500(ctx.db)
    start_ts = int(df.ts.iloc[-n])
    cid = checkpoints.ensure_default(ctx.db)
    sid = session_rows.create(
        ctx.db, symbol="SP500", timeframe="1d", checkpoint_id=cid, mode=mode,
        working_model_id=working_model_id,
        feed={"kind": "replay", "pace_s": 0, "start_ts": start_ts},
        settings={"fee_bps": 10, "long_only": False, "pivot_left": 5, "pivot_right": right, **settings},
        created_by="test", engine_id=ctx.instance_id,
    )  # fmt: skip
    session = ctx.sessions.launch(session_rows.get(ctx.db, sid))
    if wait:
        session.thread.join(120)
        assert session_rows.get(ctx.db, sid).status == "finished", session_rows.get(
            ctx.db, sid
        ).error
        if session.working is not None:
            assert session.working.trainer.drain(120)
    return sid


def working_model_of(ctx, sid: int):
    return ctx.models.working(session_rows.get(ctx.db, sid).working_model_id)


def naive_pivots(high, low, left, right):
    """An independent reading of the rule: strict on the left, non-strict on the right."""
    out = {}
    for i in range(left, len(high) - right):
        if all(high[i] > high[j] for j in range(i - left, i)) and all(
            high[i] >= high[j] for j in range(i + 1, i + right + 1)
        ):
            out[(i, "H")] = i + right
        if all(low[i] < low[j] for j in range(i - left, i)) and all(
            low[i] <= low[j] for j in range(i + 1, i + right + 1)
        ):
            out[(i, "L")] = i + right
    return out


def test_none_mode_predicts_every_candle_from_the_frozen_checkpoint(ctx):
    frozen = ctx.models.frozen()
    before = {k: v.clone() for k, v in frozen.snapshot.model.state_dict().items()}
    sid = run_session(ctx, "none", 200)
    preds = session_rows.predictions(ctx.db, sid)
    expected = sp500(ctx.db).ts.iloc[-200:].tolist()
    assert preds.ts.tolist() == expected
    assert session_rows.get(ctx.db, sid).working_model_id is None  # nothing to train
    after = frozen.snapshot.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert training.count(ctx.db, session_id=sid) == 0
    assert (preds.latency_ms > 0).all() and preds.ghost.map(lambda g: len(g["ohlc"])).eq(5).all()


def test_pivots_only_trains_on_exactly_the_confirmed_pivots_after_confirmation(ctx):
    n = 300
    sid = run_session(ctx, "pivots_only", n)
    df = sp500(ctx.db)
    high, low, ts = df.high.to_numpy(), df.low.to_numpy(), df.ts.to_numpy()
    first = len(df) - n
    expected = {
        (int(ts[i]), kind, int(ts[c]))
        for (i, kind), c in naive_pivots(high, low, 5, 5).items()
        if c >= first
    }
    got = session_rows.pivots(ctx.db, sid)
    assert {(r.ts, r.kind, r.confirmed_ts) for r in got.itertuples()} == expected
    events = training.frame(ctx.db, session_id=sid)
    assert sorted(zip(events.candle_ts, events.label, strict=True)) == sorted(
        (t, "BUY" if k == "L" else "SELL") for t, k, _ in expected
    )
    preds = session_rows.predictions(ctx.db, sid).set_index("ts")
    confirm = {t: c for t, _, c in expected}
    for e in events.itertuples():  # trained only once the confirming candle had been predicted
        assert e.created_at >= preds.loc[confirm[e.candle_ts], "created_at"]


def test_every_candle_trains_once_per_candle_with_the_right_label_and_no_unclosed_candle(ctx):
    n, right = 150, 3
    sid = run_session(ctx, "every_candle", n, right=right)
    df = sp500(ctx.db)
    close, ts = df.close.to_numpy(), df.ts.to_numpy()
    piv = naive_pivots(df.high.to_numpy(), df.low.to_numpy(), 5, right)
    events = training.frame(ctx.db, session_id=sid)
    assert len(events) == n and events.candle_ts.is_unique
    preds = session_rows.predictions(ctx.db, sid).set_index("ts")
    index = {int(t): i for i, t in enumerate(ts)}
    for e in events.itertuples():
        i = index[e.candle_ts]
        kinds = [k for k in "HL" if (i, k) in piv]
        want = (
            labels.pivot_action(kinds[0])
            if len(kinds) == 1
            else labels.next_move(close[i], close[i + 1])
        )
        assert e.label == ("BUY", "SELL", "HOLD")[want], (e.candle_ts, e.label)
        # trained at the close of i + right: every candle its label used had closed
        assert e.created_at >= preds.loc[int(ts[i + right]), "created_at"]
    assert working_model_of(ctx, sid).runner.optimizer_steps() == n


@pytest.mark.parametrize(
    ("close_next", "label"),
    [(1.0006, "BUY"), (1.0004, "HOLD"), (0.9996, "HOLD"), (0.9994, "SELL"), (1.0, "HOLD")],
)
def test_next_move_thresholds_at_their_boundaries(close_next, label):
    assert ("BUY", "SELL", "HOLD")[labels.next_move(1.0, close_next)] == label
    assert ("BUY", "SELL", "HOLD")[labels.next_move(100.0, 100.05)] == "HOLD"  # exactly +0.05 %


def test_two_sessions_and_a_batch_job_on_one_working_model_account_for_everything(ctx):
    annotate_future_moves(ctx.db)
    model = ctx.models.new_working(None, created_by="test")
    ctx.models.retain(model)  # the batch job trains it too (the engine's job runner does this)
    job = jobs.create(ctx.db, "train", command_id=None, engine_id="test", created_by=None)
    errors = []

    def batch():
        try:
            batch_training.run(ctx.db, model, [("SP500", "1d")],
                               TrainSettings(epochs=2, seq_len=200), job_id=job)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=batch)
    t.start()
    a = run_session(ctx, "every_candle", 120, wait=False, working_model_id=model.id)
    b = run_session(ctx, "pivots_only", 120, wait=False, working_model_id=model.id)
    t.join(180)
    for sid in (a, b):
        wait_until(
            lambda s=sid: session_rows.get(ctx.db, s).status != "running", 120, 0.1, "session end"
        )
    assert model.trainer.drain(120)
    assert errors == []
    for sid in (a, b):
        row = session_rows.get(ctx.db, sid)
        assert row.status == "finished" and row.candles == 120, row.error
        assert row.working_model_id == model.id and row.samples_dropped == 0
        assert len(session_rows.predictions(ctx.db, sid)) == 120
    assert training.count(ctx.db, session_id=a, skipped=False) == 120
    assert training.count(ctx.db, session_id=b, skipped=False) == len(
        session_rows.pivots(ctx.db, b)
    )
    total = training.count(ctx.db, working_model_id=model.id, skipped=False)
    assert model.runner.optimizer_steps() == total
    assert total == 120 + len(session_rows.pivots(ctx.db, b)) + training.count(ctx.db, job_id=job)


def test_account_fills_signals_at_the_next_open_with_fees():
    from engine.account import Account

    acc = Account(fee_bps=10, cash=1000.0)
    acc.signal("BUY")
    assert acc.position == 0  # nothing happens before the next open
    acc.open_bar(1, 100.0)
    assert acc.position == 1 and acc.entry_price == 100.0
    acc.mark(110.0)
    acc.signal("SELL")
    (trade,) = acc.open_bar(2, 120.0)
    assert acc.position == -1
    assert trade["side"] == "long" and trade["exit_price"] == 120.0
    fee_rate = 10 / 10_000
    units = 1000.0 / (100.0 * (1 + fee_rate))
    expected = units * 20.0 - units * 100 * fee_rate - units * 120 * fee_rate
    assert trade["pnl"] == pytest.approx(expected)
    assert trade["return_pct"] == pytest.approx(expected / (units * 100) * 100)
    long_only = Account(long_only=True)
    long_only.signal("SELL")
    assert long_only.pending is None  # flat already: nothing to do


def test_account_fills_pay_slippage_against_the_trade():
    from engine.account import Account

    acc = Account(slippage_bps=50, cash=1000.0)
    acc.signal("BUY")
    acc.open_bar(1, 100.0)
    assert acc.entry_price == 100.0 * 1.005  # a buy pays more
    acc.signal("SELL")
    (long,) = acc.open_bar(2, 120.0)
    assert long["exit_price"] == acc.entry_price == 120.0 * 0.995  # a sell gets less
    (short,) = acc.close_out(3, 110.0)  # the end-of-run close buys the short back
    assert short["exit_price"] == 110.0 * 1.005
    assert acc.equity == pytest.approx(1000 * (long["exit_price"] / 100.5) * (2 - 110.55 / 119.4))


def test_an_account_saved_before_slippage_resumes_with_none_and_its_open_position():
    from engine.account import Account

    # state() of an account with a long position, as the previous version wrote it
    old = {"fee_bps": 10.0, "long_only": False, "cash": 0.0, "units": 9.99000999000999,
           "pending": None, "entry_ts": 1, "entry_price": 100.0, "entry_fee": 0.999000999000999,
           "realized": 0.0, "fees": 0.999000999000999, "last_price": 110.0, "trades": 0,
           "wins": 0, "position": 1, "equity": 109.89010989010989, "unrealized": 98.9010989010989}  # fmt: skip
    acc = Account.from_state(old)
    assert acc.slippage_bps == 0 and acc.position == 1
    assert acc.unrealized == pytest.approx(old["unrealized"])
    acc.signal("SELL")
    (trade,) = acc.open_bar(2, 120.0)
    units, fee_rate = old["units"], 10 / 10_000
    assert trade["exit_price"] == 120.0
    assert trade["pnl"] == pytest.approx(units * 20 - old["entry_fee"] - units * 120 * fee_rate)
    assert Account.from_state(acc.state()).state() == acc.state()


def test_a_live_session_pays_its_slippage_on_every_fill_as_a_backtest_would(ctx):
    from engine.backtest import ACTION_CODES, simulate

    sid = run_session(ctx, "none", 200, slippage_bps=20)
    row = session_rows.get(ctx.db, sid)
    assert row.settings["slippage_bps"] == 20 and row.state["slippage_bps"] == 20
    stored = session_rows.trades(ctx.db, sid)
    assert len(stored)
    bars = sp500(ctx.db).set_index("ts")
    side = np.where(stored.side == "long", 1, -1)
    np.testing.assert_array_equal(
        stored.entry_price, bars.open[stored.entry_ts].to_numpy() * (1 + side * 0.002)
    )
    np.testing.assert_array_equal(
        stored.exit_price, bars.open[stored.exit_ts].to_numpy() * (1 - side * 0.002)
    )
    # The same predictions through the vectorised backtest: the same trades, to the last bit.
    preds = session_rows.predictions(ctx.db, sid)
    candles_ = bars.loc[preds.ts]
    sim = simulate(preds.ts, candles_.open, candles_.close, preds.action.map(ACTION_CODES),
                   fee_bps=10, slippage_bps=20)  # fmt: skip
    done = sim.trades[~sim.trades.open_at_end]
    assert len(done) == len(stored)
    for column in ("entry_price", "exit_price", "pnl", "return_pct", "fees"):
        np.testing.assert_array_equal(done[column].to_numpy(), stored[column].to_numpy())


def test_pivot_detector_matches_its_definition_on_random_walks():
    from engine import pivots

    rng = np.random.default_rng(0)
    for _ in range(20):
        high = np.cumsum(rng.normal(size=200)).round(1)
        low = high - rng.uniform(0.1, 1, size=200).round(1)
        got = {(p.index, p.kind): p.confirmed_index for p in pivots.find_all(high, low, 3, 2)}
        assert got == naive_pivots(high, low, 3, 2)


def test_job_progress_is_written_at_most_every_quarter_second_but_results_and_the_end_at_once(
    database, monkeypatch
):
    """Work reports progress as often as it likes (every chunk, every batch): a write costs a
    transaction, so a job writes it at most every PROGRESS_EVERY_S, a result and the end (or
    a stage's, `final`) at once; a cancel is seen at the next write."""
    from engine.job_runner import Job, JobStopped

    job_id = jobs.create(database, "train", command_id=None, engine_id="e", created_by=None)
    job = Job(database, job_id, "train", threading.Event())
    writes = []
    real = jobs.update_progress
    monkeypatch.setattr(
        jobs, "update_progress", lambda *a, **k: writes.append(a[2]) or real(*a, **k)
    )
    for i in range(50):
        job.progress(i / 100, "batch")
    assert writes == [0.0]  # the first, then nothing within the quarter second
    job.progress(0.5, "epoch 1 done", {"epochs": [1]})
    job.progress(0.95, "model pass done", final=True)  # a stage that ends below 1
    job.progress(1.0, "done")
    assert writes == [0.0, 0.5, 0.95, 1.0]
    jobs.request_cancel(database, job_id, by=SYSTEM_ACCOUNT)
    job.progress(0.6, "batch")  # too soon after the last write: the cancel waits for the next
    time.sleep(Job.PROGRESS_EVERY_S)
    with pytest.raises(JobStopped, match="batch"):
        job.progress(0.7, "batch")
    assert jobs.get(database, job_id).progress == 0.7
