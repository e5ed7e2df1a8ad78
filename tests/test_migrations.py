"""The schema comes from migrations, and the models never drift from them."""

from __future__ import annotations

import json

import numpy as np
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

import db
from contract.access import SYSTEM_ACCOUNT
from contract.vocab import ACTIONS
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


def test_every_column_of_files_is_stored_uncompressed_on_postgresql(pg_database):
    """Numpy archives and checkpoints barely compress, and PostgreSQL's default compression of
    a large value runs in the writer's transaction (1.2 s for a million-candle report, 0.2 s
    without): 0011 sets every bytea column EXTERNAL, and a new one must be added there."""
    from sqlalchemy import LargeBinary

    files = {(t.name, c.name) for t in Base.metadata.tables.values() for c in t.columns
             if isinstance(c.type, LargeBinary)}  # fmt: skip
    with pg_database.connect() as conn:
        stored = conn.execute(text(
            "SELECT c.relname, a.attname, a.attstorage FROM pg_attribute a JOIN pg_class c "
            "ON a.attrelid = c.oid JOIN pg_namespace n ON c.relnamespace = n.oid WHERE "
            "n.nspname = 'public' AND a.atttypid = 'bytea'::regtype AND NOT a.attisdropped"
        )).all()  # fmt: skip
    assert {(t, c) for t, c, _ in stored} == files and len(files) >= 4
    assert {s for _, _, s in stored} == {"e"}, stored


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


def test_backtest_predictions_and_equity_move_into_one_series_blob_and_back(any_empty_database):
    """0008 moves every report's prediction rows and whole equity JSON into one array blob
    (db/series.py) and keeps the curve decimated in the row; downgrading restores both."""
    from alembic import command

    from db import backtests
    from db.migrate import alembic_config

    engine = any_empty_database
    upgrade(engine, "0007")
    n = 20_000
    ts = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 3_600_000
    equity = 10_000 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, n)))
    probs = np.random.default_rng(2).dirichlet([1, 1, 1], n).astype(np.float32)
    now = "2026-01-01 00:00:00"
    trades = [{"entry_time": "2020-09-13T12:00:00+00:00", "exit_time": "2020-09-14T01:00:00+00:00",
               "side": side, "entry_price": 1.5, "exit_price": 2.25, "pnl": 7.0, "return_pct": 0.1,
               "fees": 0.25, "open_at_end": side == "short"} for side in ("long", "short")]  # fmt: skip
    with engine.begin() as conn:
        for bid, curve in ((1, {"ts": ts.tolist(), "equity": equity.tolist()}), (2, None)):
            conn.execute(
                text(
                    "INSERT INTO backtests (id, symbol, timeframe, settings, status, equity,"
                    " trades, created_at) VALUES (:id, 'X', '1h', '{}', 'done', :eq, :tr, :now)"
                ),
                {
                    "id": bid,
                    "eq": None if curve is None else json.dumps(curve),
                    "now": now,
                    "tr": json.dumps({"rows": trades if curve else []}),
                },  # fmt: skip
            )
        conn.execute(
            text(
                "INSERT INTO backtest_predictions (backtest_id, ts, action, p_buy, p_sell, p_hold)"
                " VALUES (1, :ts, :a, :b, :s, :h)"
            ),
            [
                {
                    "ts": int(t),
                    "a": ACTIONS[int(p.argmax())],
                    "b": float(p[0]),
                    "s": float(p[1]),
                    "h": float(p[2]),
                }
                for t, p in zip(ts, probs, strict=True)
            ],  # fmt: skip
        )
    upgrade(engine)
    kept = backtests.arrays(engine, 1)
    assert np.array_equal(kept["ts"], ts) and np.array_equal(kept["equity"], equity)
    assert np.array_equal(kept["probs"], probs) and backtests.arrays(engine, 2) is None
    row = backtests.get(engine, 1)
    assert 2_000 < len(row.equity["ts"]) <= 4 * 2_000 + 1
    assert max(row.equity["equity"]) == equity.max() and min(row.equity["equity"]) == equity.min()
    assert backtests.predictions(engine, 1).action.tolist() == [ACTIONS[i] for i in probs.argmax(1)]
    assert backtests.trades(engine, 1).to_dict("records") == trades
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")
    with engine.connect() as conn:
        back, back_trades = conn.execute(
            text("SELECT equity, trades FROM backtests WHERE id = 1")
        ).one()
        rows = conn.execute(text("SELECT count(*), sum(p_buy) FROM backtest_predictions")).one()
    back = back if isinstance(back, dict) else json.loads(back)  # PostgreSQL's json is parsed
    assert back == {"ts": ts.tolist(), "equity": equity.tolist()}
    back_trades = back_trades if isinstance(back_trades, dict) else json.loads(back_trades)
    assert back_trades == {"rows": trades}
    assert rows[0] == n and abs(rows[1] - probs[:, 0].astype(float).sum()) < 1e-6
