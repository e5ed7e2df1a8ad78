"""Feeds emit completed candles only, in order, once each, and resume exactly."""

from __future__ import annotations

import json
import threading
import time

import ccxt
import pytest

from contract.access import SYSTEM_ACCOUNT
from engine.feeds import ExchangeFeed, FeedError, ReplayFeed, SyntheticFeed
from market.importer import import_candles
from tests.conftest import DATA

RECORDED = json.loads((DATA / "ccxt" / "binance_klines_btcusdt_1m.json").read_text())


@pytest.fixture
def stored(database):
    import_candles(
        database, DATA / "csv" / "good_generic.csv", "BTC/USDT", "1h", created_by=SYSTEM_ACCOUNT
    )
    return database


def test_replay_plays_stored_candles_in_order_and_resumes_after_the_last_one(stored):
    feed = ReplayFeed(stored, "BTC/USDT", "1h", pace_s=0)
    bars = list(feed.bars(threading.Event()))
    assert len(bars) == 40 and [b.ts for b in bars] == sorted(b.ts for b in bars)
    resumed = list(feed.bars(threading.Event(), after_ts=bars[24].ts))
    assert resumed == bars[25:]


def test_replay_keeps_its_pace_and_stops_promptly(stored):
    feed = ReplayFeed(stored, "BTC/USDT", "1h", pace_s=0.1)
    stop = threading.Event()
    t0 = time.monotonic()
    got = []
    for bar in feed.bars(stop):
        got.append(bar)
        if len(got) == 5:
            break
    assert 0.35 <= time.monotonic() - t0 < 1.5  # first immediately, then 4 × 0.1 s
    stop.set()
    t1 = time.monotonic()
    assert list(ReplayFeed(stored, "BTC/USDT", "1h", pace_s=30).bars(stop)) == []
    assert time.monotonic() - t1 < 0.5


def test_replay_of_missing_data_says_so(database):
    with pytest.raises(FeedError, match="no stored candles for NOPE 1h"):
        next(ReplayFeed(database, "NOPE", "1h", pace_s=0).bars(threading.Event()))


def test_synthetic_feed_is_valid_deterministic_and_resumable():
    feed = SyntheticFeed(seed=7, count=300)
    bars = list(feed.bars(threading.Event()))
    assert len(bars) == 300
    assert all(b.low <= min(b.open, b.close) and max(b.open, b.close) <= b.high for b in bars)
    assert bars == list(SyntheticFeed(seed=7, count=300).bars(threading.Event()))
    assert list(feed.bars(threading.Event(), after_ts=bars[99].ts)) == bars[100:]


class RecordedBinance:
    """ccxt's real binance client with its HTTP layer answering from recorded responses."""

    def __init__(self, polls, fail_first: bool = False):
        self.client = ccxt.binance({"enableRateLimit": False})
        self.client.set_markets([RECORDED["market"]])
        self.client.fetch = self.fetch
        self.polls = list(polls)
        self.fail_first = fail_first
        self.now_ms = polls[0]["clock_ms"]
        self.urls: list[str] = []

    def fetch(self, url, method="GET", headers=None, body=None):
        self.urls.append(url)
        if self.fail_first:
            self.fail_first = False
            raise ccxt.RequestTimeout("binance GET timed out (recorded)")
        if not self.polls:
            raise ccxt.NetworkError("no more recorded responses")
        poll = self.polls.pop(0)
        self.now_ms = poll["clock_ms"]
        return poll["response"]

    def clock(self) -> float:
        return self.now_ms / 1000


def collect(feed, stop, n):
    out = []
    for bar in feed.bars(stop):
        out.append(bar)
        if len(out) == n:
            stop.set()
    return out


def test_exchange_feed_emits_only_closed_candles_once_each():
    rec = RecordedBinance(RECORDED["polls"])
    feed = ExchangeFeed(rec.client, "BTC/USDT", "1m", poll_s=0.01, clock=rec.clock)
    bars = collect(feed, threading.Event(), 7)
    t0 = RECORDED["polls"][0]["response"][0][0]
    assert [b.ts for b in bars] == [t0 + i * 60_000 for i in range(7)]  # 5 then 6 never forming
    assert bars[0].open == 61090.0 and bars[0].volume == 10.5
    assert "startTime=" + str(t0 + 4 * 60_000 + 1) in rec.urls[1]  # asks only for what is new


def test_exchange_feed_retries_network_errors():
    rec = RecordedBinance(RECORDED["polls"], fail_first=True)
    feed = ExchangeFeed(rec.client, "BTC/USDT", "1m", poll_s=0.01, clock=rec.clock)
    assert len(collect(feed, threading.Event(), 5)) == 5


def test_exchange_feed_unknown_symbol_is_a_feed_error():
    rec = RecordedBinance(RECORDED["polls"])
    feed = ExchangeFeed(rec.client, "NOPE/USDT", "1m", poll_s=0.01, clock=rec.clock)
    with pytest.raises(FeedError, match="NOPE/USDT"):
        next(feed.bars(threading.Event()))
