"""The feed contract: completed candles, in time order, each exactly once."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bar:
    """One completed candle; `ts` is its open time in epoch ms UTC. `arrived` is when it
    became available (`time.monotonic()`): a paced replay's slot, or when a live feed saw it
    close; a session's candle → prediction latency counts from there."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    arrived: float | None = field(default=None, compare=False)


class FeedError(RuntimeError):
    """A feed cannot go on (unknown symbol, missing package); the message says why."""


class Feed(ABC):
    """A source of completed candles for one symbol and timeframe.

    `bars(stop, after_ts)` yields only candles that have closed, strictly after `after_ts`
    (so a resumed session neither repeats nor skips one), in increasing time order, and
    returns when `stop` is set or the source is exhausted. It never yields a candle that is
    still forming.
    """

    symbol: str
    timeframe: str

    @abstractmethod
    def bars(self, stop: threading.Event, after_ts: int | None = None) -> Iterator[Bar]: ...


class Pacer:
    """Spaces events `pace_s` apart on a fixed schedule (no drift); 0 means no waiting."""

    def __init__(self, pace_s: float) -> None:
        self.pace_s = pace_s
        self.due: float | None = None

    def wait(self, stop: threading.Event) -> float | None:
        """Wait for the next slot; its time (`time.monotonic()`; now when unpaced), or None if
        `stop` was set meanwhile. A consumer that fell behind gets the slots it missed at once,
        back to at most one slot late, then the schedule goes on from there."""
        if self.pace_s <= 0:
            return None if stop.is_set() else time.monotonic()
        now = time.monotonic()
        if self.due is None:
            self.due = now
        if self.due > now and stop.wait(self.due - now):
            return None
        slot = self.due
        self.due = max(self.due + self.pace_s, time.monotonic() - self.pace_s)
        return None if stop.is_set() else slot
