"""The database: models, migrations, the command bus. Imported by the engine and the views;
imports neither (no torch, no Streamlit)."""

from db.connection import get_engine, readonly
from db.migrate import upgrade


def init(url: str | None = None):
    """The engine for `url` (default from the environment), schema upgraded to the newest."""
    engine = get_engine(url)
    upgrade(engine)
    return engine


__all__ = ["get_engine", "init", "readonly", "upgrade"]
