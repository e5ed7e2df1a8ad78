"""Where Candle Lab keeps its data, read from the environment once per call.

`CANDLELAB_HOME` is the data directory (database file, checkpoints, uploads); it defaults to
`~/.candlelab`. `DATABASE_URL` points at another database (PostgreSQL) instead of the embedded
SQLite file inside the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data directory, created on first use."""
    path = Path(os.environ.get("CANDLELAB_HOME") or Path.home() / ".candlelab").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """`DATABASE_URL` if set, else the SQLite file `candlelab.db` in the data directory."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return normalise_url(url)
    return f"sqlite:///{home() / 'candlelab.db'}"


def normalise_url(url: str) -> str:
    """postgres:// and postgresql:// URLs use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def heartbeat_timeout_s() -> float:
    """An engine whose last heartbeat is older than this is offline (default 5 s)."""
    return float(os.environ.get("CANDLELAB_HEARTBEAT_TIMEOUT", "5"))


def checkpoint_store(url: str) -> str:
    """Where checkpoint weights and working-model state live for the database at `url`:
    `database` (the `blobs` table, which every engine sharing the database reads) or a
    directory (every engine must see the same one, e.g. a network file system).

    `CANDLELAB_CHECKPOINT_STORE` chooses; by default PostgreSQL keeps them in the database,
    since engines on several machines share it, and the embedded SQLite file keeps them under
    the data directory."""
    chosen = os.environ.get("CANDLELAB_CHECKPOINT_STORE", "").strip()
    if chosen:
        return chosen
    return "database" if url.startswith("postgresql") else str(home())
