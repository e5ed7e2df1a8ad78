"""Model commands: batch training, checkpoint activation."""

from __future__ import annotations

import logging
import threading
import traceback

from pydantic import Field

from db import annotations as annotation_rows
from db import candles, jobs
from db import checkpoints as checkpoint_rows
from engine import batch_training
from engine.batch_training import TrainingCancelled, TrainSettings
from engine.registry import CommandError, Payload, command

log = logging.getLogger(__name__)


class DatasetRef(Payload):
    symbol: str
    timeframe: str


class TrainArgs(Payload):
    base_checkpoint: int | None = Field(default=None, description="default: the active one")
    epochs: int = Field(default=5, ge=1, le=500)
    batch_size: int = Field(default=8, ge=1, le=256)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    datasets: list[DatasetRef] | None = None  # default: every dataset with annotations
    validation_split: float = Field(default=0.2, ge=0, le=0.5)
    seq_len: int = Field(default=512, ge=64, le=8192)
    unannotated_as_hold: bool = False
    activate: bool = False
    name: str | None = Field(default=None, max_length=120)


@command("train.start", TrainArgs)
def train_start(ctx, args: TrainArgs, cmd) -> dict:
    """Start batch training on annotations in the background; returns the job id."""
    base_id = args.base_checkpoint or ctx.models.active_id()
    if base_id is None:
        raise CommandError("no checkpoint to train: none is active and none was given")
    try:
        base = checkpoint_rows.get(ctx.db, base_id)
    except checkpoint_rows.UnknownCheckpoint:
        raise CommandError(f"unknown checkpoint {base_id}") from None
    stored = {(r.symbol, r.timeframe) for r in candles.datasets(ctx.db).itertuples()}
    if args.datasets:
        wanted = [(d.symbol, d.timeframe) for d in args.datasets]
        missing = [f"{s} {t}" for s, t in wanted if (s, t) not in stored]
        if missing:
            raise CommandError(f"no candles stored for {', '.join(missing)}")
    else:
        wanted = sorted(
            {(a.symbol, a.timeframe) for a in annotation_rows.list_for(ctx.db)} & stored
        )
        if not wanted and not args.unannotated_as_hold:
            raise CommandError("no annotations yet: mark some trades on the Annotate page first")
        wanted = wanted or sorted(stored)
    runner = ctx.models.get(base_id)
    job_id = jobs.create(
        ctx.db, "train", command_id=cmd.id, engine_id=ctx.instance_id, created_by=cmd.created_by,
        message=f"training checkpoint {base_id} on {len(wanted)} dataset(s)",
    )  # fmt: skip
    settings = TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        validation_split=args.validation_split, seq_len=args.seq_len,
        unannotated_as_hold=args.unannotated_as_hold,
    )  # fmt: skip
    name = args.name or f"{base.name.split(' (')[0]} + train #{job_id}"

    def work() -> None:
        try:
            result = batch_training.run(ctx.db, runner, job_id, wanted, settings, ctx.stopping)
        except TrainingCancelled as exc:
            how = "engine shutdown" if ctx.stopping.is_set() else "cancel"
            cid = ctx.models.save(
                runner, name=f"{name} ({how})", created_by=cmd.created_by, job_id=job_id
            )
            status = "interrupted" if ctx.stopping.is_set() else "cancelled"
            jobs.finish(
                ctx.db,
                job_id,
                status,
                f"stopped by {how} at {exc}; weights so far saved as checkpoint {cid}",
                {"checkpoint_id": cid},
            )
            return
        except Exception as exc:
            log.error("training job %s failed:\n%s", job_id, traceback.format_exc())
            jobs.finish(
                ctx.db, job_id, "failed", f"failed: {exc}", error=f"{type(exc).__name__}: {exc}"
            )
            return
        last = result["epochs"][-1]
        metrics = {
            k: last[k]
            for k in (
                "train_loss",
                "train_accuracy",
                "val_loss",
                "val_accuracy",
                "val_baseline",
                "val_samples",
            )
        }
        cid = ctx.models.save(
            runner,
            name=name,
            created_by=cmd.created_by,
            metrics=metrics,
            activate=args.activate,
            job_id=job_id,
        )
        result["checkpoint_id"] = cid
        jobs.finish(
            ctx.db,
            job_id,
            "done",
            f"done: checkpoint {cid}" + (" (active)" if args.activate else ""),
            result,
        )

    ctx.start_job(job_id, work)
    return {
        "job_id": job_id,
        "base_checkpoint": base_id,
        "datasets": [f"{s} {t}" for s, t in wanted],
    }


class ActivateArgs(Payload):
    checkpoint_id: int


@command("checkpoint.activate", ActivateArgs)
def activate(ctx, args: ActivateArgs, cmd) -> dict:
    """Make a checkpoint the one live sessions and backtests use by default."""
    try:
        checkpoint_rows.activate(ctx.db, args.checkpoint_id)
    except checkpoint_rows.UnknownCheckpoint:
        raise CommandError(f"unknown checkpoint {args.checkpoint_id}") from None
    return {"active": args.checkpoint_id}


class HoldArgs(Payload):
    checkpoint_id: int | None = None
    seconds: float = Field(ge=0, le=3600)


@command("debug.hold_lock", HoldArgs, debug=True)
def hold_lock(ctx, args: HoldArgs, cmd) -> dict:
    """Hold a model's training lock for a while on another thread (a hung trainer)."""
    runner = ctx.models.get(args.checkpoint_id)
    held = threading.Event()

    def hang() -> None:
        with runner.lock.hold(f"debug.hold_lock (command {cmd.id})"):
            held.set()
            ctx.stopping.wait(args.seconds)

    threading.Thread(target=hang, name=f"hung-trainer-{cmd.id}", daemon=True).start()
    held.wait(5)
    return {"holding": runner.key, "seconds": args.seconds}
