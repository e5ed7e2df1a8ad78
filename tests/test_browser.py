"""The app as a person sees it, in real Chromium (Debian's package), started the way the README
starts it (`scripts/start.py`: engine + Streamlit).

The tests share one app (`tests/browser.py`): each expects the ids of what it makes, not 1, 2, …
The two that leave it unfit for the others (a killed engine; a dataset that then shows first
everywhere) ask for `spoils_app`, and come last, so that only the one after them pays for a start."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from contract.access import SYSTEM_ACCOUNT
from db import annotations as annotation_rows
from db import candles, engines
from db import sessions as session_rows
from db.annotations import AnnotationIn
from tests.browser import (
    NO_CHROMIUM,
    app,
    app_pool,
    browser,
    chromium,
    next_id,
    page,
    sign_in,
    spoils_app,
    stat,
)
from tests.conftest import DATA

pytestmark = [pytest.mark.browser, NO_CHROMIUM]


def test_annotate_by_clicking_two_candles_then_train_to_a_new_checkpoint(app, page):
    from playwright.sync_api import expect

    url, database = app
    n = next_id(database, "annotations")  # this test's first annotation
    sign_in(page, url, "ada", path="/annotate")  # an admin: she also activates the result
    metrics = page.get_by_test_id("stMetricValue")
    for fraction, filled in ((0.35, 0), (0.6, 1)):
        chart = page.get_by_test_id("stVegaLiteChart").first
        expect(chart).to_be_visible()
        page.wait_for_timeout(800)  # let Vega attach its listeners
        box = chart.bounding_box()
        page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] * 0.5)
        expect(metrics.nth(filled)).not_to_have_text("—")
    entry, exit_ = metrics.nth(0).inner_text(), metrics.nth(1).inner_text()
    assert entry < exit_
    page.get_by_role("textbox", name="Note").fill("first try")
    page.get_by_text("short", exact=True).click()
    page.get_by_role("button", name="Save annotation").click()
    expect(page.get_by_text(f"Saved annotation {n}: short")).to_be_visible()
    # ready for the next trade: marks, note and side reset; Undo takes the save back
    expect(page.get_by_role("textbox", name="Note")).to_have_value("")
    expect(page.get_by_role("radio", name="long")).to_be_checked()
    expect(metrics.nth(0)).to_have_text("—")
    page.get_by_role("button", name="Undo").click()
    expect(page.get_by_text(f"Undid the create of annotation {n}.")).to_be_visible()
    from db import annotations

    assert [a for a in annotations.list_for(database) if a.id >= n] == []
    for fraction, filled in ((0.35, 0), (0.6, 1)):
        chart = page.get_by_test_id("stVegaLiteChart").first
        chart.scroll_into_view_if_needed()  # Undo is further down the page
        page.wait_for_timeout(800)
        box = chart.bounding_box()
        page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] * 0.5)
        expect(metrics.nth(filled)).not_to_have_text("—")
    # The button is drawn after the metrics: a shortcut pressed before it is enabled is lost.
    expect(page.get_by_role("button", name="Save annotation")).to_be_enabled()
    page.keyboard.press("Control+Enter")  # the Save shortcut
    expect(page.get_by_text(f"Saved annotation {n + 1}: long")).to_be_visible()
    assert [a.side for a in annotations.list_for(database) if a.id >= n] == ["long"]

    page.goto(url + "/train")
    page.get_by_text("Activate the result").click()
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("started on NASDAQ 1d")).to_be_visible()
    expect(page.get_by_text("100% · done: checkpoint")).to_be_visible(timeout=90_000)
    expect(page.get_by_test_id("stDataFrame").last).to_be_visible()
    from db import checkpoints as rows

    newest = rows.all_(database)[0]
    assert newest.parent_id is not None and newest.created_by == "ada" and newest.is_active
    expect(page.get_by_text(f"100% · done: checkpoint {newest.id} (active)")).to_be_visible()
    # the run list and the checkpoints refresh when the job ends, without a reload
    # (the grid keeps its cells in a hidden accessible table: attached, not visible)
    expect(page.get_by_text(f"done: checkpoint {newest.id} (active)", exact=True)).to_be_attached()
    activate = page.get_by_role("combobox", name="Activate checkpoint")
    expect(activate).to_have_value(f"#{newest.id} {newest.name} (active)")
    assert page.get_by_test_id("stException").count() == 0


def start_live_session(page, url, database, mode_title: str, pace_s: float, double_click=False):
    """Open the Live page as "ana" and start a replay session in the mode titled so; its id."""
    from playwright.sync_api import expect

    n = next_id(database, "sessions")
    sign_in(page, url, path="/live")
    page.get_by_role("spinbutton", name="Seconds per candle").fill(str(pace_s))
    page.get_by_role("spinbutton", name="Seconds per candle").press("Enter")
    button = page.get_by_role("button", name=mode_title)
    button.dblclick() if double_click else button.click()
    expect(page.get_by_text(f"Session #{n} started.")).to_be_attached()  # the form may fold
    return n


def test_live_page_runs_a_pivot_training_session_and_stops_it(app, page):
    from playwright.sync_api import expect

    url, database = app
    from db import checkpoints, sessions

    # The session trains a new working model from the active checkpoint (on a fresh app the
    # engine makes the first one when something first needs it).
    model = next_id(database, "working_models")
    # A double click starts one session: the click's request id makes the second one a no-op.
    n = start_live_session(page, url, database, "Live Inference + Pivot Training", 0.2,
                           double_click=True)  # fmt: skip
    base = checkpoints.active(database).id
    status = stat(page, "Status")
    expect(status).to_have_text("running")
    prediction = stat(page, "Prediction")
    expect(prediction).to_have_text(__import__("re").compile(r"^(BUY|SELL|HOLD) \d+%$"))
    candles_seen = stat(page, "Candles")
    first = int(candles_seen.inner_text())
    expect(candles_seen).not_to_have_text(str(first), timeout=10_000)  # it keeps updating
    expect(page.get_by_text("ghost candles")).to_be_visible()
    expect(
        page.get_by_text(
            __import__("re").compile(rf"Model: working model W{model} .*from checkpoint #{base}\b")
        )
    ).to_be_visible()
    queue = stat(page, "Training queue")
    expect(queue).to_have_text(__import__("re").compile(r"^\d+ waiting$"))
    equity = stat(page, "Equity")
    expect(equity).not_to_have_text("0.00")
    # Switch mode offers all four modes, and Apply says what it did.
    switch = page.get_by_role("combobox", name="Switch mode")
    switch.click()
    switch.fill("Per-Candle")
    switch.press("Enter")
    expect(switch).to_have_value("Live Inference + Per-Candle Training")
    page.get_by_role("button", name="Apply mode").click()
    expect(page.get_by_text("is now in mode Live Inference + Per-Candle Training")).to_be_visible()
    page.get_by_role("button", name="Stop session").click()
    expect(status).to_have_text("stopped", timeout=15_000)
    (row,) = [s for s in sessions.all_(database) if s.id >= n]
    assert row.mode == "every_candle" and row.created_by == "ana" and row.status == "stopped"
    assert page.get_by_test_id("stException").count() == 0

    # Manual mode on the working model the first session trained: accepted, then applied.
    page.get_by_text("Working model", exact=True).click()  # the form is open: nothing runs
    page.get_by_role("button", name="Manual mode (Train on Current Candle)").click()
    expect(status).to_have_text("running")
    expect(stat(page, "Candles")).not_to_have_text("0")
    page.get_by_role("button", name="BUY", exact=True).click()
    expect(
        page.get_by_text(__import__("re").compile(r"as BUY: applied .* \(step \d+\)"))
    ).to_be_visible()
    # …and marked on the chart: a ring at that candle, in the chosen action's color
    chart = page.get_by_test_id("stVegaLiteChart").first
    expect(chart.locator("[aria-label*='manual label: BUY']").first).to_be_attached()
    second = sessions.all_(database)[0]
    assert second.mode == "manual" and second.working_model_id == row.working_model_id
    page.get_by_role("button", name="Stop session").click()
    expect(status).to_have_text("stopped", timeout=15_000)
    assert page.get_by_test_id("stException").count() == 0


def test_live_chart_keeps_a_chosen_view_while_candles_arrive_and_a_stop_freezes_the_panel(
    app, page
):
    import re

    from playwright.sync_api import expect

    url, database = app
    session_id = start_live_session(page, url, database, "Live Inference (No Training)", 0.3)
    candles_seen = stat(page, "Candles")
    expect(candles_seen).to_have_text(re.compile(r"^([2-9]\d|\d{3,})$"), timeout=30_000)  # ≥ 20
    follow = page.get_by_test_id("stCheckbox").filter(has_text="Follow the latest candle")
    expect(follow).to_have_attribute("data-selected", "true")  # following by default
    chart = page.get_by_test_id("stVegaLiteChart").first
    # The x axis's accessible description names its domain ("… values from <date> to <date>").
    x_axis = chart.locator("g.role-axis[aria-label^='X-axis']")
    following = x_axis.get_attribute("aria-label")
    expect(x_axis).not_to_have_attribute("aria-label", following, timeout=10_000)  # it moves

    # A trade annotated meanwhile (on the Chart page, say) is drawn over the candles it spans.
    sess = session_rows.get(database, session_id)
    ts = candles.recent(database, sess.symbol, sess.timeframe, 10, sess.last_ts)["ts"]
    trade = AnnotationIn(sess.symbol, sess.timeframe, int(ts[1]), int(ts[6]), "long",
                         note="seen on the Live chart")  # fmt: skip
    annotation_rows.create(database, trade, SYSTEM_ACCOUNT)
    span = chart.locator("[aria-label*='side: long'][aria-label*='note: seen on the Live chart']")
    expect(span.first).to_be_attached(timeout=10_000)

    page.wait_for_timeout(500)  # let Vega attach its listeners
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.mouse.wheel(0, -400)  # zoom in: the person chose a view
    expect(follow).not_to_have_attribute("data-selected", "true")  # following stops by itself
    expect(page.get_by_text("your view: it stays while candles arrive")).to_be_visible()
    chosen = x_axis.get_attribute("aria-label")
    for _ in range(10):  # until the zoom's rerun has drawn the chosen view: it stops moving
        page.wait_for_timeout(1500)
        chosen, settled = x_axis.get_attribute("aria-label"), chosen
        if chosen == settled:
            break
    assert chosen == settled and chosen != following
    shown = page.get_by_text(re.compile(r"^Showing .* UTC · your view")).inner_text()
    before = int(candles_seen.inner_text())
    page.wait_for_timeout(5000)
    assert int(candles_seen.inner_text()) >= before + 5  # candles kept arriving…
    assert x_axis.get_attribute("aria-label") == chosen  # …and the view stayed where it was put
    assert page.get_by_text(re.compile(r"^Showing .* UTC · your view")).inner_text() == shown

    follow.locator("label").click()  # follow again: the view jumps to the newest candles
    expect(follow).to_have_attribute("data-selected", "true")
    expect(page.get_by_text(re.compile(r"^Showing .* following the latest candle"))).to_be_visible()
    expect(x_axis).not_to_have_attribute("aria-label", chosen)

    page.get_by_role("button", name="Stop session").click()
    status = stat(page, "Status")
    expect(status).to_have_text("stopped", timeout=15_000)
    position = stat(page, "Position")
    expect(position).to_have_text(re.compile(r"^(long|short|flat) \(at stop\)$"))
    unrealized = stat(page, "Unrealized PnL")
    value, n = unrealized.inner_text(), candles_seen.inner_text()
    page.wait_for_timeout(2500)
    assert (unrealized.inner_text(), candles_seen.inner_text()) == (value, n)  # nothing moves
    expect(page.get_by_role("button", name="Stop session")).to_have_count(0)  # controls redrawn
    assert page.get_by_test_id("stException").count() == 0


def test_backtest_visible_chart_then_open_the_report_and_download_csv(app, page):
    from playwright.sync_api import expect

    url, database = app
    b = next_id(database, "backtests")  # this test's first backtest
    # A report URL is never Markdown: an image in ?id= is shown as text, and nothing is fetched.
    fetched = []
    page.on("request", lambda r: r.url.startswith("http://127.0.0.1:9/") and fetched.append(r.url))
    sign_in(page, url)
    page.goto(url + "/report?id=![x](http://127.0.0.1:9/p.png)")
    expect(page.get_by_text("![x](http://127.0.0.1:9/p.png)", exact=False).first).to_be_visible()
    assert fetched == []
    page.goto(url)
    expect(page.get_by_text("250 candles, 2018-01-03")).to_be_visible()
    page.get_by_role("button", name="Backtest Visible Chart").click()
    expect(page.get_by_text("started on 250 candles")).to_be_visible()
    page.get_by_role("link", name="Watch it on the Backtest page").click()
    expect(page.get_by_text(__import__("re").compile(r"· done · 100%"))).to_be_visible(
        timeout=30_000
    )
    page.get_by_role("link", name=__import__("re").compile(r"Open report #\d+")).first.click()
    expect(
        page.get_by_role("heading", name=__import__("re").compile(r"Backtest #\d+"))
    ).to_be_visible()
    assert "report?id=" in page.url
    expect(page.get_by_test_id("stMetric").filter(has_text="# Trades")).to_be_visible()
    with page.expect_download() as info:
        page.get_by_role("button", name="Download trades (CSV)").click()
    text = Path(info.value.path()).read_text()
    with page.expect_download() as html:  # built on click: a mailable page with inline SVG
        page.get_by_role("button", name="Export as HTML").click()
    assert "<svg" in Path(html.value.path()).read_text()
    assert text.splitlines()[0].startswith(
        "entry_time,exit_time,side,entry_price,exit_price,pnl,return_pct"
    )
    from db import backtests

    (row,) = [r for r in backtests.all_(database) if r.id >= b]
    assert (
        row.created_by == "ana"
        and row.symbol == "NASDAQ"
        and row.metrics["# Trades"] == len(text.splitlines()) - 1
    )
    assert page.get_by_test_id("stException").count() == 0

    # A strategy from elsewhere: a signals file written in New York time, one row past the data.
    signals = Path(info.value.path()).parent / "ny_signals.csv"
    signals.write_text("Date,Signal\n2017-03-01 00:00-05:00,buy\n2018-03-01 00:00-05:00,sell\n"
                       "2030-01-02,BUY\n")  # fmt: skip
    page.goto(url + "/backtest")  # a reload: the browser stays signed in
    expect(page.get_by_text("Signed in as ana")).to_be_visible()
    page.get_by_text("New backtest").click()
    page.get_by_text("A signals file (timestamp,action)").click()
    page.locator("input[type=file]").set_input_files(str(signals))
    expect(page.get_by_text("3 rows, 3 BUY / SELL signals")).to_be_visible()
    page.get_by_role("button", name="Run backtest").click()
    expect(page.get_by_text(f"Backtest #{b + 1} started")).to_be_visible()
    expect(page.get_by_role("link", name=f"Open report #{b + 1}")).to_be_visible(timeout=30_000)
    page.get_by_role("link", name=f"Open report #{b + 1}").click()
    expect(page.get_by_text("1 outside the range (0 before, 1 after)")).to_be_visible()
    second = backtests.get(database, b + 1)
    assert second.signals_name == "ny_signals.csv" and second.metrics["# Trades"] == 2
    assert (
        backtests.trades(database, second.id).entry_time[0][:10] == "2017-03-02"
    )  # Mar 1's close → next open
    assert page.get_by_test_id("stException").count() == 0


def test_data_page_reports_a_bad_file_and_imports_a_good_one(app, spoils_app, page):
    """It adds the dataset GOOD_GENERIC, which then comes first in every dataset picker."""
    from playwright.sync_api import expect

    url, _ = app
    sign_in(page, url, path="/data")

    page.locator("input[type=file]").set_input_files(str(DATA / "csv" / "bad_negative_volume.csv"))
    expect(page.get_by_text("nothing was changed")).to_be_visible()
    expect(page.get_by_role("button", name="Import")).to_be_disabled()

    page.locator("input[type=file]").set_input_files(str(DATA / "csv" / "good_generic.csv"))
    expect(page.get_by_text("No problems found.")).to_be_visible()
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text("good_generic.csv: 40 candles added.")).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0


def test_home_shows_engine_online_real_candles_then_offline_when_engine_stops(
    app, spoils_app, page
):
    from playwright.sync_api import expect

    url, database = app
    sign_in(page, url)
    engine_metric = page.get_by_test_id("stMetric").filter(has_text="Engine")
    # Home counts the live engines: this product runs one.
    expect(engine_metric.get_by_test_id("stMetricValue")).to_have_text("1 online")
    # The seeded real data: the NASDAQ Composite's last 250 daily candles of 2018.
    expect(page.get_by_text("250 candles, 2018-01-03 00:00 → 2018-12-31 00:00 UTC")).to_be_visible()
    expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0
    page.get_by_role("button", name="Ping engine").click()
    expect(page.get_by_text("pong from")).to_be_visible()

    live = engines.alive(database)
    os.kill(live[0].pid, signal.SIGKILL)  # a crash, not a polite stop
    expect(engine_metric.get_by_test_id("stMetricValue")).to_have_text("offline", timeout=15_000)
    expect(page.get_by_text("● engine offline")).to_be_visible()  # the sidebar badge
    # A command to a dead engine: the page stays usable and says why nothing answers.
    page.get_by_role("button", name="Ping engine").click()
    expect(page.get_by_text("has not answered yet: is it online?")).to_be_visible()
    page.get_by_role("link", name="Data").click()  # nothing waits: the person can move on
    expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible()
