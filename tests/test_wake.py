"""Wake-ups (db/wake.py): a submit wakes a sleeping engine at once, on PostgreSQL through
LISTEN/NOTIFY (any machine), on SQLite through loopback UDP; a poke wakes it from inside the
process; a listen connection the server drops is re-opened, never a crash."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import create_engine, text

import db
from contract.access import SYSTEM_ACCOUNT
from db import bus, connection, engines, wake
from tests.conftest import PG_URL, ROOT, settings_url

FAST_S = 0.05  # half the engine's default poll interval (0.1 s): a wake-up comes well inside it
NEVER_S = 5.0  # a wait that times out has failed the test long before this


def woken_after(listener, action, delay_s: float = 0.02) -> tuple[bool, float]:
    """Run `action` in another thread after `delay_s`; return what `listener.wait` said and
    how long after `action` returned (the wake-up is sent at its commit, just before)."""
    done: list[float] = []

    def later():
        time.sleep(delay_s)
        action()
        done.append(time.perf_counter())

    t = threading.Thread(target=later)
    t.start()
    woke = listener.wait(NEVER_S)
    back = time.perf_counter()
    t.join()
    return woke, back - done[0]


def listening_backends(database) -> list[int]:
    with database.begin() as conn:
        return list(
            conn.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = :app "
                    "AND datname = current_database()"
                ),
                {"app": wake.APPLICATION_NAME},
            )
        )


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    """One migrated PostgreSQL database for this module (each test gets a fresh listener; a
    fresh schema per test would cost more than all these tests together)."""
    if not PG_URL:
        if os.environ.get("CI") == "true":
            pytest.fail("CANDLELAB_TEST_PG_URL is not set in CI")
        pytest.skip("no PostgreSQL (set CANDLELAB_TEST_PG_URL)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CANDLELAB_HOME", str(tmp_path_factory.mktemp("home")))
        mp.delenv("DATABASE_URL", raising=False)
        engine = connection.get_engine(settings_url(PG_URL))
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        db.upgrade(engine)
        bus.submit(engine, "ping", created_by=SYSTEM_ACCOUNT)  # warm: the first one is slow
        yield engine
        connection.dispose_all()


@pytest.fixture
def pg_listener(pg):
    listener = wake.listener(pg)
    yield listener
    listener.close()


# -- PostgreSQL -------------------------------------------------------------------------------


def test_pg_listener_has_no_address_and_times_out_quietly(pg_listener):
    assert isinstance(pg_listener, wake.PgListener) and pg_listener.address is None
    t0 = time.perf_counter()
    assert pg_listener.wait(FAST_S) is False
    assert FAST_S * 0.9 <= time.perf_counter() - t0 < 1.0


def test_pg_submit_from_another_connection_wakes_at_once(pg, pg_listener):
    woke, after = woken_after(
        pg_listener, lambda: bus.submit(pg, "ping", created_by=SYSTEM_ACCOUNT)
    )
    assert woke and after < FAST_S, f"woken {after * 1e3:.1f} ms after the submit"
    assert pg_listener.wait(FAST_S) is False  # one submit, one wake-up: nothing left over


def test_pg_notify_outside_a_transaction_wakes(pg, pg_listener):
    woke, after = woken_after(pg_listener, lambda: wake.notify(pg))
    assert woke and after < FAST_S, f"woken {after * 1e3:.1f} ms after notify()"


def test_pg_wake_up_comes_with_the_commit_not_before(pg, pg_listener):
    with pg.begin() as conn:
        assert wake.notify_in(conn) is True
        assert pg_listener.wait(FAST_S) is False  # not yet committed: no one is woken
    assert pg_listener.wait(NEVER_S) is True
    with pg.connect() as conn, conn.begin() as tx:  # a rolled-back submit wakes no one
        wake.notify_in(conn)
        tx.rollback()
    assert pg_listener.wait(FAST_S) is False


def test_pg_notify_from_another_process_wakes(pg, pg_listener):
    """Another process (as on another machine) that knows only the database URL and the
    channel name."""
    code = f"import psycopg; psycopg.connect({PG_URL!r}, autocommit=True).execute('NOTIFY {wake.CHANNEL}')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    t0 = time.perf_counter()
    assert pg_listener.wait(NEVER_S) is True
    assert time.perf_counter() - t0 < FAST_S  # it had arrived already


def test_pg_poke_wakes(pg_listener):
    woke, after = woken_after(pg_listener, pg_listener.poke)
    assert woke and after < FAST_S
    pg_listener.poke()  # a poke before the wait is not lost either
    assert pg_listener.wait(NEVER_S) is True
    assert pg_listener.wait(FAST_S) is False


def test_pg_listener_survives_its_connection_being_killed(pg, pg_listener, caplog):
    caplog.set_level(logging.INFO, logger="db.wake")
    [pid] = listening_backends(pg)
    with pg.begin() as conn:
        assert conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    # The drop wakes the listener (the caller looks at the queue), and nothing is raised.
    assert pg_listener.wait(NEVER_S) is True
    assert not pg_listener.listening
    # The next wait reconnects and reports a wake-up: a submit may have come meanwhile.
    assert pg_listener.wait(NEVER_S) is True
    assert pg_listener.listening
    [new_pid] = listening_backends(pg)
    assert new_pid != pid
    woke, after = woken_after(
        pg_listener, lambda: bus.submit(pg, "ping", created_by=SYSTEM_ACCOUNT)
    )
    assert woke and after < FAST_S
    lost = [r for r in caplog.records if r.levelno == logging.WARNING]
    back = [r for r in caplog.records if "again" in r.getMessage()]
    assert len(lost) == 1 and "not listening" in lost[0].getMessage()
    assert ":***@" in lost[0].getMessage()  # where, without the password
    assert len(back) == 1


def test_pg_listener_without_a_server_polls_and_logs_once(pg, caplog):
    """A database that cannot be reached (here: a closed port) never crashes the listener:
    it times out like a poll, and says so once."""
    caplog.set_level(logging.INFO, logger="db.wake")
    listener = wake.listener(create_engine(pg.url.set(host="127.0.0.1", port=1)))
    try:
        assert not listener.listening
        for _ in range(3):
            assert listener.wait(FAST_S / 5) is False
        listener.poke()
        assert listener.wait(NEVER_S) is True
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    finally:
        listener.close()


# -- SQLite -----------------------------------------------------------------------------------


def test_sqlite_submit_wakes_the_udp_listener(database):
    listener = wake.listener(database)
    try:
        assert isinstance(listener, wake.WakeSocket)
        host, port = listener.address
        assert host == "127.0.0.1" and port > 0
        engines.register(database, f"test:{os.getpid()}:wake", "test", listener.address)
        woke, after = woken_after(
            listener, lambda: bus.submit(database, "ping", created_by=SYSTEM_ACCOUNT)
        )
        assert woke and after < FAST_S, f"woken {after * 1e3:.1f} ms after the submit"
        assert listener.wait(FAST_S) is False
    finally:
        listener.close()


def test_sqlite_poke_wakes_and_timeout_is_false(database):
    listener = wake.listener(database)
    try:
        woke, after = woken_after(listener, listener.poke)
        assert woke and after < FAST_S
        assert listener.wait(FAST_S) is False
    finally:
        listener.close()
