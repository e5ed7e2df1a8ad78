"""Backtests through the real engine and in process: honest predictions, cancel, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from contract.access import SYSTEM_ACCOUNT
from db import backtests, bus, candles, jobs, series
from engine import backtest_run, checkpoints, priority
from engine.inference import predict_last
from engine.model import CandleTransformer
from market.importer import import_candles, seed_samples
from tests.conftest import make_account, wait_until


@pytest.fixture
def stored(database):
    make_account(database, "ana")
    seed_samples(database)
    checkpoints.ensure_default(database)
    return database


def model_of(database, checkpoint_id=1) -> CandleTransformer:
    cfg, state, _ = checkpoints.load(database, checkpoint_id)
    torch.manual_seed(11)
    model = CandleTransformer(cfg).eval()
    model.load_state_dict(state)
    with torch.no_grad():  # an untrained default is nearly constant; make predictions vary
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def test_backtest_job_keeps_a_report_whose_predictions_equal_live_ones(stored, engine_process):
    engine_process("--no-seed")
    row = bus.wait(stored, bus.submit(stored, "backtest.start", {
        "symbol": "SP500", "timeframe": "1d", "start": "2017-01-01", "end": "2018-06-30",
        "fee_bps": 10, "name": "h1"}, created_by="ana"), 20)  # fmt: skip
    assert row.status == "done", row.error
    bid = row.result["backtest_id"]
    done = wait_until(
        lambda: (b := backtests.get(stored, bid)).status != "running" and b, 60, 0.2, "report"
    )
    assert done.status == "done" and done.created_by == "ana" and done.name == "h1"
    assert done.metrics["# Trades"] == len(backtests.trades(stored, done.id))
    job = jobs.get(stored, done.job_id)
    assert job.status == "done" and job.progress == 1.0
    preds = backtests.predictions(stored, bid)
    df = candles.load(stored, "SP500", "1d")
    in_range = df[(df.ts >= done.start_ts) & (df.ts <= done.end_ts)]
    assert preds.ts.tolist() == in_range.ts.tolist()
    cfg, state, _ = checkpoints.load(stored, 1)
    model = CandleTransformer(cfg).eval()
    model.load_state_dict(state)
    ohlcv = df[["open", "high", "low", "close", "volume"]].to_numpy()
    first = int(np.flatnonzero(df.ts.to_numpy() == done.start_ts)[0])
    for k in range(0, len(preds), 7):
        live = predict_last(model, ohlcv[: first + k + 1])
        got = preds.iloc[k][["p_buy", "p_sell", "p_hold"]].to_numpy(dtype=float)
        assert np.abs(got - np.array(list(live.probs.values()))).max() <= 1e-5


def test_changing_later_candles_never_changes_earlier_predictions_or_fills(stored, tmp_path):
    df = candles.load(stored, "SP500", "1d")
    cut = int(df.ts.iloc[-300])
    changed = df.copy()
    later = changed.ts > cut
    changed.loc[later, ["open", "high", "low", "close"]] *= np.linspace(0.7, 1.4, later.sum())[
        :, None
    ]
    path = tmp_path / "changed.csv"
    changed.rename(columns={"ts": "timestamp"})[
        ["timestamp", "open", "high", "low", "close", "volume"]
    ].to_csv(path, index=False)
    import_candles(stored, path, "SP500X", "1d", created_by=SYSTEM_ACCOUNT)
    model = model_of(stored)
    kw = dict(timeframe="1d", start=int(df.ts.iloc[-600]), model=model, fee_bps=10)
    a = backtest_run.run(stored, symbol="SP500", **kw)
    b = backtest_run.run(stored, symbol="SP500X", **kw)
    pa, pb = (backtests.predictions_frame(r["arrays"]) for r in (a, b))
    before = pa.ts <= cut
    pd.testing.assert_frame_equal(pa[before], pb[before])
    assert not pa[~before].action.equals(pb[~before].action) or not np.allclose(
        pa[~before].p_buy, pb[~before].p_buy
    )
    ta = [
        t
        for t in series.trade_frame(a["arrays"]["trades"]).to_dict("records")
        if t["exit_time"] <= pd.Timestamp(cut, unit="ms", tz="UTC").isoformat()
    ]
    tb = [
        t
        for t in series.trade_frame(b["arrays"]["trades"]).to_dict("records")
        if t["exit_time"] <= pd.Timestamp(cut, unit="ms", tz="UTC").isoformat()
    ]
    assert ta == tb
    assert (pa[before].action != "HOLD").any(), "the model should trade before the cut"
    ea, eb = (r["arrays"]["equity"][r["arrays"]["ts"] <= cut].tolist() for r in (a, b))
    assert ea == eb and len(ea) == 301


def test_cancel_stops_promptly_keeps_a_partial_report_and_progress_is_monotone(stored):
    seen = []

    def progress(fraction):
        seen.append(fraction)
        return fraction < 0.3  # cancel after the first chunk

    report = backtest_run.run(stored, symbol="SP500", timeframe="1d", model=model_of(stored),
                              progress=progress, chunk=500)  # fmt: skip
    assert report["status"] == "cancelled"
    assert seen == sorted(seen)
    assert seen[-1] >= 0.3 and all(f < 0.3 for f in seen[:-1])  # stopped at the first refusal
    # chunks run a round at a time (several at once on spare cores): done is what was reported
    assert report["settings"]["candles"] == round(seen[-1] * 5031)
    assert seen[-1] < 0.3 + priority.CORES * 500 / 5031
    assert report["metrics"]["# Trades"] == len(report["arrays"]["trades"]["pnl"])


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"checkpoint_id": 42}, "unknown checkpoint 42"),
        ({"start": "2018-01-01", "end": "2017-01-01"}, "before start"),
        ({"symbol": "NOPE"}, "no candles are stored for 'NOPE'"),
        ({"checkpoint_id": 1, "signals": [[0, "BUY"]]}, "not both"),
        ({"signals": [[0, "LEAP"]]}, "signals"),
    ],
)
def test_bad_backtest_requests_fail_with_a_reason(stored, engine_process, payload, expected):
    engine_process("--no-seed")
    row = bus.wait(
        stored,
        bus.submit(
            stored,
            "backtest.start",
            {"symbol": "SP500", "timeframe": "1d", **payload},
            created_by=SYSTEM_ACCOUNT,
        ),
        20,
    )
    assert row.status == "failed" and expected in row.error


def test_signals_backtest_through_the_engine(stored, engine_process):
    engine_process("--no-seed")
    ts = candles.load(stored, "SP500", "1d").ts
    signals = [[int(ts.iloc[-200]), "BUY"], [int(ts.iloc[-100]), "SELL"]]
    row = bus.wait(stored, bus.submit(stored, "backtest.start", {
        "symbol": "SP500", "timeframe": "1d", "start": int(ts.iloc[-250]), "signals": signals,
        "signals_name": "two.csv", "long_only": True, "fee_bps": 0},
        created_by=SYSTEM_ACCOUNT), 20)  # fmt: skip
    assert row.status == "done", row.error
    done = wait_until(
        lambda: (b := backtests.get(stored, row.result["backtest_id"])).status == "done" and b,
        60,
        0.2,
        "report",
    )
    (trade,) = backtests.trades(stored, done.id).to_dict("records")
    assert trade["side"] == "long" and trade["entry_time"][:10] == pd.Timestamp(
        int(ts.iloc[-199]), unit="ms"
    ).strftime("%Y-%m-%d")
    assert done.signals_name == "two.csv" and done.checkpoint_id is None
    assert done.settings["signals"]["exact"] == 2 and "signals_warning" not in done.settings


def test_headless_backtest_of_the_active_checkpoint_on_a_fresh_data_directory(
    database, home, tmp_path
):
    import json

    from tests.conftest import run_cli

    seed_samples(database)  # candles only: no engine has run, so no checkpoint exists yet
    out = tmp_path / "report.json"
    done = run_cli(home, "backtest", "--symbol", "NASDAQ", "--timeframe", "1d", "--start",
                   "2018-06-01", "--checkpoint", "active", "--slippage-bps", "5", "--json", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    preds = report["predictions"]  # arrays per column, one entry per candle in range
    assert set(preds) == {"ts", "action", "p_buy", "p_sell", "p_hold"}
    assert len(preds["ts"]) == report["settings"]["candles"] == len(report["equity"]["ts"])
    assert report["settings"]["slippage_bps"] == 5 and report["settings"]["checkpoint_id"] == 1
    missing = run_cli(home, "backtest", "--symbol", "NASDAQ", "--timeframe", "1d",
                      "--checkpoint", "no such model")  # fmt: skip
    assert missing.returncode == 2 and "no checkpoint named 'no such model'" in missing.stderr


def test_training_during_a_backtest_trains_a_copy_and_leaves_the_model_alone(
    stored, engine_process
):
    from db import checkpoints as checkpoint_rows
    from db import training

    engine_process("--no-seed")
    ts = candles.load(stored, "SP500", "1d").ts
    common = {"symbol": "SP500", "timeframe": "1d", "start": int(ts.iloc[-120]), "checkpoint_id": 1}

    def run_one(**extra):
        row = bus.wait(
            stored,
            bus.submit(stored, "backtest.start", {**common, **extra}, created_by=SYSTEM_ACCOUNT),
            20,
        )
        assert row.status == "done", row.error
        bid = row.result["backtest_id"]
        return wait_until(
            lambda: (b := backtests.get(stored, bid)).status != "running" and b, 120, 0.2, "report"
        )

    before = run_one()
    learned = run_one(train_mode="every_candle", save_trained=True)
    after = run_one()
    assert learned.status == "done"
    assert training.count(stored, job_id=learned.job_id, skipped=False) == 120
    copy = checkpoint_rows.get(stored, learned.settings["trained_checkpoint_id"])
    assert copy.parent_id == 1 and copy.steps == 120 and not copy.is_active
    assert checkpoint_rows.active(stored).id == 1
    p0, p1 = backtests.predictions(stored, before.id), backtests.predictions(stored, after.id)
    pd.testing.assert_frame_equal(p0, p1)  # the checkpoint's own model did not move
    learned_preds = backtests.predictions(stored, learned.id)
    assert np.allclose(learned_preds.iloc[0][["p_buy", "p_sell", "p_hold"]].to_numpy(dtype=float),
                       p0.iloc[0][["p_buy", "p_sell", "p_hold"]].to_numpy(dtype=float), atol=1e-5)  # fmt: skip
    assert not np.allclose(learned_preds.p_buy.to_numpy()[-20:], p0.p_buy.to_numpy()[-20:])
