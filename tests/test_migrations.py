"""The schema comes from migrations, and the models never drift from them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

import db
from db import bus
from db.migrate import current_revision, head_revision, upgrade
from db.models import Base


def test_empty_database_is_upgraded_to_head(database):
    assert current_revision(database) == head_revision()
    tables = set(inspect(database).get_table_names())
    assert {"commands", "engines", "jobs", "candles", "imports"} <= tables


def test_models_and_migrations_agree(database):
    with database.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == [], f"models changed without a migration: {diff}"


def test_upgrading_again_keeps_data(database):
    cid = bus.submit(database, "ping")
    upgrade(database)
    db.init()
    assert bus.get(database, cid).kind == "ping"


def test_sqlite_runs_in_wal_with_a_busy_timeout(database):
    with database.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
