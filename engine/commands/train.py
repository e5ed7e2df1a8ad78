"""Model commands: batch training, checkpoint activation, saving a working model."""

from __future__ import annotations

import threading
from datetime import timedelta

from contract.payloads import CheckpointRef, DebugHoldLock, ModelSave, TrainStart
from db import annotations as annotation_rows
from db import candles
from db import checkpoints as checkpoint_rows
from db import working_models as working_rows
from db.models import utcnow
from engine import batch_training
from engine.batch_training import TrainSettings
from engine.job_runner import Outcome
from engine.pool import WorkingModelElsewhere
from engine.registry import CommandError, command


def _datasets(ctx, args: TrainStart) -> list[tuple[str, str]]:
    """The (symbol, timeframe) pairs to train on, or CommandError saying why there are none."""
    stored = {(r.symbol, r.timeframe) for r in candles.datasets(ctx.db).itertuples()}
    if args.datasets:
        wanted = [(d.symbol, d.timeframe) for d in args.datasets]
        missing = [f"{s} {t}" for s, t in wanted if (s, t) not in stored]
        if missing:
            raise CommandError(f"no candles stored for {', '.join(missing)}")
        return wanted
    wanted = sorted({(a.symbol, a.timeframe) for a in annotation_rows.list_for(ctx.db)} & stored)
    if not wanted and not args.unannotated_as_hold:
        raise CommandError("no annotations yet: mark some trades on the Annotate page first")
    return wanted or sorted(stored)


def working_model(ctx, working_model_id: int):
    """Working model `working_model_id`, loaded here, or CommandError saying why not."""
    try:
        return ctx.models.working(working_model_id)
    except working_rows.UnknownWorkingModel:
        raise CommandError(f"unknown working model {working_model_id}") from None
    except WorkingModelElsewhere as exc:
        raise CommandError(str(exc)) from None


def _working_model(ctx, args: TrainStart, cmd):
    """The working model to train: the one named, or a new one from the base checkpoint."""
    if args.working_model_id is not None:
        return working_model(ctx, args.working_model_id)
    base_id = args.base_checkpoint or ctx.models.active_id()
    try:
        checkpoint_rows.get(ctx.db, base_id)
    except checkpoint_rows.UnknownCheckpoint:
        raise CommandError(f"unknown checkpoint {base_id}") from None
    return ctx.models.new_working(base_id, created_by=cmd.created_by)


@command("train.start")
def train_start(ctx, args: TrainStart, cmd) -> dict:
    """Start batch training on annotations in the background; returns the job id.

    It trains a working model (a new one from the base checkpoint unless one is named); the
    base checkpoint never changes. The result is a new child checkpoint."""
    wanted = _datasets(ctx, args)
    model = _working_model(ctx, args, cmd)
    settings = TrainSettings(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        validation_split=args.validation_split, seq_len=args.seq_len,
        unannotated_as_hold=args.unannotated_as_hold,
    )  # fmt: skip
    name = args.name or f"W{model.id} after train job"

    def work(job) -> Outcome:
        result = batch_training.run(ctx.db, model, wanted, settings, job_id=job.id,
                                    progress=job.progress)  # fmt: skip
        metrics = {k: result["epochs"][-1][k] for k in METRICS}
        cid = model.save_checkpoint(
            name=args.name or f"{name} {job.id}", created_by=cmd.created_by, metrics=metrics,
            activate=args.activate, job_id=job.id,
        ).result()  # fmt: skip
        result.update(checkpoint_id=cid, working_model_id=model.id)
        return Outcome(f"done: checkpoint {cid}" + (" (active)" if args.activate else ""), result)

    def on_stop(job, stop) -> Outcome:
        how = "engine shutdown" if stop.status == "interrupted" else "cancel"
        cid = model.save_checkpoint(
            name=f"{args.name or f'{name} {job.id}'} (stopped by {how})", created_by=cmd.created_by,
            job_id=job.id, only_if_changed=True,
        ).result()  # fmt: skip
        kept = f"weights so far saved as checkpoint {cid}" if cid else "no step taken yet"
        return Outcome(f"{stop}; {kept}", {"checkpoint_id": cid, "working_model_id": model.id},
                       stop.status)  # fmt: skip

    job = ctx.jobs.create("train", cmd, working_model_id=model.id,
                          message=f"training working model {model.id} on {len(wanted)} dataset(s)")  # fmt: skip
    ctx.models.retain(model)
    job_id = ctx.jobs.run(job, work, on_stop=on_stop, on_end=lambda: ctx.models.release(model))
    return {
        "job_id": job_id,
        "base_checkpoint": model.base_checkpoint_id,
        "working_model_id": model.id,
        "datasets": [f"{s} {t}" for s, t in wanted],
    }


METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_baseline",
           "val_samples")  # fmt: skip


@command("checkpoint.activate")
def activate(ctx, args: CheckpointRef, cmd) -> dict:
    """Make a checkpoint the one live sessions and backtests use by default."""
    try:
        checkpoint_rows.activate(ctx.db, args.checkpoint_id)
    except checkpoint_rows.UnknownCheckpoint:
        raise CommandError(f"unknown checkpoint {args.checkpoint_id}") from None
    return {"active": args.checkpoint_id}


def _models_to_hold(ctx, args: DebugHoldLock) -> list:
    if args.session_id is not None:
        session = ctx.sessions.get(args.session_id)
        if session is None or session.working is None:
            raise CommandError(f"session {args.session_id} trains no working model here")
        return [session.working]
    if args.working_model_id is not None:
        return [working_model(ctx, args.working_model_id)]
    base = args.checkpoint_id or ctx.models.active_id()
    held = [m for m in ctx.models.loaded() if m.base_checkpoint_id == base]
    if not held:
        raise CommandError(f"no working model started from checkpoint {base} is loaded here")
    return held


@command("debug.hold_lock", debug=True)
def hold_lock(ctx, args: DebugHoldLock, cmd) -> dict:
    """Hold working models' training locks for a while on other threads (a hung trainer)."""
    models = _models_to_hold(ctx, args)
    held = threading.Barrier(len(models) + 1, timeout=5)

    def hang(model) -> None:
        with model.runner.lock.hold(f"debug.hold_lock (command {cmd.id})"):
            held.wait()
            ctx.stopping.wait(args.seconds)

    for model in models:
        threading.Thread(target=hang, args=(model,), name=f"hung-trainer-{cmd.id}",
                         daemon=True).start()  # fmt: skip
    held.wait()
    since = utcnow()
    return {"holding": [m.runner.key for m in models], "seconds": args.seconds,
            "held_from": since.isoformat(),
            "held_until": (since + timedelta(seconds=args.seconds)).isoformat()}  # fmt: skip


@command("model.save")
def save(ctx, args: ModelSave, cmd) -> dict:
    """Save a working model as a new checkpoint, after the training already handed to it.
    Answers at once; the checkpoint appears when the trainer gets to it (the working model's
    last_checkpoint_id). Refused when it has learned nothing since its last checkpoint."""
    model = working_model(ctx, args.working_model_id)
    if not model.learned_since_checkpoint():
        last = model.last_checkpoint_id or model.base_checkpoint_id
        raise CommandError(
            f"working model W{model.id} has learned nothing since checkpoint #{last}: "
            "nothing new to save"
        )
    name = args.name or f"W{model.id} saved by {cmd.created_by or 'someone'}"
    ctx.models.retain(model)  # loaded for the save alone: unloaded again once it is written
    saved = model.save_checkpoint(name=name, created_by=cmd.created_by, activate=args.activate)
    saved.add_done_callback(lambda _: ctx.models.release(model))
    return {"working_model_id": model.id, "queued": True, "name": name}
