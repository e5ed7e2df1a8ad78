"""Browser-test fixtures: the whole product started as the README starts it
(`scripts/start.py`: engine + Streamlit) on a fresh data directory, real Chromium, and signing
in through the sign-in page. Test modules import the fixtures they use."""

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
from db import engines
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


def start_app(home, port: int, people: dict[str, str] | None = PEOPLE, env: dict | None = None):
    """scripts/start.py on `port` over the data directory `home`, with `people` (name → role,
    password PASSWORD) added first; the process (its own session: kill the group)."""
    database = db.init()
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


@pytest.fixture
def app(home):
    """The whole product on a fresh data directory (the engine seeds real data); the URL and
    the database."""
    port = free_port()
    proc = start_app(home, port)
    url = f"http://127.0.0.1:{port}"
    database = db.get_engine()
    try:
        wait_until(lambda: healthy(url), 90, 0.2, "Streamlit health")
        wait_until(lambda: engines.alive(database), 90, 0.2, "engine online")
        yield url, database
    finally:
        stop_app(proc)


@pytest.fixture
def browser():
    from playwright.sync_api import expect, sync_playwright

    # A cold app on a busy 2-core machine (engine seeding and importing torch beside it) can
    # take longer than Playwright's 5 s default to draw its first page.
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


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
