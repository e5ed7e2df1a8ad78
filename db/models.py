"""The schema as typed SQLAlchemy 2.x models. Changes to it ship as Alembic migrations
(`db/migrations/versions/`); `tests/test_migrations.py` fails when the two disagree.

Timestamps are UTC: `UTCDateTime` stores naive UTC (microseconds) and hands back aware UTC
datetimes on every backend. Candle times are epoch milliseconds UTC (`ts`), exact and cheap to
compare and to range-scan.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from contract.access import QUOTAS, ROLES
from contract.vocab import (
    AUDIT_OUTCOMES,
    COMMAND_STATUSES,
    EMAIL_CHARS,
    JOB_STATUSES,
    MODEL_NAME_CHARS,
    PERSON_CHARS,
    REPORT_NAME_CHARS,
    SESSION_MODES,
    SESSION_STATUSES,
    SIDES,
    SYMBOL_CHARS,
    TIMEFRAME_CHARS,
)


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A datetime stored as naive UTC and returned as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Command(Base):
    """One request from a view to the engine (docs/architecture.md, "The command bus")."""

    __tablename__ = "commands"
    __table_args__ = (
        CheckConstraint(f"status IN {COMMAND_STATUSES}", name="status"),
        Index("ix_commands_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    # Raw JSON text, decoded by the engine: a malformed payload must reach it and fail there
    # with a message, not vanish in a driver error.
    payload: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    # The engine that must run it: the owner of the session or working model it is about
    # (db/routing.py). None: any engine with room for it.
    target: Mapped[str | None] = mapped_column(String(80))
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)


class EngineInstance(Base):
    """One run of `python -m engine serve`: its heartbeat and where to wake it."""

    __tablename__ = "engines"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_beat: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # Indexed: every page's engine badge asks for the instances not stopped, every 2 s.
    stopped_at: Mapped[datetime | None] = mapped_column(index=True)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    wake_host: Mapped[str | None] = mapped_column(String(255))
    wake_port: Mapped[int | None] = mapped_column(Integer)
    # What an operator calls it (`serve --name`, default the host name) and how much work it
    # takes on (`--max-jobs`, `--max-sessions`).
    name: Mapped[str | None] = mapped_column(String(80))
    max_jobs: Mapped[int | None] = mapped_column(Integer)
    max_sessions: Mapped[int | None] = mapped_column(Integer)


class Job(Base):
    """Long work started by a command (training, backtests): progress, message, cancel flag."""

    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint(f"status IN {JOB_STATUSES}", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Double, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    command_id: Mapped[int | None] = mapped_column(ForeignKey("commands.id"))
    engine_id: Mapped[str | None] = mapped_column(String(80))
    # The working model a training job trains (None for backtests). No foreign key: jobs,
    # checkpoints and working models would refer to each other in a cycle.
    working_model_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)


class DataImport(Base):
    """One accepted import of a candle file: where it came from, what it added, who did it."""

    __tablename__ = "imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(SYMBOL_CHARS))
    timeframe: Mapped[str] = mapped_column(String(TIMEFRAME_CHARS))
    source: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    format: Mapped[str] = mapped_column(String(32))
    rows_in_file: Mapped[int] = mapped_column(Integer)
    rows_added: Mapped[int] = mapped_column(Integer)
    rows_existing: Mapped[int] = mapped_column(Integer)
    rows_skipped: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict[str, Any] | None]
    report: Mapped[dict[str, Any] | None]
    created_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Candle(Base):
    """One OHLCV bar; `ts` is its open time in epoch milliseconds UTC."""

    __tablename__ = "candles"
    __table_args__ = (UniqueConstraint("symbol", "timeframe", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(SYMBOL_CHARS))
    timeframe: Mapped[str] = mapped_column(String(TIMEFRAME_CHARS))
    ts: Mapped[int] = mapped_column(BigInteger)
    open: Mapped[float] = mapped_column(Double)
    high: Mapped[float] = mapped_column(Double)
    low: Mapped[float] = mapped_column(Double)
    close: Mapped[float] = mapped_column(Double)
    volume: Mapped[float] = mapped_column(Double)
    import_id: Mapped[int | None] = mapped_column(ForeignKey("imports.id"))


class CandleSnapshot(Base):
    """One dataset's candles at some moment as a numpy archive (`db/candle_snapshots.py`):
    derived from `candles`, so any engine reads a whole dataset at once. `candles`, `first_ts`
    and `last_ts` say which moment, to be checked against the rows before the bytes are read."""

    __tablename__ = "candle_snapshots"

    symbol: Mapped[str] = mapped_column(String(SYMBOL_CHARS), primary_key=True)
    timeframe: Mapped[str] = mapped_column(String(TIMEFRAME_CHARS), primary_key=True)
    candles: Mapped[int] = mapped_column(BigInteger)
    first_ts: Mapped[int] = mapped_column(BigInteger)
    last_ts: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    written_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """Model weights saved to a file under the data directory, with where they came from."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(MODEL_NAME_CHARS))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    created_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    feature_version: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any] | None]
    # Relative to the data directory; chosen by the engine, never from a name a person typed.
    file: Mapped[str] = mapped_column(String(255))
    steps: Mapped[int] = mapped_column(Integer, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    # The working model it was saved from (no foreign key: working models refer to their base
    # checkpoint) and what trained it since its parent (db.working_models.sources).
    working_model_id: Mapped[int | None] = mapped_column(Integer)
    sources: Mapped[dict[str, Any] | None]


class WorkingModel(Base):
    """A trainable copy of a checkpoint: what sessions, manual training and jobs train.

    Checkpoints never change; training happens here. The engine that has it loaded keeps its
    weights and optimizer in `state_file` (autosaved, overwritten atomically) and writes a new
    child checkpoint when a person, a job or a stopping session asks for one.
    """

    __tablename__ = "working_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(MODEL_NAME_CHARS))
    base_checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id"))
    created_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    engine_id: Mapped[str | None] = mapped_column(String(80))  # the engine that has it loaded
    # Relative to the data directory; None until the first autosave.
    state_file: Mapped[str | None] = mapped_column(String(255))
    saved_steps: Mapped[int] = mapped_column(Integer, default=0)  # optimizer steps in state_file
    saved_at: Mapped[datetime | None]
    last_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    lost_steps: Mapped[int] = mapped_column(Integer, default=0)  # applied, then lost to crashes


class Annotation(Base):
    """A trade a person marked on the chart: entry and exit candle, long or short."""

    __tablename__ = "annotations"
    __table_args__ = (
        CheckConstraint(f"side IN {SIDES}", name="side"),
        CheckConstraint("entry_ts < exit_ts", name="order"),
        Index("ix_annotations_symbol_timeframe", "symbol", "timeframe"),
        # A live chart's window (db.annotations.overlapping): those ending after its start.
        Index("ix_annotations_symbol_timeframe_exit_ts", "symbol", "timeframe", "exit_ts"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(SYMBOL_CHARS))
    timeframe: Mapped[str] = mapped_column(String(TIMEFRAME_CHARS))
    entry_ts: Mapped[int] = mapped_column(BigInteger)
    exit_ts: Mapped[int] = mapped_column(BigInteger)
    side: Mapped[str] = mapped_column(String(5))
    note: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None]
    # Deletes are soft so they can be undone.
    deleted_at: Mapped[datetime | None]
    deleted_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))


class TrainingEvent(Base):
    """One weight update (or one skipped for a lock timeout), from any source."""

    __tablename__ = "training_events"
    __table_args__ = (
        Index("ix_training_events_job_id", "job_id"),
        Index("ix_training_events_working_model_id_step", "working_model_id", "step"),
        Index("ix_training_events_session_id", "session_id"),
        Index("ix_training_events_command_id", "command_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_key: Mapped[str] = mapped_column(String(80))  # the in-memory model instance
    source: Mapped[str] = mapped_column(String(32))  # batch, manual, pivot, every_candle, …
    working_model_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: see sessions
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    session_id: Mapped[int | None] = mapped_column(Integer)
    command_id: Mapped[int | None] = mapped_column(Integer)  # a manual request's command
    requested_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))  # who asked (manual)
    step: Mapped[int | None] = mapped_column(Integer)  # optimizer step count after it
    samples: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Double)
    lock_wait_ms: Mapped[float] = mapped_column(Double, default=0.0)
    duration_ms: Mapped[float] = mapped_column(Double, default=0.0)
    candle_ts: Mapped[int | None] = mapped_column(BigInteger)
    label: Mapped[str | None] = mapped_column(String(8))
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    # Applied, but the engine died before the working model's next autosave kept it.
    lost: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LiveSession(Base):
    """A model running on a live feed in one of the four live modes."""

    __tablename__ = "sessions"
    __table_args__ = (
        CheckConstraint(f"mode IN {SESSION_MODES}", name="mode"),
        CheckConstraint(f"status IN {SESSION_STATUSES}", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(SYMBOL_CHARS))
    timeframe: Mapped[str] = mapped_column(String(TIMEFRAME_CHARS))
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id"))
    # None: the frozen checkpoint, inference only. Otherwise the working model it trains. (No
    # foreign key: adding one makes SQLite rebuild this table, which its children forbid.)
    working_model_id: Mapped[int | None] = mapped_column(Integer, index=True)
    mode: Mapped[str] = mapped_column(String(16))
    feed: Mapped[dict[str, Any]]
    settings: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    created_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]
    engine_id: Mapped[str | None] = mapped_column(String(80))
    last_ts: Mapped[int | None] = mapped_column(BigInteger)  # last candle fully processed
    candles: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[dict[str, Any] | None]  # simulated account, for resuming
    # Training samples handed to the working model's trainer and not applied yet, and those
    # dropped because its bounded queue overflowed (oldest first).
    samples_waiting: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    samples_dropped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)


class PredictionRow(Base):
    """What a session's model said at the close of one candle (made from candles up to it)."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("session_id", "ts"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    ts: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(4))
    p_buy: Mapped[float] = mapped_column(Double)
    p_sell: Mapped[float] = mapped_column(Double)
    p_hold: Mapped[float] = mapped_column(Double)
    confidence: Mapped[float] = mapped_column(Double)
    ghost: Mapped[dict[str, Any]]  # {"ohlc": [[o, h, l, c], ...]} for the next candles
    model_step: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Double)  # candle received → this row committed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TradeRow(Base):
    """A simulated trade of a session: filled at candle opens, fees included."""

    __tablename__ = "trades"
    __table_args__ = (Index("ix_trades_session_id", "session_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"))
    side: Mapped[str] = mapped_column(String(5))
    entry_ts: Mapped[int] = mapped_column(BigInteger)
    entry_price: Mapped[float] = mapped_column(Double)
    exit_ts: Mapped[int] = mapped_column(BigInteger)
    exit_price: Mapped[float] = mapped_column(Double)
    pnl: Mapped[float] = mapped_column(Double)
    return_pct: Mapped[float] = mapped_column(Double)
    fees: Mapped[float] = mapped_column(Double)


class PivotRow(Base):
    """A confirmed swing high (H) or low (L) seen by a session."""

    __tablename__ = "pivots"
    __table_args__ = (UniqueConstraint("session_id", "ts", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    ts: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(1))
    price: Mapped[float] = mapped_column(Double)
    confirmed_ts: Mapped[int] = mapped_column(BigInteger)


class Backtest(Base):
    """A backtest report: what was tested, how, and what came out."""

    __tablename__ = "backtests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(REPORT_NAME_CHARS))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_CHARS))
    timeframe: Mapped[str] = mapped_column(String(TIMEFRAME_CHARS))
    start_ts: Mapped[int | None] = mapped_column(BigInteger)
    end_ts: Mapped[int | None] = mapped_column(BigInteger)
    checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    signals_name: Mapped[str | None] = mapped_column(String(255))
    settings: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="running")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    metrics: Mapped[dict[str, Any] | None]
    trades: Mapped[dict[str, Any] | None]  # unused since 0008: trades live in BacktestSeries
    # {"ts": [...], "equity": [...]}, decimated (db/series.py); whole in BacktestSeries
    equity: Mapped[dict[str, Any] | None]
    created_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class BacktestSeries(Base):
    """A report's per-candle arrays (times, equity, the model's probabilities) and its trades,
    each as one `.npz` blob (db/series.py); the report row keeps the equity decimated."""

    __tablename__ = "backtest_series"

    backtest_id: Mapped[int] = mapped_column(ForeignKey("backtests.id"), primary_key=True)
    candles: Mapped[int] = mapped_column(Integer)
    predictions: Mapped[int] = mapped_column(Integer)  # candles with a prediction (0: signals)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    trades: Mapped[bytes] = mapped_column(LargeBinary)  # trade columns, db/series.py


class Account(Base):
    """A person (or the engine host's `system` account) who signs in and is named on what they
    do. Names are lower case and never change: commands, sessions and annotations name their
    creator by it."""

    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint(f"role IN {ROLES}", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(PERSON_CHARS), unique=True)
    email: Mapped[str | None] = mapped_column(String(EMAIL_CHARS), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # Argon2id, with its parameters and salt (argon2-cffi's encoded form); None: no password
    # yet (a one-time link sets it) or never (the system account, single sign-on only).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    must_set_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_signin_at: Mapped[datetime | None]


class SignInToken(Base):
    """A signed-in browser (`session`) or a one-time sign-in link (`link`). Only the SHA-256
    of the token is stored: the database never holds what a browser presents."""

    __tablename__ = "signin_tokens"
    __table_args__ = (CheckConstraint("purpose IN ('session', 'link')", name="purpose"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    # How a session signed in (password, link, sso): after a link the person must choose a
    # password; single sign-on needs none.
    method: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    address: Mapped[str | None] = mapped_column(String(64))


class AuditEvent(Base):
    """Who did what, when, and how it ended. Append-only: the migration installs triggers that
    refuse UPDATE and DELETE on this table, on SQLite and PostgreSQL alike."""

    __tablename__ = "audit_events"
    __table_args__ = (
        CheckConstraint(f"outcome IN {AUDIT_OUTCOMES}", name="outcome"),
        Index("ix_audit_events_actor_at", "actor", "at"),
        Index("ix_audit_events_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(String(64))


class Quota(Base):
    """An admin's change to a per-role limit (the defaults live in contract/access.py)."""

    __tablename__ = "quotas"
    __table_args__ = (
        CheckConstraint(f"role IN {ROLES}", name="role"),
        CheckConstraint(f"name IN {tuple(QUOTAS)}", name="name"),
    )

    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)
    set_by: Mapped[str | None] = mapped_column(String(PERSON_CHARS))
    set_at: Mapped[datetime] = mapped_column(default=utcnow)


class Blob(Base):
    """A file kept in the database: checkpoint weights and working-model state when several
    engines share one database (`CANDLELAB_CHECKPOINT_STORE`), so any engine on any machine
    reads what another wrote. `path` is the same relative path the file store uses."""

    __tablename__ = "blobs"

    path: Mapped[str] = mapped_column(String(255), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    written_at: Mapped[datetime] = mapped_column(default=utcnow)
