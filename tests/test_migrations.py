"""The schema comes from migrations, and the models never drift from them."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

import db
from contract.access import SYSTEM_ACCOUNT
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
    cid = bus.submit(any_database, "ping", created_by=SYSTEM_ACCOUNT)
    upgrade(any_database)
    db.init(any_database.url.render_as_string(hide_password=False))
    assert bus.get(any_database, cid).kind == "ping"


def test_sqlite_runs_in_wal_with_a_busy_timeout(database):
    with database.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000


def test_upgrading_a_database_with_sessions_and_their_predictions_keeps_everything(
    any_empty_database,
):
    """0005 adds columns to tables that others point at (sessions ← predictions, trades,
    pivots): it must alter them in place, with foreign keys enforced, on both backends."""
    engine = any_empty_database
    upgrade(engine, "0004")
    now = "2026-01-01 00:00:00"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO checkpoints (id, name, created_at, feature_version, config, file, steps,"
                f" is_active) VALUES (1, 'default', '{now}', 1, '{{}}', 'checkpoints/x.pt', 0, true)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO sessions (id, symbol, timeframe, checkpoint_id, mode, feed, settings,"
                f" status, created_at, candles) VALUES (1, 'SP500', '1d', 1, 'every_candle', '{{}}',"
                f" '{{}}', 'running', '{now}', 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO predictions (session_id, ts, action, p_buy, p_sell, p_hold, confidence,"
                f" ghost, model_step, latency_ms, created_at) VALUES (1, 5, 'BUY', 0.5, 0.3, 0.2, 0.5,"
                f" '{{}}', 0, 1.0, '{now}')"
            )
        )
        conn.execute(text(
            "INSERT INTO training_events (model_key, source, session_id, samples, lock_wait_ms,"
            f" duration_ms, skipped, created_at) VALUES ('m', 'pivot', 1, 1, 0, 0, false, '{now}')"
        ))  # fmt: skip
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        session = conn.execute(text("SELECT * FROM sessions")).mappings().one()
        event = conn.execute(text("SELECT * FROM training_events")).mappings().one()
        predictions = conn.execute(text("SELECT count(*) FROM predictions")).scalar()
    assert (session["mode"], session["working_model_id"], session["samples_dropped"]) == (
        "every_candle", None, 0,
    )  # fmt: skip
    assert predictions == 1 and not event["lost"] and event["working_model_id"] is None
