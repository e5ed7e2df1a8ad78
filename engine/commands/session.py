"""Live session commands: start, stop, switch mode, train on the current candle."""

from __future__ import annotations

from contract.payloads import SessionManual, SessionMode, SessionRef, SessionStart
from db import candles
from db import checkpoints as checkpoint_rows
from db import sessions as session_rows
from db import working_models as working_rows
from engine.commands.train import working_model
from engine.feeds import FeedError
from engine.registry import CommandError, command
from engine.sessions import make_feed
from market import symbols, timeframes


@command("session.start")
def start(ctx, args: SessionStart, cmd) -> dict:
    """Start a live session on a feed; returns its id."""
    try:
        symbols.check(args.symbol)
        timeframes.parse(args.timeframe)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.working_model_id is not None:
        try:
            checkpoint_id = working_rows.get(ctx.db, args.working_model_id).base_checkpoint_id
        except working_rows.UnknownWorkingModel:
            raise CommandError(f"unknown working model {args.working_model_id}") from None
    else:
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
    feed_spec = args.feed.model_dump(exclude_none=True)
    frozen = args.frozen if args.frozen is not None else args.mode == "none"
    try:  # everything that can refuse comes before the first row is written
        feed = make_feed(ctx, args.symbol, args.timeframe, feed_spec)
        shared = working_model(ctx, args.working_model_id) if args.working_model_id else None
        if shared is None:
            ctx.models.frozen(checkpoint_id)  # its weights load (a new working model starts there)
    except (FeedError, ValueError, OSError, RuntimeError) as exc:
        raise CommandError(f"session could not start: {exc}") from None
    working_model_id = shared.id if shared else None
    if working_model_id is None and not frozen:
        working_model_id = ctx.models.new_working(checkpoint_id, created_by=cmd.created_by).id
    sid = session_rows.create(
        ctx.db,
        symbol=args.symbol,
        timeframe=args.timeframe,
        checkpoint_id=checkpoint_id,
        working_model_id=working_model_id,
        mode=args.mode,
        feed=feed_spec,
        settings={
            "fee_bps": args.fee_bps,
            "slippage_bps": args.slippage_bps,
            "long_only": args.long_only,
            "pivot_left": args.pivot_left,
            "pivot_right": args.pivot_right,
        },  # fmt: skip
        created_by=cmd.created_by,
        engine_id=ctx.instance_id,
    )
    try:
        ctx.sessions.launch(session_rows.get(ctx.db, sid), feed)
    except Exception as exc:  # the row exists: it must not stay 'running' with nothing running it
        session_rows.close(ctx.db, sid, "failed", f"{type(exc).__name__}: {exc}")
        raise CommandError(f"session {sid} could not start: {type(exc).__name__}: {exc}") from None
    return {"session_id": sid, "checkpoint_id": checkpoint_id, "mode": args.mode,
            "working_model_id": working_model_id}  # fmt: skip


def _live(ctx, session_id: int):
    session = ctx.sessions.get(session_id)
    if session is None:
        row = session_rows.get(ctx.db, session_id)
        if row is None:
            raise CommandError(f"unknown session {session_id}")
        raise CommandError(f"session {session_id} is not running here (status {row.status})")
    return session


@command("session.stop")
def stop(ctx, args: SessionRef, cmd) -> dict:
    """Stop a running session (it finishes the candle in hand)."""
    session = _live(ctx, args.session_id)
    session.stop()
    session.thread.join(timeout=30)
    return {"session_id": args.session_id, "stopped": not session.thread.is_alive()}


@command("session.set_mode")
def set_mode(ctx, args: SessionMode, cmd) -> dict:
    """Switch a running session's mode from the next candle on. A session reading a frozen
    checkpoint that switches to a learning mode gets a new working model from it, owned like the
    session by its creator (an admin switching someone's session does not take their model)."""
    session = _live(ctx, args.session_id)
    if args.mode != "none" and session.working is None:
        model = ctx.models.new_working(session.checkpoint_id, created_by=session.created_by)
        session_rows.update_row(ctx.db, args.session_id, working_model_id=model.id)
        session.attach(model)
    session.mode = args.mode
    session_rows.update_row(ctx.db, args.session_id, mode=args.mode)
    working = session.working
    return {"session_id": args.session_id, "mode": args.mode,
            "working_model_id": working.id if working else None}  # fmt: skip


@command("session.train_manual")
def train_manual(ctx, args: SessionManual, cmd) -> dict:
    """Train once on the session's latest completed candle with the chosen action.

    Accepted at once: the sample goes to the working model's trainer, which applies it when
    the training lock is free; its training event (command_id = this command) says when it was
    applied, or that it was skipped because the lock stayed busy."""
    session = _live(ctx, args.session_id)
    if session.mode != "manual" or session.working is None:
        raise CommandError(
            f"session {args.session_id} is in mode {session.mode!r}: switch it to manual to "
            "train on the current candle"
        )
    try:
        sample = session.manual_sample(args.action)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    session.working.request(
        sample, operation=f"session {args.session_id} manual ({cmd.created_by or 'someone'})",
        session_id=args.session_id, command_id=cmd.id, requested_by=cmd.created_by,
    )  # fmt: skip
    return {
        "session_id": args.session_id,
        "candle_ts": sample.candle_ts,
        "action": args.action,
        "working_model_id": session.working.id,
        "queued": True,
    }
