"""Browser-test fixtures: the whole product started as the README starts it
(`scripts/start.py`: engine + Streamlit) on a fresh data directory, real Chromium, and signing
in through the sign-in page. Test modules import the fixtures they use.

An app start costs a 2-core machine 10-15 s, and the app's first pages draw slowly while it is
cold, so the tests of a module share one app where that is honest:

- `app`: the module's shared app. A test that uses it must not depend on what another test left
  (ids, counts, audit events: it reads what it made) and must not leave anything that changes
  what another test sees. The app is handed out only while its processes and its engine are
  alive and nothing runs (no session, no job, no pending command); otherwise, as after a test
  that failed half-way, a fresh one is started first.
- `spoils_app`: ask for it beside `app` in a test that leaves the app unfit for the others
  (it kills the engine, or adds a dataset that then shows first everywhere): the app is stopped
  after that test and the next test gets a fresh one.
- `fresh_app`: an app started for this test alone, on a fresh data directory, stopped after it:
  for tests that count what is in the database or change accounts (unless they count and change
  only a person no other test of the module uses, as `test_browser_signin.py` does on an app of
  its own making, started for a sign-on provider with `RunningApp(..., port=)`).

A module sets `APP_ENV` (a dict) to add to the apps' environment, e.g. {"CANDLELAB_SEED": "0"}
when its tests need no sample data. One Chromium serves a module; each page is in its own
browser context (its own cookies, so its own person), closed after its test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

import db
from db import bus, engines, jobs, sessions
from tests.conftest import ROOT, make_account, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NO_CHROMIUM = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true",
    reason="Chromium not installed (apt-get install chromium); CI always installs it",
)
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "a long test password"
# The people of the browser tests: created before the app starts, so no first-admin link.
PEOPLE = {"ana": "trader", "tom": "trader", "vic": "viewer", "ada": "admin"}
# For apps whose tests need no sample data: the engine then imports nothing on its first run.
NO_SEED = {"CANDLELAB_SEED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as r:
            return r.read() == b"ok"
    except OSError:
        return False


def app_database(home):
    """The (migrated) database of the data directory `home`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CANDLELAB_HOME", str(home))
        mp.delenv("DATABASE_URL", raising=False)
        return db.init()


def start_app(home, port: int, people: dict[str, str] | None = PEOPLE, env: dict | None = None):
    """scripts/start.py on `port` over the data directory `home`, with `people` (name → role,
    password PASSWORD) added first; the process (its own session: kill the group)."""
    database = app_database(home)
    for name, role in (people or {}).items():
        make_account(database, name, role, password=PASSWORD)
    full_env = {**os.environ, "CANDLELAB_HOME": str(home), **(env or {})}
    full_env.pop("DATABASE_URL", None)
    log = open(home / "app.log", "a")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "scripts/start.py", "--port", str(port)],
        cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def stop_app(proc) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


class RunningApp:
    """scripts/start.py (with PEOPLE) on a fresh data directory, up: Streamlit answers and the
    engine is online. `port`: one a test chose before (a sign-on provider's redirect)."""

    def __init__(self, home, env: dict | None = None, port: int | None = None) -> None:
        self.home = home
        port = port or free_port()
        self.proc = start_app(home, port, env=env)
        self.url = f"http://127.0.0.1:{port}"
        self.database = app_database(home)
        try:
            wait_until(lambda: healthy(self.url), 90, 0.2, "Streamlit health")
            wait_until(lambda: engines.alive(self.database), 90, 0.2, "engine online")
        except BaseException:
            self.stop()
            raise

    def fit_to_share(self) -> bool:
        """Up (scripts/start.py exits when Streamlit does), with nothing running that a test
        would see."""
        d = self.database
        return (
            self.proc.poll() is None
            and bool(engines.alive(d))
            and sessions.running_count(d) == 0
            and jobs.running_count(d) == 0
            and bus.queue_depth(d) == 0
        )

    def stop(self) -> None:
        stop_app(self.proc)
        self.database.dispose()


class AppPool:
    """The app the tests of one module share (see the module's docstring)."""

    def __init__(self, tmp_path_factory, env: dict | None) -> None:
        self.tmp_path_factory, self.env = tmp_path_factory, env
        self.current: RunningApp | None = None

    def get(self, fresh: bool = False) -> RunningApp:
        if self.current and (fresh or not self.current.fit_to_share()):
            self.close()
        if self.current is None:
            self.current = RunningApp(self.tmp_path_factory.mktemp("app"), self.env)
        return self.current

    def close(self) -> None:
        if self.current:
            self.current, app = None, self.current
            app.stop()


@pytest.fixture(scope="module")
def app_pool(request, tmp_path_factory):
    pool = AppPool(tmp_path_factory, getattr(request.module, "APP_ENV", None))
    yield pool
    pool.close()


def handed_out(running: RunningApp, monkeypatch):
    """What a test gets: the URL and the database; this process uses that data directory."""
    monkeypatch.setenv("CANDLELAB_HOME", str(running.home))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return running.url, running.database


@pytest.fixture
def app(app_pool, monkeypatch):
    """The whole product on a data directory the module's tests share (the engine seeded real
    data there); the URL and the database."""
    return handed_out(app_pool.get(), monkeypatch)


@pytest.fixture
def spoils_app(app_pool, app):
    """This test leaves the shared app unfit for others: it is stopped after the test."""
    yield
    app_pool.close()


@pytest.fixture
def fresh_app(app_pool, monkeypatch):
    """The whole product on a fresh data directory, for this test alone; the URL and the
    database."""
    running = app_pool.get(fresh=True)
    try:
        yield handed_out(running, monkeypatch)
    finally:
        app_pool.close()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import expect, sync_playwright

    # A cold app on a busy 2-core machine (engine seeding and importing torch beside it) can
    # take longer than Playwright's 5 s default to draw its first page.
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser(chromium):
    """The module's Chromium; the browser contexts a test opens are closed after it."""
    yield chromium
    for context in chromium.contexts:
        context.close()


def new_page(browser):
    """A page in its own browser context: its own cookies, so its own person."""
    pg = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    pg.set_default_timeout(30_000)
    return pg


@pytest.fixture
def page(browser):
    return new_page(browser)


def sign_in(page, url: str, name: str = "ana", path: str = "", password: str = PASSWORD):
    """Sign in through the sign-in page, wait until the browser holds its session cookie, then
    open `path`."""
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_role("textbox", name="Account name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()
    wait_until(lambda: any(c["name"] == "candlelab_session" for c in page.context.cookies()),
               10, 0.1, "session cookie")  # fmt: skip
    if path:
        page.goto(url + path)


def next_id(database, table: str) -> int:
    """The id the next row of `table` gets: one past the largest there (SQLite's rowid rule; no
    table here is AUTOINCREMENT, and deletes that keep ids are soft). On a shared app a test
    expects the ids of what it makes from this, not from a fresh database's 1, 2, …"""
    from sqlalchemy import text

    with database.connect() as conn:
        return conn.scalar(text(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"))


def stat(page, label: str):
    """The value of one figure of a stat strip (pages/stats.py), e.g. the Live panel's Status."""
    return page.locator(f'[data-stat="{label}"] .value')
