"""Backtest command: a job that runs one backtest and keeps its report."""

from __future__ import annotations

from contract.payloads import BacktestStart
from db import backtests, candles, training
from db import checkpoints as checkpoint_rows
from engine import backtest_run, checkpoints
from engine.job_runner import JobStopped, Outcome
from engine.registry import CommandError, command
from engine.runner import ModelRunner


@command("backtest.start")
def start(ctx, args: BacktestStart, cmd) -> dict:
    """Backtest a checkpoint (or signals) on a range of stored candles, as a background job."""
    try:
        lo, hi = backtest_run.to_ms(args.start), backtest_run.to_ms(args.end)
    except backtest_run.BacktestError as exc:
        raise CommandError(str(exc)) from None
    if lo is not None and hi is not None and lo > hi:
        raise CommandError(f"end ({args.end}) is before start ({args.start})")
    n, first, last = candles.span(ctx.db, args.symbol, args.timeframe, lo, hi)
    if n < 2:
        raise CommandError(candles.too_few(ctx.db, args.symbol, args.timeframe, n))
    checkpoint_id = None
    if args.signals is None:
        checkpoint_id = args.checkpoint_id or ctx.models.active_id()
        try:
            checkpoint_rows.get(ctx.db, checkpoint_id)
        except checkpoint_rows.UnknownCheckpoint:
            raise CommandError(f"unknown checkpoint {checkpoint_id}") from None
    settings = {"fee_bps": args.fee_bps, "slippage_bps": args.slippage_bps,
                "long_only": args.long_only, "cash": args.cash}  # fmt: skip
    learning = {"train_mode": args.train_mode, "pivot_left": args.pivot_left,
                "pivot_right": args.pivot_right} if args.train_mode else {}  # fmt: skip

    def work(job) -> Outcome:
        def progress(fraction: float) -> bool:
            nonlocal named
            try:  # the first report names the report (the page links it); the pass's end is
                # always written, though the job goes on to 1 after it
                job.progress(0.95 * fraction, f"model pass over {n:,} candles",
                             None if named else {"backtest_id": bt_id},
                             final=fraction >= 1)  # fmt: skip
                named = True
            except JobStopped as stop:
                stopped.append(stop)
                return False
            return True

        named = False
        stopped: list[JobStopped] = []
        model, learn = None, None
        if checkpoint_id is not None and args.train_mode:
            learn = _private_copy(ctx, checkpoint_id, bt_id, job.id, args)
        elif checkpoint_id is not None:
            model = ctx.models.frozen(checkpoint_id).snapshot.model
        report = backtest_run.run(
            ctx.db, symbol=args.symbol, timeframe=args.timeframe,
            start=first, end=last, model=model,
            signals=[list(p) for p in args.signals] if args.signals is not None else None,
            progress=progress, learn=learn, **settings,
        )  # fmt: skip
        status = stopped[0].status if stopped else report["status"]
        _keep(ctx, bt_id, report, status, learn, args, cmd, job.id, checkpoint_id)
        m = report["metrics"]
        done = (
            f"return {m['Return [%]']:.2f} %, {m['# Trades']} trades"
            if m
            else "stopped before two candles were simulated: no report figures"
        )
        return Outcome(f"{status}: {done}", {"backtest_id": bt_id}, status)

    job = ctx.jobs.create("backtest", cmd, message="starting")
    bt_id = backtests.create(
        ctx.db, name=args.name, symbol=args.symbol, timeframe=args.timeframe,
        start_ts=first, end_ts=last, checkpoint_id=checkpoint_id,
        signals_name=args.signals_name if args.signals is not None else None,
        settings={**settings, **learning}, job_id=job.id, created_by=cmd.created_by,
    )  # fmt: skip
    ctx.jobs.run(job, work, on_failure=lambda exc: backtests.finish(ctx.db, bt_id, "failed"))
    return {"backtest_id": bt_id, "job_id": job.id, "candles": n}


def _private_copy(ctx, checkpoint_id: int, bt_id: int, job_id: int, args: BacktestStart) -> dict:
    """A private trainable copy of the checkpoint for a backtest that learns: nobody else sees
    it, so it trains in step with the replay (reproducible) and the checkpoint stays as is."""
    cfg, state, optimizer = checkpoints.load(ctx.db, checkpoint_id)
    copy = ModelRunner(f"backtest-{bt_id}", cfg, state, optimizer,
                       on_step=lambda **e: training.record(ctx.db, **e))  # fmt: skip
    return {"runner": copy, "mode": args.train_mode, "left": args.pivot_left,
            "right": args.pivot_right, "event": {"job_id": job_id}}  # fmt: skip


def _keep(ctx, bt_id, report, status, learn, args, cmd, job_id, checkpoint_id) -> None:
    """Store a finished (or stopped) run's report, and the trained copy if asked."""
    if learn and args.save_trained:
        cid = checkpoints.save_runner(
            ctx.db, learn["runner"], name=f"backtest #{bt_id} trained copy",
            parent_id=checkpoint_id, created_by=cmd.created_by, job_id=job_id,
            sources={"backtest_id": bt_id, "steps_by_source": {args.train_mode: learn["runner"].steps}},
        )  # fmt: skip
        report["settings"]["trained_checkpoint_id"] = cid
    after_run = ("training_steps", "trained_checkpoint_id", "signals", "signals_warning")
    extra = {k: report["settings"][k] for k in after_run if k in report["settings"]}
    if extra:  # what was only known after the run: steps taken, where signals landed
        row = backtests.get(ctx.db, bt_id)
        backtests.update(ctx.db, bt_id, settings={**row.settings, **extra})
    backtests.finish(
        ctx.db, bt_id, status, metrics=report["metrics"],
        arrays=report["arrays"],
    )  # fmt: skip
