"""`python -m engine migrate-to URL`: a real SQLite installation moved into PostgreSQL."""

from __future__ import annotations

import json
import signal

import torch
from sqlalchemy import JSON, func, insert, inspect, select

from contract.access import SYSTEM_ACCOUNT
from db import accounts, annotations, backtests, bus, candles, engines, transfer
from db import checkpoints as checkpoint_rows
from db import sessions as session_rows
from db import working_models as working_rows
from db.models import Base, Command, utcnow
from engine import checkpoints
from market.importer import seed_samples
from tests.conftest import PG_URL, make_account, run_cli, wait_until

PASSWORD = "correct horse battery"


def send(database, kind, payload, timeout=20):
    row = bus.wait(database, bus.submit(database, kind, payload, created_by="ana"), timeout)
    assert row.status == "done", row.error
    return row.result


def rows(engine, table) -> list[tuple]:
    """Every row of `table` in key order, with, for each JSON column, whether it is SQL NULL
    (as opposed to JSON null)."""
    flags = [c.is_(None) for c in table.columns if isinstance(c.type, JSON)]
    with engine.connect() as conn:
        q = select(*table.columns, *flags).order_by(*table.primary_key.columns)
        return [tuple(r) for r in conn.execute(q)]


def count_all(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return transfer.counts(conn)


def populate(database, engine_process, home, pg) -> dict:
    """An installation used as people use it: accounts, candles, annotations, a backtest, a
    learning session that finished, one still running when its engine was killed, audit."""
    make_account(database, "ana", "trader", password=PASSWORD)
    make_account(database, "root", "admin", password=PASSWORD + "!")
    assert accounts.sign_in(database, "ana", "wrong password!").error  # an audited refusal
    seed_samples(database)
    checkpoints.ensure_default(database)
    ts = candles.load(database, "SP500", "1d").ts
    a1 = annotations.create(database, annotations.AnnotationIn(
        "SP500", "1d", int(ts.iloc[-50]), int(ts.iloc[-40]), "long", "breakout"), "ana")  # fmt: skip
    a2 = annotations.create(database, annotations.AnnotationIn(
        "SP500", "1d", int(ts.iloc[-30]), int(ts.iloc[-20]), "short"), "ana")  # fmt: skip
    annotations.delete(database, a2, "ana")

    live = engine_process("--no-seed")
    bid = send(database, "backtest.start", {"symbol": "SP500", "timeframe": "1d",
               "start": "2018-01-01", "end": "2018-06-30", "name": "h1"})["backtest_id"]  # fmt: skip
    wait_until(lambda: backtests.get(database, bid).status == "done", 60, 0.1, "the backtest")
    feed = {"kind": "replay", "pace_s": 0.0, "start_ts": int(ts.iloc[-25])}
    done_sid = send(database, "session.start", {"symbol": "SP500", "timeframe": "1d",
                    "mode": "every_candle", "feed": feed})["session_id"]  # fmt: skip
    wait_until(lambda: session_rows.get(database, done_sid).status == "finished", 60, 0.1,
               "the replay to finish")  # fmt: skip
    wm = session_rows.get(database, done_sid).working_model_id
    wait_until(lambda: working_rows.get(database, wm).state_file, 30, 0.1, "a state file")
    feed = {"kind": "replay", "pace_s": 0.2, "start_ts": int(ts.iloc[-300])}
    running_sid = send(database, "session.start", {"symbol": "SP500", "timeframe": "1d",
                       "mode": "none", "feed": feed})["session_id"]  # fmt: skip
    wait_until(lambda: session_rows.get(database, running_sid).candles >= 2, 30, 0.05, "candles")

    refused = run_cli(home, "migrate-to", PG_URL)  # the engine is still running
    assert refused.returncode == 1 and "an engine is running" in refused.stderr, refused.stderr
    assert inspect(pg).get_table_names() == []  # not even the schema was made

    instance = engines.alive(database)[0].id
    live.stop(signal.SIGKILL)  # recorded as running; its work left mid-way
    assert engines.alive(database) == []
    with database.begin() as conn:  # a command it was running when it died
        running_cmd = conn.execute(insert(Command).values(
            request_id="r-running", kind="ping", payload="{}", status="running",
            created_by="ana", claimed_by=instance, created_at=utcnow(),
            claimed_at=utcnow()).returning(Command.id)).scalar_one()  # fmt: skip
    pending_cmd = bus.submit(database, "ping", {}, created_by="ana")
    gone = checkpoints.save(database, name="gone", config=checkpoints.ModelConfig(),
                            model_state={"w": torch.zeros(1)}, optimizer_state=None, steps=0,
                            parent_id=None, created_by="ana")  # fmt: skip
    gone_file = checkpoint_rows.get(database, gone).file
    checkpoints.resolve(gone_file, database).unlink()
    return dict(backtest=bid, done_sid=done_sid, running_sid=running_sid, working_model=wm,
                annotation=a1, instance=instance, running_cmd=running_cmd,
                pending_cmd=pending_cmd, gone=gone, gone_file=gone_file)  # fmt: skip


def test_migrate_to_moves_everything_and_refuses_a_target_with_data(
    database, home, engine_process, empty_pg_database, monkeypatch
):
    monkeypatch.delenv("CANDLELAB_CHECKPOINT_STORE", raising=False)
    made = populate(database, engine_process, home, empty_pg_database)
    before = {t.name: rows(database, t) for t in transfer.tables()}

    done = run_cli(home, "migrate-to", PG_URL, "--json", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert "  candles " in done.stderr  # progress per table, then the summary
    assert f"all {len(transfer.tables())} tables match" in done.stderr
    pg = empty_pg_database
    assert checkpoints.in_database(pg)

    # Every table: the same rows, keys, SQL NULLs; only what the move must change differs.
    src_counts, pg_counts = count_all(database), count_all(pg)
    copied_files = report["files"]["copied"]
    assert report["ok"] and report["missing_files"] == {
        made["gone_file"]: [f"checkpoint {made['gone']}"]
    }
    assert "warning: " + made["gone_file"] in done.stderr
    with database.connect() as conn:
        referenced = transfer.files(conn)
    # The default checkpoint, the one the session saved when it finished, its working model's
    # state; not the one whose file is gone.
    assert sorted(copied_files) == sorted(set(referenced) - {made["gone_file"]})
    assert len(copied_files) == 3
    assert pg_counts == {**src_counts, "blobs": src_counts["blobs"] + len(copied_files)}
    for table in transfer.tables():
        if table.name in ("engines", "commands", "blobs"):
            continue
        assert rows(pg, table) == before[table.name], table.name
    assert rows(database, Base.metadata.tables["engines"]) == before["engines"]  # source as it was

    # Engines: history kept, none alive; the dead one's work closed out as a takeover would.
    (moved,) = [e for e in engines.unstopped(database)]
    assert engines.alive(pg) == [] and engines.unstopped(pg) == []
    with pg.connect() as conn:
        reason = conn.scalar(select(Base.metadata.tables["engines"].c.stop_reason)
                             .where(Base.metadata.tables["engines"].c.id == moved.id))  # fmt: skip
    assert reason == transfer.MOVED and report["engines_stopped"] == [made["instance"]]
    assert bus.get(pg, made["running_cmd"]).status == "failed"
    assert bus.get(pg, made["pending_cmd"]).status == "pending"  # runs on the new engines
    assert report["commands_failed"] == [made["running_cmd"]] and report["pending_commands"] == 1
    assert session_rows.get(pg, made["running_sid"]).status == "running"  # resumes there
    assert report["running_sessions"] == 1

    # What people look at: sessions, predictions, the backtest report, annotations.
    for sid in (made["done_sid"], made["running_sid"]):
        assert session_rows.summary(pg, sid) == session_rows.summary(database, sid)
        src_preds = session_rows.predictions(database, sid)
        assert len(src_preds) and session_rows.predictions(pg, sid).equals(src_preds)
    assert backtests.report(pg, made["backtest"]) == backtests.report(database, made["backtest"])
    assert annotations.get(pg, made["annotation"]).note == "breakout"
    assert len(annotations.list_for(pg, "SP500", "1d")) == 1  # the deleted one stays deleted

    # Weights: the checkpoints and the working model's state load from the database store.
    kept = [c.id for c in checkpoint_rows.all_(database) if c.id != made["gone"]]
    assert len(kept) == 2
    for cid in kept:
        cfg, state, _ = checkpoints.load(pg, cid)
        cfg0, state0, _ = checkpoints.load(database, cid)
        assert cfg == cfg0 and state.keys() == state0.keys()
        assert all(torch.equal(state[k], state0[k]) for k in state)
    rel = working_rows.get(pg, made["working_model"]).state_file
    assert checkpoints.fetch(pg, rel)["steps"] == checkpoints.fetch(database, rel)["steps"] > 0

    # Accounts sign in with their passwords; new rows get fresh ids (sequences reset).
    signed = accounts.sign_in(pg, "ana", PASSWORD)
    assert signed.token and signed.account.role == "trader"
    assert accounts.sign_in(pg, "root", PASSWORD).error  # still the wrong password
    ts = candles.load(pg, "SP500", "1d").ts
    new = annotations.create(pg, annotations.AnnotationIn(
        "SP500", "1d", int(ts.iloc[-9]), int(ts.iloc[-5]), "long"), "ana")  # fmt: skip
    assert new == src_counts["annotations"] + 1
    new_cmd = bus.submit(pg, "ping", {}, created_by="ana")
    assert new_cmd == max(r[0] for r in before["commands"]) + 1

    # A target with data is refused, and left as it was.
    with pg.connect() as conn:
        audit_max = conn.scalar(select(func.max(Base.metadata.tables["audit_events"].c.id)))
    assert audit_max > max(r[0] for r in before["audit_events"])
    after = count_all(pg)
    again = run_cli(home, "migrate-to", PG_URL)
    assert again.returncode == 1 and "not empty" in again.stderr, again.stderr
    assert "nothing was changed" in again.stderr and count_all(pg) == after
    checked = run_cli(home, "migrate-to", PG_URL, "--check")
    assert checked.returncode == 1 and "would refuse" in checked.stdout
    assert SYSTEM_ACCOUNT in {a.name for a in accounts.all_(pg)}


def test_tables_of_files_are_read_a_row_at_a_time_and_copied_in_parts_of_bounded_bytes(
    database, monkeypatch
):
    """A dataset's candle snapshot can be hundreds of MB: parts are cut by their bytes too."""
    from db.models import CandleSnapshot

    seed_samples(database)  # two datasets, each kept whole by its import
    table = CandleSnapshot.__table__
    query = select(table).order_by(*table.primary_key.columns)
    for limit, sizes in ((10**9, [2]), (1, [1, 1])):
        monkeypatch.setattr(transfer, "BLOB_CHUNK_BYTES", limit)
        with database.connect() as conn:
            result = conn.execute(query, execution_options={"yield_per": 1})
            parts = list(transfer._parts(result, transfer.BLOB_CHUNK, ["data"]))
        assert [len(p) for p in parts] == sizes
        assert [r.symbol for p in parts for r in p] == ["NASDAQ", "SP500"]
