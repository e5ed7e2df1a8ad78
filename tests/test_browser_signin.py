"""Signing in, in real Chromium against the app started as the README starts it: the first
admin's one-time link on a fresh data directory, a signed-out browser that reaches nothing
but the sign-in page, and single sign-on through a local OpenID Connect provider.

The lock test and the single sign-on test share one app (`sso_app`, configured for the
provider): each reads only the audit events of its own person (tom; olga), whom no other test
here uses, so one app start serves both."""

from __future__ import annotations

import re

import pytest

from db import accounts, audit
from tests.browser import (
    NO_CHROMIUM,
    NO_SEED,
    PASSWORD,
    RunningApp,
    app_database,
    browser,
    chromium,
    free_port,
    handed_out,
    healthy,
    new_page,
    start_app,
    stop_app,
)
from tests.conftest import make_account, wait_until
from tests.oidc import provider

pytestmark = [pytest.mark.browser, NO_CHROMIUM]
PAGES = ["", "/live", "/annotate", "/train", "/backtest", "/report?id=1", "/data", "/admin",
         "/audit"]  # fmt: skip


@pytest.fixture(scope="module")
def sso_provider_and_app(tmp_path_factory):
    """A local OpenID Connect provider and, on the port it redirects to, the app (PEOPLE, and
    olga, a trader whose e-mail the provider reports; no sample data: signing in needs none)."""
    home, port = tmp_path_factory.mktemp("app"), free_port()
    database = app_database(home)
    make_account(database, "olga", "trader")
    accounts.change(database, "olga", by="system", email="olga@example.com")
    with provider(tmp_path_factory, port) as idp:
        running = RunningApp(home, env={**idp.env, **NO_SEED}, port=port)
        try:
            yield idp, running
        finally:
            running.stop()


@pytest.fixture
def sso_app(sso_provider_and_app, monkeypatch):
    """The module's app configured for single sign-on; the provider, the URL and the
    database."""
    idp, running = sso_provider_and_app
    return (idp, *handed_out(running, monkeypatch))


def test_first_start_prints_a_one_time_link_that_signs_the_admin_in(home, browser):
    """A fresh data directory: the start prints a link; it signs in once, asks for a password,
    and lands on Home as admin; the same link does nothing the second time; the password then
    signs in."""
    from playwright.sync_api import expect

    port = free_port()
    proc = start_app(home, port, people=None, env=NO_SEED)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url), 90, 0.2, "Streamlit health")
        log = home / "app.log"
        link = wait_until(lambda: re.search(r"http://\S+/\?signin=\S+", log.read_text()), 30)
        page = new_page(browser)
        for path in PAGES:  # signed out: every address shows the sign-in page, and only it
            page.goto(url + path)
            expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
            assert page.get_by_test_id("stSidebarNav").count() == 0
        page.goto(link.group(0))
        expect(page.get_by_role("heading", name="Choose a password")).to_be_visible()
        page.get_by_role("textbox", name="New password").fill("the admin's new password")
        page.get_by_role("textbox", name="The same again").fill("the admin's new password")
        page.get_by_role("button", name="Save password").click()
        expect(page.get_by_text("Signed in as admin · admin")).to_be_visible()
        expect(page.get_by_role("link", name="Audit")).to_be_visible()

        again = new_page(browser)  # the link was for one use
        again.goto(link.group(0))
        expect(again.get_by_text("This sign-in link has been used or has expired")).to_be_visible()
        again.goto(url + "/live")  # a bookmark: signing in there opens that page
        again.get_by_role("textbox", name="Account name").fill("admin")
        again.get_by_role("textbox", name="Password").fill("the admin's new password")
        again.get_by_role("button", name="Sign in", exact=True).click()
        expect(again.get_by_text("Signed in as admin · admin")).to_be_visible()
        assert again.url.endswith("/live")
    finally:
        stop_app(proc)


def test_wrong_passwords_lock_the_account_and_the_lock_is_audited(sso_app, browser):
    """It counts tom's audit events and locks tom: no other test here uses him."""
    from playwright.sync_api import expect

    _, url, database = sso_app
    page = new_page(browser)
    page.goto(url)
    for attempt in range(1, accounts.MAX_FAILURES_PER_ACCOUNT + 2):
        page.get_by_role("textbox", name="Account name").fill("tom")
        page.get_by_role("textbox", name="Password").fill("not the password")
        page.get_by_role("button", name="Sign in", exact=True).click()
        wait_until(lambda n=attempt: len(audit.query(database, audit.Filter(actor="tom"))) == n,
                   30, 0.1, f"attempt {attempt} in the audit log")  # fmt: skip
        expect(page.get_by_text(re.compile("do not match|Too many failed"))).to_be_visible()
    page.get_by_role("textbox", name="Password").fill(PASSWORD)  # right, but too late
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_text("Too many failed sign-ins")).to_be_visible()
    assert page.get_by_test_id("stSidebarNav").count() == 0
    events = audit.query(database, audit.Filter(actor="tom"))
    assert [e.action for e in events].count("signin.failed") == accounts.MAX_FAILURES_PER_ACCOUNT
    assert {e.action for e in events} == {"signin.failed", "signin.locked"}


def test_single_sign_on_through_a_local_openid_provider_lands_with_the_mapped_role(
    sso_app, browser
):
    """Streamlit's st.login against a real OpenID Connect provider (Authlib) the test starts:
    the e-mail it reports maps to the account olga, a trader; an unknown e-mail gets in
    nowhere."""
    from playwright.sync_api import expect

    idp, _, database = sso_app
    for email, lands in (("nobody@example.com", False), ("olga@example.com", True)):
        page = new_page(browser)
        page.goto(idp.app_url)
        page.get_by_role("button", name="Sign in with single sign-on").click()
        page.get_by_label("E-mail").fill(email)
        page.get_by_role("button", name="Sign in").click()
        if lands:
            expect(page.get_by_text("Signed in as olga · trader")).to_be_visible()
            expect(page.get_by_role("link", name="Live")).to_be_visible()
            assert page.get_by_role("link", name="Admin").count() == 0
        else:
            expect(page.get_by_text("nobody@example.com has no enabled account")).to_be_visible()
            assert page.get_by_test_id("stSidebarNav").count() == 0
    (event,) = audit.query(database, audit.Filter(actor="olga", action="signin"))
    assert "single sign-on" in event.detail
