"""Stored candles played back as if live: the default source for demos and resumable sessions."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from sqlalchemy import Engine

from db import candles
from engine.feeds.base import Bar, Feed, FeedError, Pacer


class ReplayFeed(Feed):
    """Plays the stored candles of (symbol, timeframe) one every `pace_s` seconds (default 1),
    from `start_ts` (or the first stored candle) up to `end_ts` (or the last)."""

    def __init__(
        self,
        database: Engine,
        symbol: str,
        timeframe: str,
        pace_s: float = 1.0,
        start_ts: int | None = None,
        end_ts: int | None = None,
        page: int = 1000,
    ) -> None:
        if pace_s < 0:
            raise FeedError(f"pace must be 0 or more seconds, got {pace_s}")
        self.db, self.symbol, self.timeframe = database, symbol, timeframe
        self.pace_s, self.start_ts, self.end_ts, self.page = pace_s, start_ts, end_ts, page

    def bars(self, stop: threading.Event, after_ts: int | None = None) -> Iterator[Bar]:
        cursor = after_ts
        if self.start_ts is not None and (cursor is None or cursor < self.start_ts):
            cursor = self.start_ts - 1
        if cursor is None and not candles.after(self.db, self.symbol, self.timeframe, None, 1):
            raise FeedError(f"no stored candles for {self.symbol} {self.timeframe} to replay")
        pacer = Pacer(self.pace_s)
        while not stop.is_set():
            rows = candles.after(self.db, self.symbol, self.timeframe, cursor, self.page)
            if not rows:
                return
            for row in rows:
                if self.end_ts is not None and row[0] > self.end_ts:
                    return
                slot = pacer.wait(stop)
                if slot is None:
                    return
                cursor = row[0]
                yield Bar(*row, arrived=slot)
