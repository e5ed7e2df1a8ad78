"""Checkpoint files: state_dicts and config only, written atomically, loaded weights-only.

They live in the checkpoint store (`db.settings.checkpoint_store`): files under a directory
(the data directory by default, or one every engine mounts), or the database's `blobs` table,
which every engine sharing a PostgreSQL database reads — so a backtest or a takeover on another
machine finds the weights. Either way a write is atomic: a file is written to a temporary name
in the same directory, flushed and fsync'ed, then renamed over its final name (and the
directory fsync'ed); a blob is one upsert, inside the transaction that records it. A crash
mid-save leaves the old bytes or the new, never torn ones. Loading uses
`torch.load(weights_only=True)`: a checkpoint cannot run code. Paths come from the checkpoint's
id, never from the name a person typed, so no name can point outside the store.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch
from sqlalchemy import Connection, Engine

from db import blobs, settings
from db import checkpoints as rows
from engine import features
from engine.model import ModelConfig

DIR = "checkpoints"
FORMAT = 1


def _root(database: Engine | None = None) -> Path:
    """The directory of the file store (the data directory unless configured)."""
    chosen = settings.checkpoint_store(str(database.url) if database is not None else "")
    return settings.home() if chosen == "database" else Path(chosen).expanduser()


def in_database(database: Engine) -> bool:
    """Whether this database's checkpoint store is the database itself."""
    return settings.checkpoint_store(str(database.url)) == "database"


def checkpoint_dir(database: Engine | None = None) -> Path:
    path = _root(database) / DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, payload: dict) -> None:
    """torch.save `payload` to `path` so that readers see the old file or the new, whole."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    blobs.write_file(path, buffer.getvalue())


def read(path: Path) -> dict:
    """A checkpoint payload, loaded without unpickling code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _file_for(checkpoint_id: int, name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "model"
    return f"{DIR}/{checkpoint_id:06d}-{slug}.pt"


def resolve(relative: str, database: Engine | None = None) -> Path:
    """The absolute path of a checkpoint file in the file store, refusing anything outside
    its folder."""
    base = checkpoint_dir(database).resolve()
    path = (_root(database) / relative).resolve()
    if base not in path.parents:
        raise ValueError(f"checkpoint file {relative!r} is outside {base}")
    return path


def store(database: Engine, relative: str, payload: dict, conn: Connection | None = None) -> None:
    """Write `payload` under `relative` in the checkpoint store. A blob joins `conn`'s
    transaction when given (so it commits with the row that points at it); a file is written
    at once."""
    if not in_database(database):
        path = resolve(relative, database)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, payload)
        return
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    if conn is not None:
        blobs.put(conn, relative, buffer.getvalue())
        return
    with database.begin() as c:
        blobs.put(c, relative, buffer.getvalue())


def fetch(database: Engine, relative: str) -> dict | None:
    """The payload stored under `relative`, or None if nothing is (weights only, no code)."""
    if not in_database(database):
        path = resolve(relative, database)
        return read(path) if path.exists() else None
    data = blobs.get(database, relative)
    if data is None:
        return None
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def save(
    database: Engine,
    *,
    name: str,
    config: ModelConfig,
    model_state: dict,
    optimizer_state: dict | None,
    steps: int,
    parent_id: int | None,
    created_by: str | None,
    metrics: dict | None = None,
    activate: bool = False,
    job_id: int | None = None,
    working_model_id: int | None = None,
    sources: dict | None = None,
) -> int:
    """Write a new checkpoint: the file and its row (the row only once the file is safely on
    disk). Checkpoints are never written again after this: training makes new ones."""
    name = name.strip()[:120] or "model"
    with database.begin() as conn:
        cid = rows.insert(
            database,
            conn,
            name=name,
            parent_id=parent_id,
            created_by=created_by,
            feature_version=features.FEATURE_VERSION,
            config=config.to_dict(),
            metrics=metrics or {},
            file="pending",
            steps=steps,
            job_id=job_id,
            working_model_id=working_model_id,
            sources=sources,
        )
        rel = _file_for(cid, name)
        store(
            database,
            rel,
            {
                "format": FORMAT,
                "config": config.to_dict(),
                "feature_version": features.FEATURE_VERSION,
                "model": model_state,
                "optimizer": optimizer_state,
                "steps": steps,
            },
            conn,
        )
        conn.execute(
            rows.Checkpoint.__table__.update().where(rows.Checkpoint.id == cid).values(file=rel)
        )
    if activate:
        rows.activate(database, cid)
    return cid


def save_runner(database: Engine, runner, *, name: str, parent_id: int | None, **row) -> int:
    """Save a ModelRunner's current weights and optimizer as a new checkpoint (`row`: the
    other fields of `save`)."""
    model_state, optimizer_state, steps = runner.state()
    return save(database, name=name, config=runner.config, model_state=model_state,
                optimizer_state=optimizer_state, steps=steps, parent_id=parent_id,
                **row)  # fmt: skip


def load(database: Engine, checkpoint_id: int) -> tuple[ModelConfig, dict, dict | None]:
    """(config, model state, optimizer state) of a stored checkpoint."""
    row = rows.get(database, checkpoint_id)
    if row.feature_version != features.FEATURE_VERSION:
        raise ValueError(
            f"checkpoint {checkpoint_id} was trained on feature version {row.feature_version}, "
            f"this engine computes version {features.FEATURE_VERSION}"
        )
    payload = fetch(database, row.file)
    if payload is None:
        raise ValueError(
            f"checkpoint {checkpoint_id}'s weights ({row.file}) are not in this engine's "
            f"checkpoint store ({settings.checkpoint_store(str(database.url))}): engines that "
            "share a database must share the store too (CANDLELAB_CHECKPOINT_STORE)"
        )
    return ModelConfig.from_dict(payload["config"]), payload["model"], payload.get("optimizer")


def ensure_default(database: Engine) -> int:
    """The active checkpoint's id; on a fresh database, a new untrained default model."""
    current = rows.active(database)
    if current is not None:
        return current.id
    existing = rows.all_(database)
    if existing:
        rows.activate(database, existing[0].id)
        return existing[0].id
    torch.manual_seed(0)
    from engine.model import CandleTransformer

    cfg = ModelConfig()
    model = CandleTransformer(cfg)
    return save(
        database,
        name="default (untrained)",
        config=cfg,
        model_state=model.state_dict(),
        optimizer_state=None,
        steps=0,
        parent_id=None,
        created_by="engine",
        activate=True,
    )
