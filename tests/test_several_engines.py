"""Several engines on one PostgreSQL database, as on several machines: real engine processes,
each with its own data directory.

- commands from four clients end exactly once while engines are killed and restarted;
- killing the engine that owns two sessions and a working model hands them to another engine
  within the lease, every candle predicted exactly once, learning lost within the autosave
  bound; an engine that stalls past its lease and comes back lets go instead of fighting;
- engines with separate data directories backtest each other's checkpoints;
- two engines never train one working model at once, even when a command is aimed at the
  wrong one;
- new sessions go to the least-loaded engine, and none past an engine's limit.

Starting engines is most of what these tests cost, so they share one fleet of three (`fleet`):
each test reads only what it made, and gets the fleet whole and idle (engines that a test killed
are restarted first; after a test that left something running, the database and the fleet
start afresh).
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
import sqlalchemy as sa
from sqlalchemy import func, select

import db
from contract.vocab import COMMAND_FINAL
from db import bus, candles, connection, engines, jobs
from db import sessions as session_rows
from db import working_models as working_rows
from db.connection import readonly
from db.models import AuditEvent, Command, Job, TrainingEvent, utcnow
from engine.working import AUTOSAVE_STEPS
from market.importer import seed_samples
from tests.conftest import (
    PG_URL,
    ROOT,
    EngineProcess,
    make_account,
    settings_url,
    wait_until,
    wiped_pg_database,
)
from tests.test_crash_campaign import check_fills, newest_step, send
from tests.test_training import annotate_future_moves

LEASE_S = 15  # the bound for a takeover; the default heartbeat timeout is 5 s
CHAOS_COMMANDS = int(os.environ.get("CANDLELAB_CHAOS_COMMANDS", "2000"))  # 10,000: the run
NAMES = ("a", "b", "c")
MAX_SESSIONS = 2  # per engine: the least-loaded test fills them; no other test runs more on one


class Fleet:
    """Engines `NAMES` (`serve --max-sessions MAX_SESSIONS`), each with a data directory of its
    own under `root`, as on another machine, on the test PostgreSQL database."""

    def __init__(self, root) -> None:
        self.root = root
        self.procs: dict[str, EngineProcess] = {}
        self.database = None
        self.annotated = False

    def fresh(self) -> None:
        """A new database (the accounts ana and bo, the sample data) and three new engines."""
        self.stop_all()
        wiped_pg_database()
        self.database = db.init(settings_url(PG_URL))
        make_account(self.database, "ana")
        make_account(self.database, "bo", "admin")
        seed_samples(self.database)
        self.annotated = False
        self.start(*NAMES)

    def start(self, *names: str) -> None:
        """(Re)start engines by name, side by side, and wait until each is online."""
        for name in names:
            where = self.root / f"machine-{name}"
            where.mkdir(exist_ok=True)
            args = ("--no-seed", "--name", name, "--max-sessions", str(MAX_SESSIONS))
            # Kept before it is up, so that one which never comes up is still killed.
            self.procs[name] = EngineProcess(where, *args, database_url=PG_URL).start(wait=False)
        for name in names:
            proc = self.procs[name]
            wait_until(lambda p=proc: self._online(p) or p.proc.poll() is not None, 60, 0.05,
                       f"engine {name} to come online")  # fmt: skip
            assert proc.proc.poll() is None, f"engine {name} exited early:\n{proc.output()}"

    def _online(self, proc: EngineProcess) -> bool:
        return any(r.pid == proc.proc.pid for r in engines.alive(self.database))

    def kill(self, name: str) -> None:
        self.procs[name].stop(signal.SIGKILL)

    def idle(self) -> bool:
        """Exactly these engines alive (a killed one's row no longer counts), nothing running."""
        d = self.database
        return (
            sorted(r.pid for r in engines.alive(d))
            == sorted(p.proc.pid for p in self.procs.values())
            and session_rows.running_count(d) == 0
            and jobs.running_count(d) == 0
            and _open(d) == 0
        )

    def ready(self) -> Fleet:
        """Restart what a test killed or stopped, then wait until the fleet is idle; start
        afresh when it does not become so (a test failed half-way)."""
        if self.database is None:
            self.fresh()
        self.start(*(name for name, p in self.procs.items() if p.proc.poll() is not None))
        try:
            wait_until(self.idle, 30, 0.2, "the fleet to be whole and idle")
        except AssertionError:
            self.fresh()
            wait_until(self.idle, 30, 0.2, "a fresh fleet to be idle")
        return self

    def annotate(self) -> None:
        """Hindsight annotations to train on, made once for the module."""
        if not self.annotated:
            annotate_future_moves(self.database, "SP500")
            self.annotated = True

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.proc.poll() is None:
                proc.stop(signal.SIGKILL)
        self.procs = {}


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    fleet = Fleet(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CANDLELAB_HOME", str(root))
        mp.delenv("DATABASE_URL", raising=False)
        try:
            yield fleet
        finally:
            fleet.stop_all()
            connection.dispose_all()


@pytest.fixture
def fleet(shared_fleet) -> Fleet:
    """The module's three engines, whole and idle."""
    return shared_fleet.ready()


@pytest.fixture
def pg_database(fleet):
    """The fleet's PostgreSQL database (shared by this module's tests, unlike conftest's)."""
    return fleet.database


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


CHAOS = "chaos-client"  # the chaos test's request ids: "chaos-client<client>-<i>"
NOBODYS_SESSIONS = 1_000_000  # session ids past any this module makes


def _client(url: str, client: int, count: int) -> None:
    """One client process: `count` commands, mostly pings, some about a session nobody runs,
    some malformed, some unknown; every 25th is sent twice (a retry), which must not count."""
    database = connection.make_engine(url)
    rng = random.Random(client)
    for i in range(count):
        request_id = f"{CHAOS}{client}-{i}"
        roll = rng.random()
        if roll < 0.9:
            kind, payload = "ping", {}
        elif roll < 0.95:
            kind, payload = "session.stop", {"session_id": NOBODYS_SESSIONS + rng.randint(1, 5)}
        elif roll < 0.98:
            kind, payload = "ping", "{not json"
        else:
            kind, payload = "no.such.kind", {}
        for _ in range(2 if i % 25 == 0 else 1):
            bus.submit(database, kind, payload, created_by="ana", request_id=request_id)


@pytest.mark.timeout(900)
def test_commands_from_four_clients_end_exactly_once_while_engines_die(fleet, pg_database):
    rng = random.Random(11)
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
        done = all(c.poll() is not None for c in clients) and not _open(pg_database, CHAOS)
        done = done and kills >= 3  # a fast machine still sees engines die
        if done:
            break
        victim = rng.choice(NAMES)
        fleet.kill(victim)
        kills += 1
        fleet.start(victim)
    for c in clients:
        assert c.wait(60) == 0
    wait_until(lambda: not _open(pg_database, CHAOS), 120, 0.2, "every command to end")

    with readonly(pg_database).begin() as conn:
        rows = conn.execute(select(Command.id, Command.request_id, Command.status,
                                   Command.error, Command.result)
                            .where(Command.request_id.like(f"{CHAOS}%"))).all()  # fmt: skip
        answers = dict(
            conn.execute(
                select(AuditEvent.target, func.count())
                .where(AuditEvent.target.in_([f"command {r.id}" for r in rows]))
                .group_by(AuditEvent.target)
            ).all()
        )
    wanted = {f"{CHAOS}{c}-{i}" for c in range(4) for i in range(CHAOS_COMMANDS // 4)}
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
    assert kills >= 3 and ran_on == set(NAMES)


def _open(database, prefix: str = "") -> int:
    """Commands not yet ended (those whose request id starts with `prefix`)."""
    with readonly(database).begin() as conn:
        return conn.scalar(
            select(func.count()).where(Command.status.in_(("pending", "running")),
                                       Command.request_id.startswith(prefix))
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
    a, b, c = (fleet.procs[name] for name in NAMES)
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


def _stop_inside_a_transaction(engine: EngineProcess, database, tries: int = 300) -> None:
    """SIGSTOP `engine` until it stops with a transaction open (its connection stays idle in
    one; the other engines' transactions last milliseconds): the stall that holds row locks
    the engine taking over must write, here for sure rather than by chance."""
    held = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
        "state = 'idle in transaction' AND state_change < now() - interval '100 milliseconds'"
    )
    for _ in range(tries):
        engine.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.15)
        with database.connect() as conn:
            if conn.scalar(held):
                return
        engine.proc.send_signal(signal.SIGCONT)
        time.sleep(random.uniform(0.0, 0.02))
    raise AssertionError(f"no stop of {tries} landed inside a transaction")


def test_an_engine_that_stalls_past_its_lease_lets_go_when_it_returns(fleet, pg_database):
    a, b, c = (fleet.procs[name] for name in NAMES)
    a_id = instance(pg_database, a)
    others = {instance(pg_database, b), instance(pg_database, c)}
    common = _replay(pg_database, 600, 0.02)
    sid = _done(pg_database, aimed_at(pg_database, a_id, "session.start",
                                      {**common, "mode": "pivots_only"}))["session_id"]  # fmt: skip
    wait_until(lambda: session_rows.get(pg_database, sid).candles > 20, 30, what="candles")
    try:
        _stop_inside_a_transaction(a, pg_database)  # a stall: alive, silent, holding locks
        wait_until(lambda: _owners(pg_database, [sid]) <= others, LEASE_S, 0.1,
                   "another engine to take over")  # fmt: skip
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert a.proc.wait(timeout=30) is not None, "the stale engine should stop by itself"
    assert "found dead by another engine" in a.output()
    wait_until(lambda: session_rows.get(pg_database, sid).status == "finished", 60, 0.2,
               "the session to finish on the engine that took it")  # fmt: skip
    check_fills(pg_database, [sid])
    assert session_rows.get(pg_database, sid).candles == 600


# -- shared checkpoints ---------------------------------------------------------------------


def test_engines_with_separate_data_directories_backtest_each_others_checkpoints(
    fleet, pg_database
):
    fleet.annotate()
    procs = {name: fleet.procs[name] for name in ("a", "b")}
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
    for name in NAMES:  # nothing of the weights lives in any data directory
        assert not list((fleet.root / f"machine-{name}").rglob("*.pt"))


def _done(database, command_id: int) -> dict:
    row = bus.wait(database, command_id, 60)
    assert row.status == "done", row.error
    return row.result


def _ended(database, job_id: int):
    job = jobs.get(database, job_id)
    return job if job.status not in jobs.UNFINISHED else None


# -- one trainer per working model ----------------------------------------------------------


def test_two_engines_never_train_one_working_model_at_once(fleet, pg_database):
    fleet.annotate()
    ids = [instance(pg_database, p) for p in fleet.procs.values()]
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
    ids = {instance(pg_database, p) for p in fleet.procs.values()}  # at most 2 sessions each
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
    for sid in placed:  # the fleet idle again for the next test
        send(pg_database, "session.stop", {"session_id": sid}, "bo")
