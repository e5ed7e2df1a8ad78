"""Live sessions and what they produce: predictions, simulated trades, confirmed pivots."""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from db import columnar, engines
from db.connection import readonly
from db.models import (
    LiveSession,
    PivotRow,
    PredictionRow,
    TradeRow,
    TrainingEvent,
    WorkingModel,
    utcnow,
)


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


def orphans(engine: Engine, me: str) -> list[LiveSession]:
    """Running sessions no engine holds (their engine stopped, or was found dead), for engine
    `me` to resume, oldest first — except those whose working model another engine still
    holds: that engine resumes them, so a model keeps one trainer. Those whose working model
    `me` holds come first."""
    model_owner = (
        select(WorkingModel.engine_id)
        .where(WorkingModel.id == LiveSession.working_model_id)
        .scalar_subquery()
    )
    query = (
        select(LiveSession)
        .where(
            LiveSession.status == "running",
            engines.vacant(LiveSession.engine_id),
            LiveSession.working_model_id.is_(None)
            | (model_owner == me)
            | engines.vacant(model_owner),
        )
        .order_by((model_owner == me).desc(), LiveSession.id)
    )
    with Session(readonly(engine), expire_on_commit=False) as s:
        return list(s.scalars(query))


def running_count(engine: Engine) -> int:
    with readonly(engine).begin() as conn:
        return conn.scalar(
            select(func.count()).select_from(LiveSession).where(LiveSession.status == "running")
        )


def update_row(engine: Engine, session_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(LiveSession).where(LiveSession.id == session_id).values(**values))


class NotOwner(RuntimeError):
    """Another engine has taken this session over: this one must write nothing more of it."""


def _owned(session_id: int, owner: str | None):
    """The session, if engine `owner` runs it (any engine when `owner` is None)."""
    where = [LiveSession.id == session_id]
    if owner is not None:
        where.append(LiveSession.engine_id == owner)
    return where


def close(engine: Engine, session_id: int, status: str, error: str | None = None,
          owner: str | None = None) -> None:  # fmt: skip
    """End a running session as stopped / finished / failed / interrupted (only if engine
    `owner`, when given, still runs it)."""
    with engine.begin() as conn:
        conn.execute(
            update(LiveSession)
            .where(*_owned(session_id, owner), LiveSession.status == "running")
            .values(status=status, stopped_at=utcnow(), error=error)
        )


def take_over(engine: Engine, session_id: int, from_engine: str | None, to_engine: str) -> bool:
    """Make `to_engine` the owner of a running session that `from_engine` had, if no engine
    holds it any more (`engines.vacant`). Exactly one of several engines trying at once
    succeeds; it resumes the session from its `last_ts`, which no write of the old owner can
    move any more (record_candle checks the owner)."""
    was = LiveSession.engine_id.is_(None) if from_engine is None else (
        LiveSession.engine_id == from_engine
    )  # fmt: skip
    with engine.begin() as conn:
        taken = conn.execute(
            update(LiveSession)
            .where(
                LiveSession.id == session_id,
                LiveSession.status == "running",
                was,
                engines.vacant(LiveSession.engine_id),
            )  # fmt: skip
            .values(engine_id=to_engine)
        )
        return taken.rowcount == 1


def hand_back(engine: Engine, session_id: int, by: str, to_engine: str | None) -> None:
    """Engine `by` took a session it cannot run after all (its working model went to another
    engine meanwhile): it is an orphan again, owned by `to_engine` (the stopped one)."""
    with engine.begin() as conn:
        conn.execute(
            update(LiveSession)
            .where(LiveSession.id == session_id, LiveSession.engine_id == by)
            .values(engine_id=to_engine)
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
    owner: str | None = None,
) -> None:
    """Everything one candle changed, in one transaction: its prediction, the fill of the
    previous signal, the account, the pivots it confirmed. After a crash a candle is stored
    whole or not at all, so the stored prediction is always the one its fills followed.

    `received` (a `time.monotonic()` reading) is when the candle arrived; the prediction's
    `latency_ms` runs from then to its insert, the last statement before the commit.
    `learning` carries the session's training-queue counts (samples_waiting, samples_dropped);
    `candle`, the statement storing a live feed's candle (db.candles.live_insert).
    When `owner` is given, nothing is stored unless that engine still owns the session: the
    ownership check is the transaction's first statement, so an engine taken for dead, whose
    session another engine has resumed, can never store a candle twice (raises NotOwner).
    """
    if learning and not learning.keys() <= LEARNING_COUNTS:  # a key naming no column is dropped
        raise ValueError(f"unknown learning counts: {sorted(learning.keys() - LEARNING_COUNTS)}")
    row = {"b_id": session_id, "last_ts": last_ts, "state": state, **(learning or {})}
    record = _RECORD_ANY if owner is None else _RECORD_OWNED
    if owner is not None:
        row["b_owner"] = owner
    with engine.begin() as conn:
        if not conn.execute(record, row).rowcount:
            raise NotOwner(f"session {session_id} is run by another engine now")
        if candle is not None:
            conn.execute(candle)
        if trades:
            conn.execute(_INSERT_TRADE, [{"session_id": session_id, **t} for t in trades])
        if pivots:
            conn.execute(_INSERT_PIVOT, [{"session_id": session_id, **p} for p in pivots])
        conn.execute(
            _INSERT_PREDICTION,
            {**prediction, "session_id": session_id, "created_at": utcnow(),
             "latency_ms": (time.monotonic() - received) * 1000},
        )  # fmt: skip


# record_candle's statements, built once: building an insert or update with its values costs
# more than running it, once a candle for each session. The columns an update sets are the
# keys of its parameters (the last candle, the account, the learning counts); the `b_` names
# bind the row's id and owner.
_RECORD_ANY = (
    update(LiveSession)
    .where(LiveSession.id == bindparam("b_id"))
    .values(candles=LiveSession.candles + 1)
)
_RECORD_OWNED = _RECORD_ANY.where(LiveSession.engine_id == bindparam("b_owner"))
LEARNING_COUNTS = frozenset({"samples_waiting", "samples_dropped"})
_INSERT_TRADE, _INSERT_PIVOT, _INSERT_PREDICTION = (
    m.__table__.insert() for m in (TradeRow, PivotRow, PredictionRow)
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


# -- what the Live page reads each second: only what is new --------------------------------------

# The prediction columns the Live page keeps per session (the ghost candles only for the newest).
PREDICTION_COLUMNS = ("ts", "action", "confidence", "p_buy", "p_sell", "p_hold")
TRADE_COLUMNS = ("id", "side", "entry_ts", "entry_price", "exit_ts", "exit_price", "pnl")
PIVOT_COLUMNS = ("id", "ts", "kind", "price")
MANUAL_COLUMNS = ("id", "ts", "label")  # a manual training label: its event, candle, action
TEXT_COLUMNS = frozenset({"action", "side", "kind", "label"})  # the rest: int64 ts / ids, float64
INT_COLUMNS = frozenset({"id", "ts", "entry_ts", "exit_ts"})
Columns = dict[str, np.ndarray]  # rows of one kind: one array per column, in the order read

# Built once: each refresh only binds its values. Building a select and its cache key cost more
# than running it (every second, for every session watched).
_p, _pv, _t = PredictionRow.__table__.c, PivotRow.__table__.c, TradeRow.__table__.c
_e, _SID = TrainingEvent.__table__.c, bindparam("session_id")
_SESSION_ROW = select(LiveSession.__table__).where(LiveSession.id == _SID)
_ALL_PREDICTIONS = (
    select(*(_p[c] for c in PREDICTION_COLUMNS)).where(_p.session_id == _SID).order_by(_p.ts)
)
_PREDICTION_AT = select(*(_p[c] for c in PREDICTION_COLUMNS), _p.ghost).where(
    _p.session_id == _SID, _p.ts == bindparam("ts")
)
_PREDICTIONS_AFTER = (
    select(*(_p[c] for c in PREDICTION_COLUMNS), _p.ghost)
    .where(_p.session_id == _SID, _p.ts > bindparam("ts"))
    .order_by(_p.ts)
)
_ALL_PIVOTS = (
    select(*(_pv[c] for c in PIVOT_COLUMNS))
    .where(_pv.session_id == _SID)
    .order_by(_pv.ts, _pv.kind)
)
_PIVOTS_AFTER = _ALL_PIVOTS.where(  # the (session_id, ts, kind) index's range
    _pv.ts >= bindparam("ts"), _pv.id > bindparam("id")
)
_TRADES_AFTER = (
    select(*(_t[c] for c in TRADE_COLUMNS))
    .where(_t.session_id == _SID, _t.id > bindparam("id"))
    .order_by(_t.id)
)
_NEW_EVENTS = (_e.session_id == _SID, _e.id > bindparam("id"))
_EVENTS_AFTER = select(func.max(_e.id), func.sum(case((_e.skipped.is_(False), 1), else_=0))).where(
    *_NEW_EVENTS
)
_MANUAL_AFTER = (
    select(_e.id, _e.candle_ts, _e.label)
    .where(*_NEW_EVENTS, _e.source == "manual", _e.skipped.is_(False))
    .order_by(_e.id)
)
_WORKING_ROW = select(WorkingModel.__table__).where(WorkingModel.id == bindparam("model"))
# db.working_models.latest_step, as a walk down the (working_model_id, step) index that stops at
# the first counted row (max() with these filters reads every row).
_MODEL_STEP = (
    select(_e.step)
    .where(_e.working_model_id == bindparam("model"), _e.skipped.is_(False),
           _e.lost.is_(False), _e.step.is_not(None))
    .order_by(_e.step.desc())
    .limit(1)
)  # fmt: skip


@dataclass(frozen=True)
class Seen:
    """How far a reader has read a session's rows: the session's candle count, the newest
    prediction's candle, the newest pivot's candle and id, the newest trade and training event
    ids. Each kind of row is written by one thread per session (its loop; its working model's
    trainer), in order, so a row newer than these is one the reader has not seen; pivots are
    confirmed in their candles' order (each `right` candles after its own), so a new one is at
    or after the newest pivot seen. Predictions, trades and pivots are stored only with a
    candle (`record_candle`, which counts it in the session row): while the count stays, there
    are none to read."""

    candles: int = -1
    prediction_ts: int | None = None
    pivot_ts: int | None = None
    pivot_id: int = 0
    trade_id: int = 0
    event_id: int = 0


@dataclass
class Updates:
    """What changed in a session since `Seen`: the session row, the new rows, and the new
    `Seen`. `latest` is the newest prediction with its ghost candles (None when no new one);
    `manual` the manual training labels applied (ts, label); `steps` new counted steps;
    `model_step` the newest counted step of the session's working model (from any source) and
    `working` its row. The session and working model rows are read-only Core rows with the
    columns as attributes; the rest `Columns`."""

    session: Any
    predictions: Columns
    latest: dict[str, Any] | None
    pivots: Columns
    trades: Columns
    manual: Columns
    steps: int
    model_step: int | None = None
    working: Any = None
    seen: Seen = field(default_factory=Seen)


def _dtype(column: str):
    return object if column in TEXT_COLUMNS else "int64" if column in INT_COLUMNS else "float64"


@functools.cache
def empty(columns: tuple[str, ...]) -> Columns:
    """No rows, shared: most refreshes find nothing new. Read-only arrays (readers share it)."""
    out = {c: np.empty(0, dtype=_dtype(c)) for c in columns}
    for values in out.values():
        values.flags.writeable = False
    return out


def _columns(rows, columns: tuple[str, ...]) -> Columns:
    """Rows as arrays: a DataFrame's construction, concatenation and column access cost more
    than the query that found the rows."""
    if not rows:
        return empty(columns)
    return columnar.of_rows(rows, columns, [_dtype(c) for c in columns])


def _read(conn, query, columns: tuple[str, ...], **values) -> Columns:
    return _columns(conn.execute(query, values).all(), columns)


def updates(engine: Engine, session_id: int, seen: Seen | None = None) -> Updates:
    """Everything the Live page shows that is newer than `seen` (all of it when None), in one
    read transaction of plain Core statements (no ORM session: this runs every second in
    every open tab). Each query is an index range: predictions by the (session_id, ts) unique
    index; pivots by (session_id, ts, kind); trades and training events by their
    (session_id, id) indexes; the working model's newest step by (working_model_id, step)."""
    seen = seen or Seen()
    sid = session_id
    with readonly(engine).begin() as conn:
        sess = conn.execute(_SESSION_ROW, {"session_id": sid}).first()
        # Rows stored with a candle: only when the session counted a new one since.
        candle_rows = sess is not None and sess.candles != seen.candles
        preds, pivots = empty(PREDICTION_COLUMNS), empty(PIVOT_COLUMNS)
        trades, latest = empty(TRADE_COLUMNS), None
        if candle_rows:
            # After the first read the new rows are few: their ghost candles come with them (the
            # newest row's are kept); a first read takes the newest row's in a second statement.
            if seen.prediction_ts is not None:
                rows = conn.execute(
                    _PREDICTIONS_AFTER, {"session_id": sid, "ts": seen.prediction_ts}
                ).all()
                latest = dict(rows[-1]._mapping) if rows else None
                preds = _columns([r[:-1] for r in rows], PREDICTION_COLUMNS)
            else:
                preds = _read(conn, _ALL_PREDICTIONS, PREDICTION_COLUMNS, session_id=sid)
                row = None
                if len(preds["ts"]):
                    at = {"session_id": sid, "ts": int(preds["ts"][-1])}
                    row = conn.execute(_PREDICTION_AT, at).first()
                latest = dict(row._mapping) if row is not None else None
            if seen.pivot_ts is not None:
                pivots = _read(conn, _PIVOTS_AFTER, PIVOT_COLUMNS, session_id=sid,
                               ts=seen.pivot_ts, id=seen.pivot_id)  # fmt: skip
            else:
                pivots = _read(conn, _ALL_PIVOTS, PIVOT_COLUMNS, session_id=sid)
            trades = _read(conn, _TRADES_AFTER, TRADE_COLUMNS, session_id=sid, id=seen.trade_id)
        # Training events (and so manual labels and steps) exist only for a session that
        # trains a working model: a frozen checkpoint's session never gets one.
        last_event = steps = model_step = working = None
        manual = empty(MANUAL_COLUMNS)
        if sess is not None and sess.working_model_id is not None:
            since = {"session_id": sid, "id": seen.event_id}
            last_event, steps = conn.execute(_EVENTS_AFTER, since).one()
            manual = _read(conn, _MANUAL_AFTER, MANUAL_COLUMNS, **since)
            model = {"model": sess.working_model_id}
            working = conn.execute(_WORKING_ROW, model).first()
            model_step = conn.scalar(_MODEL_STEP, model)
    return Updates(
        session=sess,
        predictions=preds,
        latest=latest,
        pivots=pivots,
        trades=trades,
        manual=manual,
        steps=int(steps or 0),
        model_step=model_step,
        working=working,
        seen=_seen_after(seen, sess, preds, pivots, trades, last_event),
    )


def _seen_after(seen: Seen, sess, preds, pivots, trades, last_event) -> Seen:
    return Seen(
        candles=sess.candles if sess is not None else -1,
        prediction_ts=int(preds["ts"][-1]) if len(preds["ts"]) else seen.prediction_ts,
        pivot_ts=int(pivots["ts"].max()) if len(pivots["ts"]) else seen.pivot_ts,
        pivot_id=int(pivots["id"].max()) if len(pivots["id"]) else seen.pivot_id,
        trade_id=int(trades["id"][-1]) if len(trades["id"]) else seen.trade_id,
        event_id=int(last_event) if last_event is not None else seen.event_id,
    )


@dataclass
class Kept:
    """What a reader (the Live page, per browser session) has read of one session so far:
    `keep_up` adds only what is new. `latest`: the newest prediction with its ghost candles."""

    session_id: int
    session: Any = None
    predictions: Columns = field(default_factory=lambda: empty(PREDICTION_COLUMNS))
    latest: dict[str, Any] | None = None
    pivots: Columns = field(default_factory=lambda: empty(PIVOT_COLUMNS))
    trades: Columns = field(default_factory=lambda: empty(TRADE_COLUMNS))
    manual: Columns = field(default_factory=lambda: empty(MANUAL_COLUMNS))
    steps: int = 0
    model_step: int | None = None
    working: Any = None
    seen: Seen = field(default_factory=Seen)


def _append(old: Columns, new: Columns) -> Columns:
    """`old` then `new`, as new arrays (readers may hold `old`)."""
    if not len(next(iter(new.values()))):
        return old
    if not len(next(iter(old.values()))):
        return new
    return {c: np.concatenate([old[c], new[c]]) for c in old}


def keep_up(engine: Engine, session_id: int, kept: Kept | None = None) -> Kept:
    """`kept` brought up to date with one `updates` read, as a new `Kept` (`kept` itself is
    left as it was, so readers sharing it never see it half updated)."""
    if kept is None or kept.session_id != session_id:
        kept = Kept(session_id)
    new = updates(engine, session_id, kept.seen)
    kept = dataclasses.replace(kept)
    kept.session = new.session
    kept.predictions = _append(kept.predictions, new.predictions)
    kept.latest = new.latest or kept.latest
    kept.pivots = _append(kept.pivots, new.pivots)
    kept.trades = _append(kept.trades, new.trades)
    kept.manual = _append(kept.manual, new.manual)
    kept.steps += new.steps
    kept.model_step = new.model_step
    kept.working = new.working
    kept.seen = new.seen
    return kept
