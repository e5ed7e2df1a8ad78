"""Roles as people meet them, in real Chromium: a viewer sees the data and no control that
changes anything; a trader cannot stop another trader's session (no button, and the same
command sent straight to the bus is refused by the engine); an admin can; the Audit page lists
each of these, with the refusal."""

from __future__ import annotations

import pytest

from db import accounts, bus, candles, sessions
from tests.browser import NO_CHROMIUM, app_pool, browser, chromium, fresh_app, new_page, sign_in
from tests.conftest import wait_until

pytestmark = [pytest.mark.browser, NO_CHROMIUM]
# What changes something, page by page: none of it may be on a viewer's screen.
CHANGES = {
    "/live": ["Live Inference (No Training)", "Stop session", "Apply mode"],
    "/annotate": ["Save annotation", "Import", "Delete", "Save edits"],
    "/train": ["Start training"],
    "/backtest": ["Run backtest"],
    "": ["Backtest Visible Chart"],
}


def start_session(database, who: str) -> int:
    wait_until(lambda: len(candles.load(database, "NASDAQ", "1d")) > 200, 60, 0.5, "NASDAQ")
    df = candles.load(database, "NASDAQ", "1d")
    payload = {"symbol": "NASDAQ", "timeframe": "1d", "mode": "none",
               "feed": {"kind": "replay", "pace_s": 1.0, "start_ts": int(df.ts.iloc[-200])}}  # fmt: skip
    row = bus.wait(database, bus.submit(database, "session.start", payload, created_by=who), 30)
    assert row.status == "done", row.error
    return row.result["session_id"]


def test_viewer_trader_admin_and_the_audit_page(fresh_app, browser):
    """Its own app: it counts audit events and disables an account."""
    from playwright.sync_api import expect

    url, database = fresh_app
    toms = start_session(database, "tom")

    viewer = new_page(browser)
    sign_in(viewer, url, "vic")
    for path, controls in CHANGES.items():
        viewer.goto(url + path)
        expect(viewer.get_by_text("Signed in as vic · viewer")).to_be_visible()
        if path in ("", "/live", "/annotate"):  # the data shows
            expect(viewer.get_by_test_id("stVegaLiteChart").first).to_be_visible()
        for name in controls:
            assert viewer.get_by_role("button", name=name).count() == 0, (path, name)
        assert viewer.locator("input[type=file]").count() == 0, path
        assert viewer.get_by_test_id("stException").count() == 0, path
    viewer.goto(url + "/data")
    expect(viewer.get_by_role("heading", name="Data", exact=True)).to_be_visible()
    assert viewer.locator("input[type=file]").count() == 0

    trader = new_page(browser)
    sign_in(trader, url, "ana", path="/live")
    expect(trader.get_by_text(f"Session #{toms} is tom's")).to_be_visible()
    assert trader.get_by_role("button", name="Stop session").count() == 0
    forged = bus.wait(database, bus.submit(database, "session.stop", {"session_id": toms},
                                           created_by="ana"), 30)  # fmt: skip
    assert forged.status == "failed" and "ana (trader) may not stop the session" in forged.error
    assert sessions.get(database, toms).status == "running"

    admin = new_page(browser)
    sign_in(admin, url, "ada", path="/live")
    admin.get_by_role("button", name="Stop session").click()
    wait_until(lambda: sessions.get(database, toms).status == "stopped", 30, 0.2, "stopped")

    admin.goto(url + "/audit")
    expect(admin.get_by_role("heading", name="Audit")).to_be_visible()
    admin.get_by_test_id("stSelectbox").filter(has_text="Account").click()
    admin.get_by_role("option", name="ana", exact=True).click()
    admin.get_by_test_id("stSelectbox").filter(has_text="Action").click()
    admin.get_by_role("option", name="session", exact=True).click()
    expect(admin.get_by_text("1 events; 1 refused")).to_be_visible()
    admin.get_by_test_id("stSelectbox").filter(has_text="Account").click()
    admin.get_by_role("option", name="ada", exact=True).click()
    expect(admin.get_by_text("1 events; 0 refused")).to_be_visible()  # her session.stop
    assert admin.get_by_test_id("stException").count() == 0

    # Disabling an account ends what its open tabs show within seconds, untouched: the sidebar
    # checks every 2 s, and on the Live page the panel does (its sidebar refreshes every 10 s).
    watching = new_page(browser)
    sign_in(watching, url, "vic", path="/live")
    expect(watching.get_by_test_id("stVegaLiteChart").first).to_be_visible()
    accounts.change(database, "vic", by="ada", disabled=True)
    expect(watching.get_by_text("You were signed out")).to_be_visible(timeout=5_000)
    expect(viewer.get_by_text("You were signed out")).to_be_visible(timeout=10_000)
    assert viewer.get_by_test_id("stSidebarNav").count() == 0
