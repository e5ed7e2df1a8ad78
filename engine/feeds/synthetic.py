"""A deterministic random-walk feed, for tests that need a live source without a database."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import numpy as np

from engine.feeds.base import Bar, Feed, Pacer
from market import timeframes


class SyntheticFeed(Feed):
    """`count` candles (None: endless) of a geometric random walk, seeded, one every `pace_s`
    seconds, starting at `start_ts`. Every bar is valid OHLCV (low <= open, close <= high)."""

    def __init__(
        self,
        symbol: str = "SYNTH",
        timeframe: str = "1m",
        seed: int = 0,
        count: int | None = None,
        start_ts: int = 1_700_000_000_000,
        pace_s: float = 0.0,
        price: float = 100.0,
        volatility: float = 0.002,
    ) -> None:
        self.symbol, self.timeframe = symbol, timeframe
        self.interval = timeframes.interval_ms(timeframe)
        self.seed, self.count, self.start_ts = seed, count, start_ts
        self.pace_s, self.price, self.volatility = pace_s, price, volatility

    def _walk(self) -> Iterator[Bar]:
        rng = np.random.default_rng(self.seed)
        price, i = self.price, 0
        while True:
            r = rng.standard_normal(3) * self.volatility
            o = price
            c = o * float(np.exp(r[0]))
            h = max(o, c) * float(np.exp(abs(r[1])))
            lo = min(o, c) * float(np.exp(-abs(r[2])))
            yield Bar(self.start_ts + i * self.interval, o, h, lo, c, float(rng.uniform(10, 100)))
            price, i = c, i + 1

    def bars(self, stop: threading.Event, after_ts: int | None = None) -> Iterator[Bar]:
        pacer = Pacer(self.pace_s)
        for n, bar in enumerate(self._walk()):
            if self.count is not None and n >= self.count:
                return
            if after_ts is not None and bar.ts <= after_ts:
                continue  # replaying the same seed makes resuming exact
            slot = pacer.wait(stop)
            if slot is None:
                return
            yield dataclasses.replace(bar, arrived=slot)
