"""The training lock: one per in-memory model, held by every weight update.

Acquiring has a timeout; on timeout `TrainingLockTimeout` says who holds the lock (operation,
thread, since when), so a stuck trainer is visible instead of hanging its callers.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Holder:
    operation: str
    thread: str
    since: datetime

    def describe(self) -> str:
        held = (datetime.now(UTC) - self.since).total_seconds()
        return (
            f"{self.operation} on thread {self.thread!r} since {self.since:%H:%M:%S.%f}"[:-3]
            + f" UTC ({held:.1f} s)"
        )


class TrainingLockTimeout(TimeoutError):
    """The lock was not free within the timeout; `holder` is who had it."""

    def __init__(self, model_key: str, timeout_s: float, holder: Holder | None, wanted: str):
        who = holder.describe() if holder else "a holder that has just released it"
        super().__init__(
            f"training lock of model {model_key} not acquired within {timeout_s:g} s for "
            f"{wanted}: held by {who}"
        )
        self.holder = holder


class TrainingLock:
    """A non-reentrant lock that knows its holder and how long callers waited."""

    def __init__(self, model_key: str, timeout_s: float = 30.0) -> None:
        self.model_key = model_key
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self.holder: Holder | None = None

    @contextmanager
    def hold(self, operation: str, timeout_s: float | None = None):
        """Hold the lock for `operation`; yields the seconds spent waiting for it."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        t0 = time.perf_counter()
        if not self._lock.acquire(timeout=timeout):
            raise TrainingLockTimeout(self.model_key, timeout, self.holder, operation)
        waited = time.perf_counter() - t0
        self.holder = Holder(operation, threading.current_thread().name, datetime.now(UTC))
        try:
            yield waited
        finally:
            self.holder = None
            self._lock.release()
