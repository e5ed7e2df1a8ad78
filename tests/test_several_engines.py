"""Several engines on one PostgreSQL database, as on several machines: real engine processes,
each with its own data directory where it matters.

- commands from four clients end exactly once while engines are killed and restarted;
- killing the engine that owns two sessions and a working model hands them to another engine
  within the lease, every candle predicted exactly once, learning lost within the autosave
  bound; an engine that stalls past its lease and comes back lets go instead of fighting;
- engines with separate data directories backtest each other's checkpoints;
- two engines never train one working model at once, even when a command is aimed at the
  wrong one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import func, select

from contract.vocab import COMMAND_FINAL
from db import bus, candles, connection, engines, jobs
from db import sessions as session_rows
from db import working_models as working_rows
from db.connection import readonly
from db.models import AuditEvent, Command, Job, TrainingEvent, utcnow
from engine.working import AUTOSAVE_STEPS
from market.importer import seed_samples
from tests.conftest import PG_URL, ROOT, EngineProcess, make_account, wait_until
from tests.test_crash_campaign import check_fills, newest_step, send
from tests.test_training import annotate_future_moves

LEASE_S = 15  # the bound for a takeover; the default heartbeat timeout is 5 s
CHAOS_COMMANDS = int(os.environ.get("CANDLELAB_CHAOS_COMMANDS", "4000"))  # 10,000: the run


@pytest.fixture
def fleet(pg_database, home):
    """Start engines by name on the test's PostgreSQL database (`own_home`: a data directory
    of its own, as on another machine); all are killed at the end."""
    make_account(pg_database, "ana")
    make_account(pg_database, "bo", "admin")
    seed_samples(pg_database)
    started: list[EngineProcess] = []

    def start(name: str, *args: str, own_home: bool = False) -> EngineProcess:
        where = home / f"machine-{name}" if own_home else home
        where.mkdir(exist_ok=True)
        proc = EngineProcess(where, "--no-seed", "--name", name, *args, database_url=PG_URL)
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.stop(signal.SIGKILL)


@contextlib.contextmanager
def logs_on_failure(*procs: EngineProcess):
    """Add the engines' logs to a failing assertion: what a failover did is only there."""
    try:
        yield
    except AssertionError as exc:
        tails = "\n".join(f"--- {p.args} ---\n{p.output()[-3000:]}" for p in procs)
        raise AssertionError(f"{exc}\n{tails}") from None


def instance(database, proc: EngineProcess) -> str:
    return wait_until(
        lambda: next((r.id for r in engines.alive(database) if r.pid == proc.proc.pid), None),
        30,
        what="the engine's row",
    )


def aimed_at(database, target: str, kind: str, payload: dict, who: str = "ana") -> int:
    """A command inserted straight into the table for one engine only, as a client that routed
    it wrongly (or by hand) would."""
    with database.begin() as conn:
        return conn.execute(
            Command.__table__.insert()
            .values(request_id=uuid.uuid4().hex, kind=kind, payload=json.dumps(payload),
                    status="pending", created_by=who, created_at=utcnow(), target=target)
            .returning(Command.id)
        ).scalar_one()  # fmt: skip


# -- exactly once, engines dying ------------------------------------------------------------


def _client(url: str, client: int, count: int) -> None:
    """One client process: `count` commands, mostly pings, some about a session nobody runs,
    some malformed, some unknown; every 25th is sent twice (a retry), which must not count."""
    database = connection.make_engine(url)
    rng = random.Random(client)
    for i in range(count):
        request_id = f"client{client}-{i}"
        roll = rng.random()
        if roll < 0.9:
            kind, payload = "ping", {}
        elif roll < 0.95:
            kind, payload = "session.stop", {"session_id": rng.randint(1, 5)}
        elif roll < 0.98:
            kind, payload = "ping", "{not json"
        else:
            kind, payload = "no.such.kind", {}
        for _ in range(2 if i % 25 == 0 else 1):
            bus.submit(database, kind, payload, created_by="ana", request_id=request_id)


@pytest.mark.timeout(900)
def test_commands_from_four_clients_end_exactly_once_while_engines_die(fleet, pg_database):
    rng = random.Random(11)
    names = ["e1", "e2", "e3"]
    procs = {name: fleet(name) for name in names}
    url = pg_database.url.render_as_string(hide_password=False)
    # Separate interpreters (not multiprocessing, whose children re-run the parent's __main__).
    clients = [
        subprocess.Popen([sys.executable, "-c", "import sys; from tests.test_several_engines "
                          "import _client; _client(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))",
                          url, str(c), str(CHAOS_COMMANDS // 4)], cwd=ROOT)
        for c in range(4)
    ]  # fmt: skip
    kills = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(1.0, 3.0))
        done = all(c.poll() is not None for c in clients) and not _open(pg_database)
        done = done and kills >= 3  # a fast machine still sees engines die
        if done:
            break
        victim = rng.choice(names)
        procs[victim].stop(signal.SIGKILL)
        kills += 1
        procs[victim] = fleet(victim)
    for c in clients:
        assert c.wait(60) == 0
    wait_until(lambda: not _open(pg_database), 120, 0.2, "every command to end")

    with readonly(pg_database).begin() as conn:
        rows = conn.execute(select(Command.id, Command.request_id, Command.status,
                                   Command.error, Command.result)).all()  # fmt: skip
        answers = dict(
            conn.execute(
                select(AuditEvent.target, func.count())
                .where(AuditEvent.target.like("command %"))
                .group_by(AuditEvent.target)
            ).all()
        )
    wanted = {f"client{c}-{i}" for c in range(4) for i in range(CHAOS_COMMANDS // 4)}
    assert {r.request_id for r in rows} == wanted, "a command was lost or made twice"
    assert len(rows) == len(wanted)
    assert {r.status for r in rows} <= set(COMMAND_FINAL)
    assert max(answers.values()) == 1, "a command was answered twice"
    for r in rows:
        if r.status == "done":  # answered once, by the engine that ran it
            assert answers.get(f"command {r.id}") == 1, r
        else:  # refused or failed with a reason; a kill's victims name the dead engine
            assert r.error, r
    interrupted = [r for r in rows if r.error and r.error.startswith("interrupted: engine")]
    ran_on = {engines_named(pg_database)[r.result["engine_id"]] for r in rows if r.result}
    print(f"{len(rows)} commands, {kills} kills, {len(interrupted)} interrupted by a kill, "
          f"done on {sorted(ran_on)}")  # fmt: skip
    assert kills >= 3 and ran_on == set(names)


def _open(database) -> int:
    with readonly(database).begin() as conn:
        return conn.scalar(
            select(func.count()).where(Command.status.in_(("pending", "running")))
        )  # fmt: skip


def engines_named(database) -> dict[str, str]:
    """Instance id → engine name, dead or alive."""
    with readonly(database).begin() as conn:
        from db.models import EngineInstance

        return dict(conn.execute(select(EngineInstance.id, EngineInstance.name)).all())


# -- failover -------------------------------------------------------------------------------


def _replay(database, candles_back: int, pace_s: float) -> dict:
    ts = candles.load(database, "SP500", "1d").ts
    feed = {"kind": "replay", "pace_s": pace_s, "start_ts": int(ts.iloc[-candles_back])}
    return {"symbol": "SP500", "timeframe": "1d", "feed": feed}


def _owners(database, session_ids) -> set[str | None]:
    return {session_rows.get(database, s).engine_id for s in session_ids}


def test_the_owner_dies_and_another_engine_resumes_its_sessions_and_model(fleet, pg_database):
    common = _replay(pg_database, 1000, 0.02)
    a, b, c = fleet("a"), fleet("b"), fleet("c")
    a_id = instance(pg_database, a)
    others = {instance(pg_database, b), instance(pg_database, c)}
    frozen = _done(pg_database, aimed_at(pg_database, a_id, "session.start",
                                         {**common, "mode": "none"}))  # fmt: skip
    learner = _done(pg_database, aimed_at(pg_database, a_id, "session.start",
                                          {**common, "mode": "every_candle"}))  # fmt: skip
    sids, wm = [frozen["session_id"], learner["session_id"]], learner["working_model_id"]
    assert _owners(pg_database, sids) == {a_id}
    assert working_rows.get(pg_database, wm).engine_id == a_id
    wait_until(lambda: newest_step(pg_database, wm) >= 30, 60, 0.05, "some learning")

    a.stop(signal.SIGKILL)
    killed = time.monotonic()
    before = {s: session_rows.get(pg_database, s).candles for s in sids}
    with logs_on_failure(b, c):
        wait_until(
            lambda: _owners(pg_database, sids) <= others
            and all(session_rows.get(pg_database, s).candles > before[s] for s in sids),
            LEASE_S, 0.05, "another engine to resume both sessions",
        )  # fmt: skip
    took = time.monotonic() - killed
    assert working_rows.get(pg_database, wm).engine_id in others
    wait_until(
        lambda: all(session_rows.get(pg_database, s).status == "finished" for s in sids),
        120, 0.2, "both sessions to finish their replay",
    )  # fmt: skip
    check_fills(pg_database, sids)  # every candle once, fills follow the stored predictions
    for s in sids:
        assert session_rows.get(pg_database, s).candles == 1000
    lost = working_rows.get(pg_database, wm).lost_steps
    print(f"takeover after kill -9: {took:.2f} s; learning lost: {lost} steps")
    assert lost <= AUTOSAVE_STEPS


def test_an_engine_that_stalls_past_its_lease_lets_go_when_it_returns(fleet, pg_database):
    a, b = fleet("a"), fleet("b")
    a_id, b_id = instance(pg_database, a), instance(pg_database, b)
    common = _replay(pg_database, 600, 0.02)
    sid = _done(pg_database, aimed_at(pg_database, a_id, "session.start",
                                      {**common, "mode": "pivots_only"}))["session_id"]  # fmt: skip
    wait_until(lambda: session_rows.get(pg_database, sid).candles > 20, 30, what="candles")
    a.proc.send_signal(signal.SIGSTOP)  # a stall: alive, silent
    try:
        wait_until(lambda: _owners(pg_database, [sid]) == {b_id}, LEASE_S, 0.1, "b to take over")
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert a.proc.wait(timeout=30) is not None, "the stale engine should stop by itself"
    assert "found dead by another engine" in a.output()
    wait_until(lambda: session_rows.get(pg_database, sid).status == "finished", 60, 0.2,
               "the session to finish on b")  # fmt: skip
    check_fills(pg_database, [sid])
    assert session_rows.get(pg_database, sid).candles == 600


# -- shared checkpoints ---------------------------------------------------------------------


def test_engines_with_separate_data_directories_backtest_each_others_checkpoints(
    fleet, pg_database, home
):
    annotate_future_moves(pg_database, "SP500")
    procs = {name: fleet(name, own_home=True) for name in ("a", "b")}
    ids = {name: instance(pg_database, p) for name, p in procs.items()}
    made = {}
    for name in ("a", "b"):  # each trains a checkpoint ...
        cmd = aimed_at(pg_database, ids[name], "train.start", {"epochs": 1, "name": name})
        job_id = bus.wait(pg_database, cmd, 30).result["job_id"]
        job = wait_until(lambda j=job_id: _ended(pg_database, j), 180, 0.2, "training")
        assert job.status == "done" and job.engine_id == ids[name], job.message
        made[name] = job.result["checkpoint_id"]
    for name, other in (("a", "b"), ("b", "a")):  # ... and backtests the other's
        window = _replay(pg_database, 300, 0)
        cmd = aimed_at(pg_database, ids[name], "backtest.start",
                       {"symbol": "SP500", "timeframe": "1d", "checkpoint_id": made[other],
                        "start": window["feed"]["start_ts"]})  # fmt: skip
        row = bus.wait(pg_database, cmd, 30)
        assert row.status == "done", row.error
        job = wait_until(lambda r=row: _ended(pg_database, r.result["job_id"]), 120, 0.2, "bt")
        assert job.status == "done" and job.engine_id == ids[name], job.message
    for name in ("a", "b"):  # nothing of the weights lives in either data directory
        assert not list((home / f"machine-{name}").rglob("*.pt"))


def _done(database, command_id: int) -> dict:
    row = bus.wait(database, command_id, 60)
    assert row.status == "done", row.error
    return row.result


def _ended(database, job_id: int):
    job = jobs.get(database, job_id)
    return job if job.status not in jobs.UNFINISHED else None


# -- one trainer per working model ----------------------------------------------------------


def test_two_engines_never_train_one_working_model_at_once(fleet, pg_database):
    annotate_future_moves(pg_database, "SP500")
    procs = [fleet("a"), fleet("b")]
    ids = [instance(pg_database, p) for p in procs]
    first = send(pg_database, "train.start", {"epochs": 1})
    wm = first["working_model_id"]
    owner = working_rows.get(pg_database, wm).engine_id
    other = next(i for i in ids if i != owner)
    # Six more jobs on it: three through the bus, three aimed straight at the other engine.
    cmds = [bus.submit(pg_database, "train.start", {"working_model_id": wm, "epochs": 1},
                       created_by="ana") for _ in range(3)]  # fmt: skip
    cmds += [aimed_at(pg_database, other, "train.start", {"working_model_id": wm, "epochs": 1})
             for _ in range(3)]  # fmt: skip
    job_ids = [first["job_id"]]
    for cid in cmds:
        row = bus.wait(pg_database, cid, 60)
        assert row.status == "done", row.error
        assert row.claimed_by == owner, "a command about the model ran on another engine"
        job_ids.append(row.result["job_id"])
    for job_id in job_ids:
        job = wait_until(lambda j=job_id: _ended(pg_database, j), 300, 0.2, "the jobs")
        assert job.status == "done" and job.engine_id == owner, job.message
    with readonly(pg_database).begin() as conn:
        steps = conn.scalars(
            select(TrainingEvent.step).where(
                TrainingEvent.working_model_id == wm, TrainingEvent.skipped.is_(False)
            ).order_by(TrainingEvent.id)
        ).all()  # fmt: skip
        on = set(conn.scalars(select(Job.engine_id).where(Job.working_model_id == wm)))
    assert on == {owner}
    assert steps == sorted(set(steps)), "two trainers interleaved their steps"
    assert steps == list(range(steps[0], steps[0] + len(steps)))


def test_new_sessions_go_to_the_least_loaded_engine(fleet, pg_database):
    procs = [fleet(n, "--max-sessions", "2") for n in ("a", "b", "c")]
    ids = {instance(pg_database, p) for p in procs}
    common = _replay(pg_database, 200, 1.0)
    placed = [send(pg_database, "session.start", {**common, "mode": "none"}, "bo")["session_id"]
              for _ in range(6)]  # fmt: skip
    counts = {}
    for sid in placed:
        owner = session_rows.get(pg_database, sid).engine_id
        counts[owner] = counts.get(owner, 0) + 1
    assert set(counts) == ids and set(counts.values()) == {2}
    full = bus.wait(pg_database, bus.submit(pg_database, "session.start",
                    {**common, "mode": "none"}, created_by="bo"), 30)  # fmt: skip
    assert full.status == "failed" and "max-sessions" in full.error
    assert {load.sessions for load in engines.loads(pg_database)} == {2}
