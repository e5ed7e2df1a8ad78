"""Backtest reports and their per-candle predictions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from contract.vocab import ACTIONS, PIVOT_LEFT, PIVOT_RIGHT
from db import series
from db.connection import first_row_with_files, readonly
from db.models import Backtest, BacktestSeries, utcnow

TRADE_COLUMNS = series.TRADE_COLUMNS
_P_COLUMNS = [f"p_{a.lower()}" for a in ACTIONS]  # p_buy, p_sell, p_hold


def create(engine: Engine, **values: Any) -> int:
    with engine.begin() as conn:
        return conn.execute(
            Backtest.__table__.insert()
            .values(status="running", created_at=utcnow(), **values)
            .returning(Backtest.id)
        ).scalar_one()


def update(engine: Engine, backtest_id: int, **values: Any) -> None:
    """Change fields of a report (e.g. settings learned while it runs)."""
    with engine.begin() as conn:
        conn.execute(sa.update(Backtest).where(Backtest.id == backtest_id).values(**values))


def finish(
    engine: Engine, backtest_id: int, status: str, arrays: dict | None = None, **values: Any
) -> None:
    """Store the results (metrics) and the final status. `arrays` = the run's per-candle
    {"ts", "equity", "probs" (None for signals)} and its "trades" (columns): kept whole as blobs
    beside the row (db/series.py), the equity also decimated in the row's `equity` for charts."""
    with engine.begin() as conn:
        if arrays is not None and len(arrays["ts"]):
            probs = arrays.get("probs")
            conn.execute(
                BacktestSeries.__table__.insert().values(
                    backtest_id=backtest_id, candles=len(arrays["ts"]),
                    predictions=0 if probs is None else len(probs),
                    data=series.pack(arrays["ts"], arrays["equity"], probs),
                    trades=series.pack_trades(arrays["trades"]),
                )
            )  # fmt: skip
            values["equity"] = series.row_equity(arrays["ts"], arrays["equity"])
        conn.execute(
            sa.update(Backtest)
            .where(Backtest.id == backtest_id)
            .values(status=status, finished_at=utcnow(), **values)
        )


def get(engine: Engine, backtest_id: int) -> Backtest | None:
    with Session(readonly(engine), expire_on_commit=False) as s:
        return s.get(Backtest, backtest_id)


def all_(engine: Engine, limit: int = 500) -> list[Backtest]:
    """Newest first."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(select(Backtest).order_by(Backtest.id.desc()).limit(limit)))


def arrays(engine: Engine, backtest_id: int) -> dict[str, Any] | None:
    """A report's whole per-candle arrays ("ts", "equity", and "probs" for a model's run) and
    its "trades" (columns), or None for a report that kept none (failed, or stopped before two
    candles)."""
    row = first_row_with_files(
        engine,
        select(BacktestSeries.data, BacktestSeries.trades).where(
            BacktestSeries.backtest_id == backtest_id
        ),
    )
    if row is None:
        return None
    data, trades = row
    return {**series.unpack(data), "trades": series.unpack_trades(trades)}


def trades(engine: Engine, backtest_id: int) -> pd.DataFrame:
    """A report's trades as tables show them (`series.trade_frame`; none when it kept none),
    without reading its per-candle arrays."""
    row = first_row_with_files(
        engine, select(BacktestSeries.trades).where(BacktestSeries.backtest_id == backtest_id)
    )
    data = None if row is None else row[0]
    if data is None:
        return pd.DataFrame(columns=list(TRADE_COLUMNS))
    return series.trade_frame(series.unpack_trades(data))


def predictions_frame(arrays: dict[str, np.ndarray] | None) -> pd.DataFrame:
    """The model's action and probabilities at each candle: columns ts, action, p_buy, p_sell,
    p_hold (empty for a signals backtest)."""
    if arrays is None or arrays.get("probs") is None:
        return pd.DataFrame(columns=["ts", "action", *_P_COLUMNS])
    probs = arrays["probs"]
    return pd.DataFrame(
        {"ts": arrays["ts"], "action": np.array(ACTIONS)[probs.argmax(1)],
         **{c: probs[:, i] for i, c in enumerate(_P_COLUMNS)}}
    )  # fmt: skip


def predictions(engine: Engine, backtest_id: int) -> pd.DataFrame:
    """`predictions_frame` of a stored report."""
    return predictions_frame(arrays(engine, backtest_id))


def training_note(settings: dict | None) -> str | None:
    """How a report's model trained while the backtest ran, in words, or None if it did not.
    Such a report scores a model that learned from the candles it is scored on (each one
    after predicting it), so every view of the report says so."""
    settings = settings or {}
    mode = settings.get("train_mode")
    if not mode:
        return None
    how = [str(mode).replace("_", " ")]
    if mode == "pivots_only":
        how.append(
            f"pivots {settings.get('pivot_left', PIVOT_LEFT)}/{settings.get('pivot_right', PIVOT_RIGHT)}"
        )
    if settings.get("training_steps") is not None:
        how.append(f"the copy ended at step {settings['training_steps']:,}")
    kept = settings.get("trained_checkpoint_id")
    return (
        f"trained while backtesting: a private copy of the checkpoint learned candle by candle "
        f"({', '.join(how)})"
        + (f"; kept as checkpoint #{kept}" if kept else "; the trained copy was not kept")
    )


def _iso(value) -> str | None:
    """Epoch ms or a datetime as ISO text (UTC); None stays None."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return pd.Timestamp(int(value), unit="ms", tz="UTC").isoformat()
    return value.isoformat()


def report_dict(row: Backtest, arrays: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """A report in the one layout both the app's JSON download and the CLI (`backtest --json`,
    `show backtest ID --json`) write, so a script reads either the same way. `row` may be
    unsaved (a `--no-save` run); `arrays` are the run's per-candle arrays (`arrays()`): the
    whole equity curve and, for a model's run, its predictions. Per-candle data are arrays per
    column: a 100k-candle report stays cheap to build."""
    if arrays is None:  # nothing kept whole: the row's curve is all there is
        equity = row.equity or {"ts": [], "equity": []}
    else:
        equity = {"ts": arrays["ts"].tolist(), "equity": arrays["equity"].tolist()}
    preds = predictions_frame(arrays)
    return {
        "id": row.id, "name": row.name, "status": row.status,
        "symbol": row.symbol, "timeframe": row.timeframe,
        "start": _iso(row.start_ts), "end": _iso(row.end_ts),
        "checkpoint_id": row.checkpoint_id, "signals": row.signals_name,
        "trained_during_run": training_note(row.settings),
        "settings": row.settings, "created_by": row.created_by,
        "created_at": _iso(row.created_at), "finished_at": _iso(row.finished_at),
        "metrics": row.metrics,
        "trades": [] if arrays is None else series.trade_frame(arrays["trades"]).to_dict("records"),
        "equity": equity,
        "predictions": None if preds.empty else {c: preds[c].tolist() for c in preds.columns},
    }  # fmt: skip


def report(engine: Engine, backtest_id: int) -> dict[str, Any]:
    """A stored report with its whole per-candle arrays, in `report_dict`'s layout."""
    row = get(engine, backtest_id)
    if row is None:
        raise LookupError(
            f"no backtest with id {backtest_id}: `python -m engine list backtests` lists them"
        )
    return report_dict(row, arrays(engine, backtest_id))


def report_json(report: dict[str, Any]) -> str:
    """`report_dict`'s output as the JSON file people download or the CLI writes."""
    return json.dumps(report, indent=1, default=str)


def summary(engine: Engine, backtest_id: int) -> dict[str, Any]:
    """A report as `python -m engine show backtest ID` prints it: what ran on what, how it
    did, and counts instead of the per-candle arrays (`--json` prints those)."""
    row = get(engine, backtest_id)
    if row is None:
        raise LookupError(
            f"no backtest with id {backtest_id}: `python -m engine list backtests` lists them"
        )
    with readonly(engine).begin() as conn:
        kept = conn.execute(
            select(BacktestSeries.candles, BacktestSeries.predictions).where(
                BacktestSeries.backtest_id == backtest_id
            )
        ).first()
    out = report_dict(row, None)
    for key in ("trades", "equity", "predictions"):
        del out[key]
    metrics = row.metrics or {}
    return {
        **out,
        "source": source(row),
        "return_pct": metrics.get("Return [%]"),
        "trades": (row.metrics or {}).get("# Trades", 0),
        "candles": kept.candles if kept else len((row.equity or {}).get("ts", [])),
        "predictions": kept.predictions if kept else 0,
        "job_id": row.job_id,
        "report_page": f"/report?id={row.id}",
    }


def source(row: Backtest) -> str:
    """What a report traded: "checkpoint #3", "checkpoint #3, trained while running" or
    "signals name.csv"."""
    if row.checkpoint_id is None:
        return f"signals {row.signals_name or '(unnamed)'}"
    trained = ", trained while running" if (row.settings or {}).get("train_mode") else ""
    return f"checkpoint #{row.checkpoint_id}{trained}"
