"""Shared fixtures: a fresh data directory and database per test, and a real engine process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import db
from contract.access import SYSTEM_ACCOUNT
from db import accounts, candle_cache, connection, engines

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty data directory, used by this process and any engine it starts."""
    monkeypatch.setenv("CANDLELAB_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    yield tmp_path
    connection.dispose_all()
    candle_cache.shared.clear()  # the next test's database may have this one's URL
    if "streamlit" in sys.modules:  # an AppTest's cached engine belongs to this test's database
        import streamlit as st

        st.cache_resource.clear()
        st.cache_data.clear()


@pytest.fixture(autouse=True)
def main_module_restored():
    """Streamlit's script runner (an AppTest's too) installs the page it runs as `__main__`
    and leaves it there: a process a later test starts with multiprocessing's "spawn" would
    run that page before its target, and die in it."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """An empty SQLite database migrated to the newest schema, made once: migrating costs a
    few tenths of a second, and about 300 tests start from one."""
    path = tmp_path_factory.mktemp("migrated") / "candlelab.db"
    engine = connection.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()  # the last connection's close moves its WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture
def database(home, migrated_sqlite):
    """A migrated SQLite database in the test's data directory (a copy of `migrated_sqlite`;
    `db.init` finds it at the newest schema)."""
    shutil.copyfile(migrated_sqlite, home / "candlelab.db")
    return db.init()


PG_URL = os.environ.get("CANDLELAB_TEST_PG_URL")


def wiped_pg_database():
    """The test PostgreSQL database emptied (clean schema, no tables). `scripts/test.sh` starts a
    local server and sets CANDLELAB_TEST_PG_URL; without it this skips, except in CI, where it
    fails. For fixtures of any scope."""
    if not PG_URL:
        if os.environ.get("CI") == "true":
            pytest.fail("CANDLELAB_TEST_PG_URL is not set in CI")
        pytest.skip("no PostgreSQL (set CANDLELAB_TEST_PG_URL)")
    from sqlalchemy import text

    engine = connection.get_engine(settings_url(PG_URL))
    candle_cache.shared.clear()  # what it held of the last test's candles is gone
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    return engine


@pytest.fixture
def empty_pg_database(home):
    """An empty PostgreSQL database (clean schema, no tables)."""
    return wiped_pg_database()


@pytest.fixture
def pg_database(empty_pg_database):
    """A migrated PostgreSQL database with a clean schema."""
    return db.init(settings_url(PG_URL))


@pytest.fixture(params=["sqlite", "postgresql"])
def any_empty_database(request, home):
    """An empty database (no schema yet), SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return db.get_engine()
    return request.getfixturevalue("empty_pg_database")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request):
    """The same test on the embedded SQLite and on PostgreSQL."""
    return request.getfixturevalue("database" if request.param == "sqlite" else "pg_database")


def make_account(engine, name: str, role: str = "trader", password: str | None = None) -> str:
    """Add the account `name` as the CLI's `system` admin would; returns the name."""
    accounts.add(engine, name, role, by=SYSTEM_ACCOUNT, password=password)
    return name


def settings_url(url: str) -> str:
    from db.settings import normalise_url

    return normalise_url(url)


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class EngineProcess:
    """`python -m engine serve` as a child process, as an operator would run it."""

    def __init__(self, home: Path, *args: str, database_url: str | None = None) -> None:
        self.home = home
        self.database_url = database_url
        self.args = args
        self.log_path = home / f"engine-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> EngineProcess:
        env = {**os.environ, "CANDLELAB_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        env.pop("DATABASE_URL", None)
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", *self.args],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            database = db.get_engine(self.database_url and settings_url(self.database_url))
            wait_until(
                lambda: (
                    any(r.pid == self.proc.pid for r in engines.alive(database))
                    or self.proc.poll() is not None
                ),
                timeout=60,
                what="the engine to come online",
            )
            assert self.proc.poll() is None, f"engine exited early:\n{self.output()}"
        return self

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def engine_process(home, database):
    """Start real engine processes (`start(*args)`); all are stopped at the end."""
    started: list[EngineProcess] = []

    def start(*args: str, wait: bool = True, database_url: str | None = None) -> EngineProcess:
        proc = EngineProcess(home, *args, database_url=database_url).start(wait=wait)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc and proc.proc.poll() is None:
            proc.stop(signal.SIGKILL)


def run_cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m engine ARGS` against the test's data directory."""
    env = {**os.environ, "CANDLELAB_HOME": str(home)}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
