"""Live session commands: start, stop, switch mode, train on the current candle."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from db import candles
from db import checkpoints as checkpoint_rows
from db import sessions as session_rows
from engine.feeds import FeedError
from engine.registry import CommandError, Payload, command
from market import symbols, timeframes

Mode = Literal["none", "pivots_only", "every_candle", "manual"]


class FeedSpec(Payload):
    kind: Literal["replay", "exchange", "synthetic"] = "replay"
    pace_s: float = Field(default=1.0, ge=0, le=86_400)
    start_ts: int | None = None  # replay: first candle to play (default: the first stored)
    exchange: str | None = None  # exchange: a ccxt id such as binance
    poll_s: float | None = Field(default=None, gt=0)
    seed: int = 0  # synthetic
    count: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exchange_named(self):
        if self.kind == "exchange" and not self.exchange:
            raise ValueError("an exchange feed needs 'exchange', e.g. binance")
        return self


class StartArgs(Payload):
    symbol: str
    timeframe: str
    mode: Mode = "none"
    checkpoint_id: int | None = None  # default: the active checkpoint
    feed: FeedSpec = FeedSpec()
    fee_bps: float = Field(default=10.0, ge=0, le=1000)
    long_only: bool = False
    pivot_left: int = Field(default=5, ge=1, le=200)
    pivot_right: int = Field(default=5, ge=1, le=200)


@command("session.start", StartArgs)
def start(ctx, args: StartArgs, cmd) -> dict:
    """Start a live session on a feed; returns its id."""
    try:
        symbols.check(args.symbol)
        timeframes.parse(args.timeframe)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    checkpoint_id = args.checkpoint_id or ctx.models.active_id()
    try:
        checkpoint_rows.get(ctx.db, checkpoint_id)
    except checkpoint_rows.UnknownCheckpoint:
        raise CommandError(f"unknown checkpoint {checkpoint_id}") from None
    if args.feed.kind == "replay":
        stored = candles.datasets(ctx.db)
        have = stored[(stored.symbol == args.symbol) & (stored.timeframe == args.timeframe)]
        if have.empty:
            raise CommandError(
                f"no stored candles for {args.symbol} {args.timeframe} to replay: import them on "
                "the Data page first"
            )
    sid = session_rows.create(
        ctx.db,
        symbol=args.symbol,
        timeframe=args.timeframe,
        checkpoint_id=checkpoint_id,
        mode=args.mode,
        feed=args.feed.model_dump(exclude_none=True),
        settings={
            "fee_bps": args.fee_bps,
            "long_only": args.long_only,
            "pivot_left": args.pivot_left,
            "pivot_right": args.pivot_right,
        },  # fmt: skip
        created_by=cmd.created_by,
        engine_id=ctx.instance_id,
    )
    try:
        ctx.sessions.launch(session_rows.get(ctx.db, sid))
    except (FeedError, KeyError, ValueError) as exc:
        session_rows.close(ctx.db, sid, "failed", str(exc))
        raise CommandError(f"session {sid} could not start: {exc}") from None
    return {"session_id": sid, "checkpoint_id": checkpoint_id, "mode": args.mode}


class SessionRef(Payload):
    session_id: int


def _live(ctx, session_id: int):
    session = ctx.sessions.get(session_id)
    if session is None:
        row = session_rows.get(ctx.db, session_id)
        if row is None:
            raise CommandError(f"unknown session {session_id}")
        raise CommandError(f"session {session_id} is not running here (status {row.status})")
    return session


@command("session.stop", SessionRef)
def stop(ctx, args: SessionRef, cmd) -> dict:
    """Stop a running session (it finishes the candle in hand)."""
    session = _live(ctx, args.session_id)
    session.stop()
    session.thread.join(timeout=30)
    return {"session_id": args.session_id, "stopped": not session.thread.is_alive()}


class ModeArgs(SessionRef):
    mode: Mode


@command("session.set_mode", ModeArgs)
def set_mode(ctx, args: ModeArgs, cmd) -> dict:
    """Switch a running session's mode from the next candle on."""
    session = _live(ctx, args.session_id)
    session.mode = args.mode
    session_rows.update_row(ctx.db, args.session_id, mode=args.mode)
    return {"session_id": args.session_id, "mode": args.mode}


class ManualArgs(SessionRef):
    action: Literal["BUY", "SELL", "HOLD"]


@command("session.train_manual", ManualArgs)
def train_manual(ctx, args: ManualArgs, cmd) -> dict:
    """Train once on the session's latest completed candle with the chosen action."""
    session = _live(ctx, args.session_id)
    if session.mode != "manual":
        raise CommandError(
            f"session {args.session_id} is in mode {session.mode!r}: switch it to manual to "
            "train on the current candle"
        )
    try:
        result = session.train_now(args.action)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if not result["trained"]:
        raise CommandError(
            f"the training lock of checkpoint {session.runner.checkpoint_id} was busy; "
            "the step was skipped (see training events)"
        )
    return {"session_id": args.session_id, **result}
