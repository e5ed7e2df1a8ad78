"""The schema comes from migrations, and the models never drift from them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

import db
from db import bus
from db.migrate import current_revision, head_revision, upgrade
from db.models import Base


def test_empty_database_is_upgraded_to_head(any_database):
    assert current_revision(any_database) == head_revision()
    tables = set(inspect(any_database).get_table_names())
    assert {"commands", "engines", "jobs", "candles", "imports"} <= tables


def test_models_and_migrations_agree(any_database):
    with any_database.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == [], f"models changed without a migration: {diff}"


def test_upgrading_again_keeps_data(any_database):
    cid = bus.submit(any_database, "ping")
    upgrade(any_database)
    db.init(any_database.url.render_as_string(hide_password=False))
    assert bus.get(any_database, cid).kind == "ping"


def test_sqlite_runs_in_wal_with_a_busy_timeout(database):
    with database.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
