"""Access control (issue 10): a real engine holds every command kind to the README's role table,
a command written straight into the table is held to the same rules, quotas refuse with the
limit they hit; accounts, passwords, sign-in, lockout and one-time links behave; the writes the
pages make directly are checked by `db/`; the audit log is append-only on both databases; and
`python -m engine user|quota|audit` manages it all."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import db
from contract.access import ACTION_RULES, COMMAND_RULES, OWNED, ROLES, SYSTEM_ACCOUNT, Actor
from contract.access import refusal as contract_refusal
from contract.payloads import PAYLOADS
from db import accounts, annotations, audit, bus, candles, connection, jobs, quotas
from db import sessions as session_rows
from db.accounts import AccountError, Refused
from engine.cli import main as cli_main
from market.importer import import_candles
from tests.conftest import DATA, ROOT, EngineProcess, make_account, run_cli, wait_until

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def quick_hashing(monkeypatch):
    """Argon2id still, with cheap parameters: lockout tests hash dozens of passwords."""
    fast = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(accounts, "_hasher", fast)
    monkeypatch.setattr(accounts, "_DUMMY_HASH", fast.hash("not a password anyone has"))


# -- the README's role table ------------------------------------------------------------------


def role_table() -> dict[str, dict[str, str]]:
    """README.md's role table as {action: {role: "yes" | "no" | "own"}}, `debug.*` expanded to
    every debug command kind."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Accounts and roles", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[1:] == list(ROLES), header
    table: dict[str, dict[str, str]] = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in re.findall(r"`([a-z_]+(?:\.[a-z_*]+)?)`", cells[0]):
            kinds = (
                [k for k in COMMAND_RULES if k.startswith("debug.")]
                if name == "debug.*"
                else [name]
            )
            for kind in kinds:
                assert kind not in table, f"{kind} is in the README's table twice"
                table[kind] = dict(zip(ROLES, cells[1:], strict=True))
    return table


def test_the_readme_table_names_every_command_and_direct_write_once():
    table = role_table()
    assert set(table) == set(COMMAND_RULES) | set(ACTION_RULES)
    assert {cell for row in table.values() for cell in row.values()} <= {"yes", "no", "own"}


def test_every_command_kind_has_a_payload_and_a_rule():
    assert PAYLOADS.keys() == COMMAND_RULES.keys()


def test_the_readme_table_agrees_with_the_rules_db_applies_to_direct_writes():
    for action in ACTION_RULES:
        for role, cell in role_table()[action].items():
            mine, others = (contract_refusal(Actor("me", role), action, owner) is None
                            for owner in ("me", "you"))  # fmt: skip
            assert (mine, others) == {"yes": (True, True), "own": (True, False),
                                      "no": (False, False)}[cell], (action, role)  # fmt: skip


# -- one real engine --------------------------------------------------------------------------


@dataclass
class Live:
    """The shared engine's database, and tina's running session and its working model."""

    database: object
    session_id: int
    working_model_id: int

    def run(self, commands: list[tuple[str, dict | str, str | None]]) -> list:
        """Submit (kind, payload, account) commands in one batch; their final rows."""
        ids = [bus.submit(self.database, k, p, created_by=who) for k, p, who in commands]
        return [bus.wait(self.database, cid, 30) for cid in ids]

    def refused(self, row) -> bool:
        """Refused by access control: the command failed and its audit line says refused."""
        (line,) = [e for e in audit.query(self.database, audit.Filter(action=row.kind), 10_000)
                   if e.target == f"command {row.id}"]  # fmt: skip
        if line.outcome == "refused":
            assert row.status == "failed", row
        return line.outcome == "refused"


def synthetic_candles(n: int = 800) -> pd.DataFrame:
    rng = np.random.default_rng(10)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ts = pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC").as_unit("ms").asi8
    return pd.DataFrame({"ts": ts, "open": close, "high": close * 1.01, "low": close * 0.99,
                         "close": close, "volume": 1.0})  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One engine (`--debug-commands`) for the module, with 800 daily SYN candles, the viewer
    vera, the traders tina, tom and quinn, the admin ada, and tina's running manual session."""
    home = tmp_path_factory.mktemp("access")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CANDLELAB_HOME", str(home))
        env.delenv("DATABASE_URL", raising=False)
        database = db.init()
        for name, role in (("vera", "viewer"), ("tina", "trader"), ("tom", "trader"),
                           ("quinn", "trader"), ("ada", "admin")):  # fmt: skip
            make_account(database, name, role)
        frame = synthetic_candles()
        candles.store(database, frame, symbol="SYN", timeframe="1d", source="test", sha256="s",
                      format="test", rows_in_file=len(frame), rows_skipped=0,
                      created_by="tina")  # fmt: skip
        engine = EngineProcess(home, "--no-seed", "--debug-commands").start()
        try:
            feed = {"kind": "replay", "pace_s": 5}
            (row,) = Live(database, 0, 0).run([("session.start", {
                "symbol": "SYN", "timeframe": "1d", "mode": "manual", "feed": feed}, "tina")])  # fmt: skip
            assert row.status == "done", row.error
            yield Live(database, row.result["session_id"], row.result["working_model_id"])
        finally:
            engine.stop()
            connection.dispose_all()


def payloads(live: Live) -> dict[str, dict]:
    """A valid payload for every kind: on tina's session or working model where the kind is
    owner-only, elsewhere one the handler may fail harmlessly (access is decided before)."""
    sid, wm = live.session_id, live.working_model_id
    return {
        "ping": {},
        "session.start": {"symbol": "NOPE", "timeframe": "1d"},
        "session.stop": {"session_id": sid},
        "session.set_mode": {"session_id": sid, "mode": "manual"},
        "session.train_manual": {"session_id": sid, "action": "HOLD"},
        "backtest.start": {"symbol": "NOPE", "timeframe": "1d"},
        "train.start": {"base_checkpoint": 999},
        "checkpoint.activate": {"checkpoint_id": 999},
        "model.save": {"working_model_id": wm},
        "debug.sleep": {"seconds": 0},
        "debug.fail": {},
        "debug.load": {"rows_per_s": 1, "seconds": 0.1},
        "debug.load_stats": {},
        "debug.hold_lock": {"checkpoint_id": 999, "seconds": 0},
    }


ACCOUNT_OF = {"viewer": "vera", "trader": "tina", "admin": "ada"}


def test_the_engine_accepts_and_refuses_every_command_kind_as_the_readme_table_says(live):
    table, payload = role_table(), payloads(live)
    assert payload.keys() == COMMAND_RULES.keys()
    cases = []  # (kind, account, refused?)
    for kind in COMMAND_RULES:
        PAYLOADS[kind].model_validate(payload[kind])  # so "accepted" cannot mean "bad payload"
        for role, who in ACCOUNT_OF.items():
            cases.append((kind, who, table[kind][role] == "no"))
        if table[kind]["trader"] == "own":  # tina on her own row above; tom on hers here
            cases.append((kind, "tom", True))
    cases.sort(key=lambda c: c[0] == "session.stop")  # stop tina's session last
    rows = live.run([(kind, payload[kind], who) for kind, who, _ in cases])
    wrong = [
        f"{kind} by {who}: expected {'refused' if expect else 'accepted'}, got {row.status} "
        f"({row.error})"
        for (kind, who, expect), row in zip(cases, rows, strict=True)
        if live.refused(row) != expect
    ]
    assert wrong == []
    for (_, _, expect), row in zip(cases, rows, strict=True):
        assert row.status in bus.FINAL and "invalid payload" not in (row.error or "")
        if expect:
            assert "may not" in row.error, row.error


def test_payload_fields_that_ask_for_more_need_that_right_too(live):
    """Training or sharing someone's working model is model.train (its creator or an admin);
    activate=true is checkpoint.activate (admins)."""
    wm, feed = live.working_model_id, {"kind": "replay", "pace_s": 5}
    rows = live.run([
        ("train.start", {"working_model_id": wm, "epochs": 1}, "tom"),
        ("session.start", {"symbol": "SYN", "timeframe": "1d", "mode": "manual", "feed": feed,
                           "working_model_id": wm}, "tom"),
        ("model.save", {"working_model_id": wm, "activate": True}, "tina"),
        ("train.start", {"base_checkpoint": 999, "activate": True}, "tina"),
        ("train.start", {"working_model_id": wm, "epochs": 1, "activate": True}, "ada"),
    ])  # fmt: skip
    assert [live.refused(r) for r in rows] == [True, True, True, True, False]
    assert "may not train or share the working model: it is tina's" in rows[0].error
    assert "only admins may (the payload asks for it with activate=True)" in rows[2].error


def test_owner_only_kinds_are_the_readme_table_own_rows():
    owned = {kind for kind, row in role_table().items() if row["trader"] == "own"}
    assert owned & set(COMMAND_RULES) == set(OWNED)


def test_a_command_forged_into_the_table_is_refused_and_the_session_keeps_running(live):
    (row,) = live.run([("session.start", {"symbol": "SYN", "timeframe": "1d",
                        "feed": {"kind": "replay", "pace_s": 5}}, "tina")])  # fmt: skip
    sid = row.result["session_id"]
    with live.database.begin() as conn:
        forged = conn.execute(
            text("INSERT INTO commands (request_id, kind, payload, status, created_by, created_at)"
                 " VALUES ('forged-1', 'session.stop', :payload, 'pending', 'tom',"
                 " CURRENT_TIMESTAMP) RETURNING id"),
            {"payload": json.dumps({"session_id": sid})},
        ).scalar_one()  # fmt: skip
    row = bus.wait(live.database, forged, 30)
    assert live.refused(row) and "tom (trader) may not stop the session: it is tina's" in row.error
    time.sleep(0.3)
    assert session_rows.get(live.database, sid).status == "running"
    (stop,) = live.run([("session.stop", {"session_id": sid}, "tina")])
    assert stop.status == "done", stop.error


def test_commands_naming_no_unknown_or_disabled_accounts_are_refused(live):
    make_account(live.database, "dora")
    accounts.change(live.database, "dora", by=SYSTEM_ACCOUNT, disabled=True)
    rows = live.run([("ping", {}, None), ("ping", {}, "nobody-here"), ("ping", {}, "dora"),
                     ("ping", {}, "")])  # fmt: skip
    assert [live.refused(r) for r in rows] == [True, True, True, True]
    assert "must name the account" in rows[0].error
    assert "'nobody-here' is not an enabled account" in rows[1].error
    assert "'dora' is not an enabled account" in rows[2].error


def test_a_job_over_the_role_quota_is_refused_naming_the_limit(live):
    quotas.set_(live.database, "trader", "jobs", 1, by=SYSTEM_ACCOUNT)
    try:
        long_one = {"symbol": "SYN", "timeframe": "1d", "train_mode": "every_candle"}
        first, second = live.run([("backtest.start", long_one, "quinn")] * 2)
        assert first.status == "done", first.error
        assert jobs.get(live.database, first.result["job_id"]).status in jobs.UNFINISHED
        assert live.refused(second)
        assert "the trader quota allows 1 queued and running jobs" in second.error
        assert "quinn has 1" in second.error
        (admin,) = live.run([("backtest.start", {"symbol": "NOPE", "timeframe": "1d"}, "ada")])
        assert not live.refused(admin)  # the admin quota is another
        assert jobs.request_cancel(live.database, first.result["job_id"], "quinn")
        wait_until(lambda: jobs.get(live.database, first.result["job_id"]).status
                   not in jobs.UNFINISHED, 30, what="the cancel")  # fmt: skip
    finally:
        quotas.set_(live.database, "trader", "jobs", 4, by=SYSTEM_ACCOUNT)


# -- accounts, passwords, sign-in -------------------------------------------------------------


def events(database, action: str, actor: str | None = None) -> list:
    """The audit lines for exactly `action` (by `actor`), oldest first."""
    rows = audit.query(database, audit.Filter(actor=actor, action=action), 10_000)
    return [e for e in reversed(rows) if e.action == action]


def test_accounts_are_added_listed_and_changed_by_an_admin(any_database):
    link = accounts.add(any_database, "  Bob.Smith@Example ", "trader", by=SYSTEM_ACCOUNT)
    assert link and accounts.get(any_database, "BOB.SMITH@example").role == "trader"
    assert [a.name for a in accounts.all_(any_database)] == ["bob.smith@example", "system"]
    accounts.change(any_database, "bob.smith@example", by=SYSTEM_ACCOUNT, role="viewer")
    accounts.change(any_database, "bob.smith@example", by=SYSTEM_ACCOUNT, disabled=True)
    bob = accounts.get(any_database, "bob.smith@example")
    assert (bob.role, bob.disabled) == ("viewer", True)
    accounts.change(any_database, "bob.smith@example", by=SYSTEM_ACCOUNT, disabled=False)
    assert not accounts.get(any_database, "bob.smith@example").disabled
    make_account(any_database, "cy", password=PASSWORD)
    assert accounts.get(any_database, "cy").password_hash.startswith("$argon2id$")
    again = accounts.reset_password(any_database, "cy", by=SYSTEM_ACCOUNT)
    cy = accounts.get(any_database, "cy")
    assert again and cy.password_hash is None and cy.must_set_password
    assert accounts.sign_in(any_database, "cy", PASSWORD).error
    assert accounts.redeem_link(any_database, again).account.name == "cy"
    with pytest.raises(AccountError, match="exists"):
        accounts.add(any_database, "CY", "viewer", by=SYSTEM_ACCOUNT)
    with pytest.raises(AccountError, match="unknown role"):
        accounts.add(any_database, "dee", "superuser", by=SYSTEM_ACCOUNT)


@pytest.mark.parametrize("name", ["", "   ", "-dash", "two words", "x" * 65, "ünïcode", "a/b"])
def test_bad_account_names_are_refused(database, name):
    with pytest.raises(AccountError, match="1-64 characters"):
        accounts.add(database, name, "viewer", by=SYSTEM_ACCOUNT)


@pytest.mark.parametrize(
    ("password", "says"),
    [("short", "10 to 1024"), ("x" * 1025, "10 to 1024"), ("Long-Name1", "account's name")],
)
def test_passwords_must_be_long_enough_and_not_the_name(database, password, says):
    with pytest.raises(AccountError, match=says):
        make_account(database, "long-name1", password=password)
    assert accounts.get(database, "long-name1") is None


def test_sign_in_opens_a_browser_session_for_the_right_password(any_database):
    make_account(any_database, "ana", password=PASSWORD)
    assert accounts.sign_in(any_database, "ana", "wrong password").token is None
    ok = accounts.sign_in(any_database, " ANA ", PASSWORD, address="10.0.0.1")
    assert ok.error is None and accounts.signed_in(any_database, ok.token).name == "ana"
    assert [e.address for e in events(any_database, "signin", "ana")] == ["10.0.0.1"]
    accounts.sign_out(any_database, ok.token)
    assert accounts.signed_in(any_database, ok.token) is None


def test_five_wrong_passwords_lock_the_account_even_against_the_right_one(any_database):
    make_account(any_database, "ana", password=PASSWORD)
    answers = [accounts.sign_in(any_database, "ana", f"guess number {i}") for i in range(20)]
    assert all(a.token is None for a in answers)
    assert all("Too many failed sign-ins" in a.error for a in answers[5:])
    assert "Too many" not in answers[4].error
    locked = accounts.sign_in(any_database, "ana", PASSWORD)
    assert locked.token is None and "Too many failed sign-ins" in locked.error
    assert len(events(any_database, "signin.failed", "ana")) == 5
    assert len(events(any_database, "signin.locked", "ana")) == 16
    assert accounts.locked_until(any_database, "ana", None) is not None


def test_twenty_failures_from_one_address_close_it_for_every_name(any_database):
    make_account(any_database, "ana", password=PASSWORD)
    for i in range(20):
        accounts.sign_in(any_database, f"guess{i}", "whatever else", address="10.9.9.9")
    shut = accounts.sign_in(any_database, "ana", PASSWORD, address="10.9.9.9")
    assert shut.token is None and "Too many" in shut.error
    assert accounts.sign_in(any_database, "ana", PASSWORD, address="10.1.1.1").token


def test_a_successful_sign_in_clears_the_account_failures(any_database):
    make_account(any_database, "ana", password=PASSWORD)
    for _ in range(4):
        accounts.sign_in(any_database, "ana", "not it at all")
    assert accounts.sign_in(any_database, "ana", PASSWORD).token
    for _ in range(4):
        accounts.sign_in(any_database, "ana", "not it at all")
    assert accounts.sign_in(any_database, "ana", PASSWORD).token  # 4 since the last success
    for _ in range(5):
        accounts.sign_in(any_database, "ana", "not it at all")
    assert "Too many" in accounts.sign_in(any_database, "ana", PASSWORD).error


def test_browser_sessions_expire_and_end_when_the_account_is_disabled(any_database, monkeypatch):
    make_account(any_database, "ana", password=PASSWORD)
    monkeypatch.setenv("CANDLELAB_SESSION_HOURS", "0.00001")  # 36 ms
    short = accounts.sign_in(any_database, "ana", PASSWORD).token
    monkeypatch.setenv("CANDLELAB_SESSION_HOURS", "12")
    normal = accounts.sign_in(any_database, "ana", PASSWORD).token
    time.sleep(0.1)
    assert accounts.signed_in(any_database, short) is None
    assert accounts.signed_in(any_database, normal).name == "ana"
    accounts.change(any_database, "ana", by=SYSTEM_ACCOUNT, disabled=True)
    assert accounts.signed_in(any_database, normal) is None
    assert accounts.sign_in(any_database, "ana", PASSWORD).token is None
    accounts.change(any_database, "ana", by=SYSTEM_ACCOUNT, disabled=False)
    assert accounts.signed_in(any_database, normal) is None  # disabling signed it out for good


def test_a_one_time_link_signs_in_exactly_once(any_database):
    link = accounts.add(any_database, "ana", "trader", by=SYSTEM_ACCOUNT)
    first = accounts.redeem_link(any_database, link)
    assert first.account.name == "ana" and accounts.signed_in(any_database, first.token)
    assert first.account.must_set_password
    again = accounts.redeem_link(any_database, link)
    assert again.token is None and "used or has expired" in again.error
    accounts.set_password(any_database, "ana", PASSWORD)
    assert accounts.sign_in(any_database, "ana", PASSWORD).token


def test_the_first_admin_link_is_renewed_until_someone_signs_in(any_database):
    first = accounts.first_admin_link(any_database)
    assert first and accounts.get(any_database, "admin").role == "admin"
    second = accounts.first_admin_link(any_database)
    assert second and second != first
    assert accounts.redeem_link(any_database, first).token is None  # the old one is dead
    assert accounts.redeem_link(any_database, second).account.name == "admin"
    assert accounts.first_admin_link(any_database) is None


def test_the_last_admin_stays_and_nobody_changes_the_system_account(any_database):
    make_account(any_database, "ada", "admin")
    with pytest.raises(AccountError, match="last admin"):
        accounts.change(any_database, "ada", by=SYSTEM_ACCOUNT, role="trader")
    with pytest.raises(AccountError, match="last admin"):
        accounts.change(any_database, "ada", by="ada", disabled=True)
    make_account(any_database, "abe", "admin")
    accounts.change(any_database, "ada", by="abe", role="trader")
    assert accounts.get(any_database, "ada").role == "trader"
    for change in ({"role": "viewer"}, {"disabled": True}):
        with pytest.raises(AccountError, match="system account"):
            accounts.change(any_database, SYSTEM_ACCOUNT, by="abe", **change)
    with pytest.raises(AccountError, match="system account"):
        accounts.reset_password(any_database, SYSTEM_ACCOUNT, by="abe")
    assert accounts.sign_in(any_database, SYSTEM_ACCOUNT, "").token is None
    assert accounts.sign_in(any_database, SYSTEM_ACCOUNT, PASSWORD).token is None
    assert len(events(any_database, "signin.failed", SYSTEM_ACCOUNT)) == 2


def test_a_viewer_cannot_manage_accounts_and_the_refusal_is_logged(any_database):
    make_account(any_database, "vera", "viewer")
    with pytest.raises(Refused, match="may not manage accounts"):
        accounts.add(any_database, "mallory", "admin", by="vera")
    with pytest.raises(Refused):
        accounts.change(any_database, "vera", by="vera", role="admin")
    with pytest.raises(Refused):
        quotas.set_(any_database, "viewer", "jobs", 99, by="vera")
    assert accounts.get(any_database, "mallory") is None
    assert accounts.get(any_database, "vera").role == "viewer"
    assert quotas.limits(any_database, "viewer")["jobs"] == 0
    refused = audit.query(any_database, audit.Filter(actor="vera", outcome="refused"))
    assert sorted(e.action for e in refused) == ["account.manage", "account.manage", "quota.set"]


# -- writes the pages make directly -----------------------------------------------------------

T0, H = 1_700_000_000_000, 3_600_000


@pytest.fixture
def people(database):
    """vera (viewer), tina and tom (traders), ada (admin)."""
    for name, role in (("vera", "viewer"), ("tina", "trader"), ("tom", "trader"),
                       ("ada", "admin")):  # fmt: skip
        make_account(database, name, role)
    return database


def note(database, author: str) -> int:
    return annotations.create(
        database, annotations.AnnotationIn("X", "1h", T0, T0 + 5 * H, "long"), author
    )


def test_a_viewer_cannot_annotate_and_the_refusal_is_logged(people):
    with pytest.raises(Refused, match="vera \\(viewer\\) may not annotate"):
        note(people, "vera")
    assert annotations.list_for(people) == []
    (line,) = audit.query(people, audit.Filter(actor="vera"))
    assert (line.action, line.outcome) == ("annotation.create", "refused")


def test_only_the_author_or_an_admin_edits_or_deletes_an_annotation(people):
    aid = note(people, "tina")
    with pytest.raises(Refused, match="it is tina's"):
        annotations.edit(people, aid, by="tom", note="mine now")
    with pytest.raises(Refused):
        annotations.delete(people, aid, by="tom")
    assert annotations.get(people, aid).note is None
    annotations.edit(people, aid, by="tina", note="hers")
    annotations.edit(people, aid, by="ada", side="short")
    assert (annotations.get(people, aid).note, annotations.get(people, aid).side) == (
        "hers",
        "short",
    )
    annotations.delete(people, aid, by="ada")
    with pytest.raises(Refused):
        annotations.restore(people, aid, by="tom")
    assert annotations.restore(people, aid, by="tina")
    outcomes = [(e.actor, e.action, e.outcome) for e in reversed(audit.query(people))
                if e.action.startswith("annotation")]  # fmt: skip
    assert outcomes == [
        ("tina", "annotation.create", "ok"), ("tom", "annotation.edit", "refused"),
        ("tom", "annotation.delete", "refused"), ("tina", "annotation.edit", "ok"),
        ("ada", "annotation.edit", "ok"), ("ada", "annotation.delete", "ok"),
        ("tom", "annotation.delete", "refused"), ("tina", "annotation.restore", "ok"),
    ]  # fmt: skip


def test_a_viewer_cannot_import_candles(people):
    frame = synthetic_candles(10)
    with pytest.raises(Refused, match="may not import market data"):
        candles.store(people, frame, symbol="X", timeframe="1d", source="t", sha256="s",
                      format="t", rows_in_file=10, rows_skipped=0, created_by="vera")  # fmt: skip
    with pytest.raises(Refused, match="may not import market data"):
        import_candles(people, DATA / "csv" / "good_generic.csv", "X", "1h", created_by="vera")
    assert candles.total(people) == 0
    import_candles(people, DATA / "csv" / "good_generic.csv", "X", "1h", created_by="tina")
    assert candles.total(people) == 40


def test_only_the_owner_or_an_admin_cancels_a_job(people):
    job = jobs.create(people, "backtest", command_id=None, engine_id="e", created_by="tina")
    with pytest.raises(Refused, match="may not cancel the job: it is tina's"):
        jobs.request_cancel(people, job, "tom")
    with pytest.raises(Refused):
        jobs.request_cancel(people, job, "vera")
    assert jobs.get(people, job).status == "queued"
    assert jobs.request_cancel(people, job, "tina")


# -- the audit log ----------------------------------------------------------------------------


def test_the_audit_log_refuses_update_and_delete(any_database):
    audit.record(any_database, "ping", "ok", actor=SYSTEM_ACCOUNT)
    for statement in ("UPDATE audit_events SET outcome = 'refused'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), any_database.begin() as conn:
            conn.execute(text(statement))
    assert [(e.action, e.outcome) for e in audit.query(any_database)] == [("ping", "ok")]


# -- the CLI ----------------------------------------------------------------------------------


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """`python -m engine ARGS` in this process: (exit status, stdout, stderr)."""
    try:
        code = cli_main(list(args))
    except SystemExit as exc:  # argparse
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_cli_adds_lists_and_changes_accounts(database, home, capsys):
    added = run_cli(home, "user", "add", "Bob", "--role", "trader")
    assert added.returncode == 0, added.stderr
    (token,) = re.findall(r"\?signin=([\w-]+)", added.stdout)
    assert accounts.redeem_link(database, token).account.name == "bob"
    code, out, _ = cli(capsys, "user", "list", "--json")
    listed = {a["name"]: a for a in json.loads(out)}
    assert code == 0 and set(listed) == {"bob", "system"}
    assert (listed["bob"]["role"], listed["bob"]["last_signin"] is not None) == ("trader", True)
    assert cli(capsys, "user", "set-role", "bob", "viewer")[:2] == (0, "done\n")
    assert cli(capsys, "user", "disable", "bob")[0] == 0
    bob = accounts.get(database, "bob")
    assert (bob.role, bob.disabled) == ("viewer", True)
    code, out, _ = cli(capsys, "audit", "--json", "--user", "bob")
    assert code == 0 and [e["action"] for e in json.loads(out)] == ["signin"]
    code, out, _ = cli(capsys, "audit", "--json", "--action", "account")
    assert [(e["action"], e["target"]) for e in json.loads(out)] == [
        ("account.change", "bob"), ("account.change", "bob"), ("account.add", "bob")]  # fmt: skip


def test_the_cli_sets_and_prints_quotas(database, capsys):
    assert cli(capsys, "quota", "set", "trader", "jobs", "2")[0] == 0
    code, out, _ = cli(capsys, "quota")
    header, *rows = (line.split() for line in out.splitlines())
    trader = dict(zip(header, next(r for r in rows if r[0] == "trader"), strict=True))
    assert code == 0 and trader["jobs"] == "2" and trader["sessions"] == "4"
    assert quotas.limits(database, "trader")["jobs"] == 2


def test_cli_errors_exit_2_with_a_message(database, home, capsys, monkeypatch):
    make_account(database, "vera", "viewer")
    code, _, err = cli(capsys, "user", "set-role", SYSTEM_ACCOUNT, "viewer")
    assert code == 2 and "system account" in err
    code, _, err = cli(capsys, "user", "disable", "nobody")
    assert code == 2 and "no account called 'nobody'" in err
    code, _, err = cli(capsys, "quota", "set", "trader", "jobs", "-1")
    assert code == 2 and "between 0 and" in err
    code, _, err = cli(capsys, "user", "add", "x", "--role", "wizard")
    assert code == 2 and "invalid choice" in err
    monkeypatch.setenv("CANDLELAB_USER", "vera")
    refused = run_cli(home, "user", "add", "mallory", "--role", "admin")
    assert refused.returncode == 2 and "vera (viewer) may not manage accounts" in refused.stderr
    assert accounts.get(database, "mallory") is None
