"""A real `python -m engine` process: it answers, it survives bad commands, it cleans up after
a crash, and it stops cleanly."""

from __future__ import annotations

import json
import signal

from contract.access import SYSTEM_ACCOUNT
from db import bus, candles, engines
from tests.conftest import PG_URL, make_account, run_cli, wait_until


def ping_ok(database, timeout: float = 10) -> dict:
    row = bus.wait(database, bus.submit(database, "ping", created_by=SYSTEM_ACCOUNT), timeout)
    assert row.status == "done", f"ping did not succeed: {row.status} {row.error}"
    return row.result


def test_ping_round_trip_names_engine_version_and_uptime(database, engine_process):
    proc = engine_process("--no-seed")
    result = ping_ok(database)
    alive = engines.alive(database)
    assert [r.pid for r in alive] == [proc.proc.pid]
    assert result["engine_id"] == alive[0].id
    assert result["version"] and result["uptime_s"] >= 0


BAD_COMMANDS = {  # name: kind, raw payload, what the failure must say
    "unknown kind": ("no.such.kind", "{}", "unknown command kind 'no.such.kind'"),
    "malformed JSON": ("ping", "{not json", "payload of 'ping' is not valid JSON"),
    "not an object": ("ping", "[1, 2]", "must be a JSON object"),
    "extra field": ("ping", '{"surprise": 1}', "invalid payload for 'ping': surprise"),
    "bad type": (
        "debug.sleep",
        '{"seconds": "soon"}',
        "invalid payload for 'debug.sleep': seconds",
    ),
    "raises": ("debug.fail", '{"message": "boom"}', "RuntimeError: boom"),
}


def test_bad_commands_fail_with_a_reason_and_the_engine_keeps_serving(database, engine_process):
    """One engine takes every bad command in turn (an engine start is most of such a test's
    time): each fails with its reason and no traceback, and a ping after each still works."""
    proc = engine_process("--no-seed", "--debug-commands")
    for name, (kind, payload, expected) in BAD_COMMANDS.items():
        row = bus.wait(database, bus.submit(database, kind, payload, created_by=SYSTEM_ACCOUNT), 10)
        assert row.status == "failed", name
        assert expected in row.error and "Traceback" not in row.error, (name, row.error)
        ping_ok(database)
        assert proc.proc.poll() is None, name


def test_debug_commands_are_refused_unless_enabled(database, engine_process):
    engine_process("--no-seed")
    row = bus.wait(
        database, bus.submit(database, "debug.sleep", {"seconds": 0}, created_by=SYSTEM_ACCOUNT), 10
    )
    assert row.status == "failed" and "--debug-commands" in row.error


def test_kill_9_mid_command_then_restart_fails_it_naming_the_restart(database, engine_process):
    first = engine_process("--no-seed", "--debug-commands")
    first_id = engines.alive(database)[0].id
    cid = bus.submit(database, "debug.sleep", {"seconds": 60}, created_by=SYSTEM_ACCOUNT)
    wait_until(lambda: bus.get(database, cid).status == "running", 10, what="command to run")
    first.stop(signal.SIGKILL)

    engine_process("--no-seed", "--debug-commands")
    row = wait_until(
        lambda: (r := bus.get(database, cid)).status == "failed" and r, 10, what="reconcile"
    )
    assert first_id in row.error and "restart" in row.error
    ping_ok(database)
    dead = [r for r in engines.unstopped(database) if r.id == first_id]
    assert dead == [], "the dead instance should be marked stopped"


def test_sigterm_stops_cleanly_and_status_turns_offline(database, engine_process, home):
    proc = engine_process("--no-seed")
    assert run_cli(home, "status").returncode == 0
    assert proc.stop(signal.SIGTERM) == 0
    st = engines.status(database)
    assert not st.online and "SIGTERM" in st.instance.stop_reason
    out = run_cli(home, "status", "--json")
    assert out.returncode == 1 and json.loads(out.stdout)["online"] is False


def test_submit_cli_waits_and_exits_by_final_status(database, engine_process, home):
    engine_process("--no-seed")
    make_account(database, "ana")
    ok = run_cli(home, "submit", "ping", "--wait", "10", "--user", "ana")
    assert ok.returncode == 0, ok.stderr
    row = json.loads(ok.stdout)
    assert row["status"] == "done" and row["created_by"] == "ana" and row["result"]["engine_id"]
    bad = run_cli(home, "submit", "nope", "--wait", "10")
    assert bad.returncode == 1 and json.loads(bad.stdout)["status"] == "failed"
    malformed = run_cli(home, "submit", "ping", "--payload", "{oops")
    assert malformed.returncode == 2 and "not valid JSON" in malformed.stderr


def test_first_run_seeds_real_market_data_once(database, engine_process):
    proc = engine_process()
    sets = wait_until(lambda: len(candles.datasets(database)) == 2, 60, what="seed")
    assert sets
    got = candles.datasets(database).set_index("symbol")
    assert got.loc["SP500", "candles"] == 5031 and got.loc["NASDAQ", "candles"] == 5031
    last = candles.load(database, "SP500", "1d", last=1).iloc[0]
    assert str(last.time.date()) == "2018-12-31" and round(last.close, 2) == 2506.85
    proc.stop()
    engine_process()  # a second start imports nothing more
    assert candles.total(database) == 2 * 5031
    assert len(candles.imports(database)) == 2


def test_engine_serves_the_same_bus_on_postgresql(pg_database, engine_process):
    any_database = pg_database
    proc = engine_process("--no-seed", "--debug-commands", database_url=PG_URL)
    assert ping_ok(any_database)["engine_id"] == engines.alive(any_database)[0].id
    row = bus.wait(
        any_database, bus.submit(any_database, "debug.fail", created_by=SYSTEM_ACCOUNT), 10
    )
    assert row.status == "failed" and "RuntimeError" in row.error
    ping_ok(any_database)
    assert proc.stop() == 0
    assert not engines.status(any_database).online
