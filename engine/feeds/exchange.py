"""Live candles from an exchange through ccxt (an optional install: `pip install ccxt`).

Polls `fetch_ohlcv` and emits a candle only once it has closed (its open time plus one
interval is in the past by the exchange's clock as we know it): the newest candle an exchange
returns is usually still forming and would change under the model. Network errors are retried
with backoff; an unknown symbol or exchange ends the feed with a FeedError.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator

from engine.feeds.base import Bar, Feed, FeedError
from market import timeframes

log = logging.getLogger(__name__)


def make_client(exchange_id: str, options: dict | None = None):
    """A ccxt exchange instance, or FeedError if ccxt or the exchange is unavailable."""
    try:
        import ccxt
    except ModuleNotFoundError:
        raise FeedError("the exchange feed needs the ccxt package: pip install ccxt") from None
    cls = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
    if cls is None:
        raise FeedError(f"ccxt has no exchange {exchange_id!r} (e.g. binance, kraken, coinbase)")
    return cls({"enableRateLimit": True, **(options or {})})


class ExchangeFeed(Feed):
    """Closed candles of `symbol` on `timeframe` from a ccxt exchange (`client`)."""

    def __init__(
        self,
        client,
        symbol: str,
        timeframe: str,
        poll_s: float | None = None,
        limit: int = 500,
        clock: Callable[[], float] = time.time,
        max_backoff_s: float = 60.0,
    ) -> None:
        self.client, self.symbol, self.timeframe = client, symbol, timeframe
        self.interval = timeframes.interval_ms(timeframe)
        self.poll_s = poll_s if poll_s is not None else min(max(self.interval / 4000, 1.0), 10.0)
        self.limit, self.clock, self.max_backoff_s = limit, clock, max_backoff_s

    def fetch_closed(self, after_ts: int | None) -> list[Bar]:
        """One poll: the closed candles strictly after `after_ts`, in time order."""
        since = None if after_ts is None else after_ts + 1
        raw = self.client.fetch_ohlcv(self.symbol, self.timeframe, since=since, limit=self.limit)
        now_ms = int(self.clock() * 1000)
        out: dict[int, Bar] = {}
        for row in raw or []:
            ts = int(row[0])
            if (after_ts is not None and ts <= after_ts) or ts + self.interval > now_ms:
                continue  # already emitted, or still forming
            if any(v is None for v in row[1:5]):
                continue
            out[ts] = Bar(ts, *(float(v) for v in row[1:5]), float(row[5] or 0.0))
        return [out[t] for t in sorted(out)]

    def bars(self, stop: threading.Event, after_ts: int | None = None) -> Iterator[Bar]:
        import ccxt

        backoff = self.poll_s
        while not stop.is_set():
            try:
                batch = self.fetch_closed(after_ts)
                backoff = self.poll_s
            except ccxt.NetworkError as exc:  # timeouts, rate limits, outages: transient
                log.warning("%s: %s; retrying in %.0f s", self.client.id, exc, backoff)
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            except (ccxt.ExchangeError, ccxt.NotSupported) as exc:  # bad symbol, auth: final
                raise FeedError(f"{self.symbol} on {self.client.id}: {exc}") from exc
            seen = time.monotonic()  # when these candles were known to have closed
            for bar in batch:
                if stop.is_set():
                    return
                after_ts = bar.ts
                yield dataclasses.replace(bar, arrived=seen)
            if len(batch) < self.limit and stop.wait(self.poll_s):
                return
