"""Live sessions and what they produce: predictions, simulated trades, confirmed pivots."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from db.connection import readonly
from db.models import LiveSession, PivotRow, PredictionRow, TradeRow, TrainingEvent, utcnow


def create(engine: Engine, **values: Any) -> int:
    """A new running session; returns its id."""
    with engine.begin() as conn:
        return conn.execute(
            LiveSession.__table__.insert()
            .values(status="running", created_at=utcnow(), candles=0, **values)
            .returning(LiveSession.id)
        ).scalar_one()


def get(engine: Engine, session_id: int) -> LiveSession | None:
    with Session(readonly(engine), expire_on_commit=False) as s:
        return s.get(LiveSession, session_id)


def all_(engine: Engine, limit: int = 50) -> list[LiveSession]:
    """Newest first."""
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(select(LiveSession).order_by(LiveSession.id.desc()).limit(limit)))


def running(engine: Engine) -> list[LiveSession]:
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(select(LiveSession).where(LiveSession.status == "running")))


def running_count(engine: Engine) -> int:
    with readonly(engine).begin() as conn:
        return conn.scalar(
            select(func.count()).select_from(LiveSession).where(LiveSession.status == "running")
        )


def update_row(engine: Engine, session_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(LiveSession).where(LiveSession.id == session_id).values(**values))


def close(engine: Engine, session_id: int, status: str, error: str | None = None) -> None:
    """End a running session as stopped / finished / failed / interrupted."""
    with engine.begin() as conn:
        conn.execute(
            update(LiveSession)
            .where(LiveSession.id == session_id, LiveSession.status == "running")
            .values(status=status, stopped_at=utcnow(), error=error)
        )


def record_candle(
    engine: Engine,
    session_id: int,
    *,
    prediction: dict,
    received: float,
    last_ts: int,
    state: dict,
    trades: list[dict],
    pivots: list[dict],
    learning: dict[str, int] | None = None,
    candle=None,
) -> None:
    """Everything one candle changed, in one transaction: its prediction, the fill of the
    previous signal, the account, the pivots it confirmed. After a crash a candle is stored
    whole or not at all, so the stored prediction is always the one its fills followed.

    `received` (a `time.monotonic()` reading) is when the candle arrived; the prediction's
    `latency_ms` runs from then to its insert, the last statement before the commit.
    `learning` carries the session's training-queue counts (samples_waiting, samples_dropped);
    `candle`, the statement storing a live feed's candle (db.candles.live_insert).
    """
    with engine.begin() as conn:
        if candle is not None:
            conn.execute(candle)
        if trades:
            conn.execute(
                TradeRow.__table__.insert(), [{"session_id": session_id, **t} for t in trades]
            )
        if pivots:
            conn.execute(
                PivotRow.__table__.insert(), [{"session_id": session_id, **p} for p in pivots]
            )
        conn.execute(
            update(LiveSession)
            .where(LiveSession.id == session_id)
            .values(
                last_ts=last_ts, state=state, candles=LiveSession.candles + 1, **(learning or {})
            )  # fmt: skip
        )
        conn.execute(
            PredictionRow.__table__.insert().values(
                session_id=session_id,
                created_at=utcnow(),
                latency_ms=(time.monotonic() - received) * 1000,
                **prediction,
            )
        )


def _frame(engine: Engine, model, session_id: int, since_ts: int | None, column) -> pd.DataFrame:
    q = select(model.__table__).where(model.session_id == session_id)
    if since_ts is not None:
        q = q.where(column >= since_ts)
    with readonly(engine).begin() as conn:
        return pd.DataFrame(conn.execute(q.order_by(model.id)).mappings().all())


def predictions(engine: Engine, session_id: int, since_ts: int | None = None) -> pd.DataFrame:
    return _frame(engine, PredictionRow, session_id, since_ts, PredictionRow.ts)


def trades(engine: Engine, session_id: int) -> pd.DataFrame:
    return _frame(engine, TradeRow, session_id, None, TradeRow.exit_ts)


def pivots(engine: Engine, session_id: int, since_ts: int | None = None) -> pd.DataFrame:
    return _frame(engine, PivotRow, session_id, since_ts, PivotRow.ts)


def summary(engine: Engine, session_id: int) -> dict[str, Any]:
    """The session as `python -m engine show session ID` prints it."""
    row = get(engine, session_id)
    if row is None:
        raise LookupError(f"no session with id {session_id}")
    with readonly(engine).begin() as conn:
        n_pred = conn.scalar(select(func.count()).where(PredictionRow.session_id == session_id))
        outcome = conn.execute(
            select(TrainingEvent.source, TrainingEvent.skipped, TrainingEvent.lost, func.count())
            .where(TrainingEvent.session_id == session_id)
            .group_by(TrainingEvent.source, TrainingEvent.skipped, TrainingEvent.lost)
        ).all()
        steps: dict[str, int] = {}
        for source, was_skipped, was_lost, n in outcome:
            if not (was_skipped or was_lost):
                steps[source] = steps.get(source, 0) + n
        skipped = sum(n for _, was_skipped, _, n in outcome if was_skipped)
        lost = sum(n for _, was_skipped, was_lost, n in outcome if was_lost and not was_skipped)
        n_trades = conn.scalar(select(func.count()).where(TradeRow.session_id == session_id))
    state = row.state or {}
    return {
        "id": row.id,
        "status": row.status,
        "mode": row.mode,
        "symbol": row.symbol,
        "timeframe": row.timeframe,
        "checkpoint_id": row.checkpoint_id,
        "working_model_id": row.working_model_id,
        "model": f"checkpoint #{row.checkpoint_id}, frozen (inference only)"
        if row.working_model_id is None
        else f"working model W{row.working_model_id}",
        "feed": row.feed,
        "settings": row.settings,
        "created_by": row.created_by,
        "last_candle": None
        if row.last_ts is None
        else pd.Timestamp(row.last_ts, unit="ms", tz="UTC").isoformat(),
        "candles": row.candles,
        "predictions": n_pred,
        "training_steps": steps,
        "skipped_steps": skipped,
        "lost_steps": lost,
        "samples_waiting": row.samples_waiting,
        "samples_dropped": row.samples_dropped,
        "trades": n_trades,
        "position": state.get("position", 0),
        "equity": state.get("equity"),
        "realized_pnl": state.get("realized"),
        "unrealized_pnl": state.get("unrealized"),
        "error": row.error,
    }
