"""The one trainer of a working model: a thread that does every piece of training work handed
to it, one at a time, in the order it was handed over.

Why a thread of its own: a live session must never wait for the training lock. It predicts,
stores, hands its training samples over here and moves on; if a batch job or a hung holder has
the lock, samples wait in this queue instead of the session waiting on the candle.

Two kinds of work:
- samples a session offers (`offer`): the caller never blocks. The queue of samples is bounded;
  when it is full the oldest sample is dropped and counted against the session it came from.
- requests (`submit`): manual training, a batch job's batches, checkpoint saves. Never dropped;
  the caller gets a Future with the result or the exception (a lock timeout, say).

After each piece of work, and every `tick_s` while idle, `tick()` runs on the trainer thread
(the working model's autosave policy lives there).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from engine import priority

log = logging.getLogger(__name__)
QUEUE_LIMIT = 1024  # session samples waiting per working model before the oldest is dropped


class TrainerStopped(RuntimeError):
    """The trainer stopped (engine shutdown) before it could do this work."""


@dataclass
class _Work:
    seq: int
    fn: Callable[[], object]
    future: Future | None = None
    session_id: int | None = None  # a session's sample (droppable)


class Trainer:
    def __init__(self, name: str, *, tick: Callable[[], None] | None = None,
                 limit: int = QUEUE_LIMIT, tick_s: float = 1.0) -> None:  # fmt: skip
        self.name, self.limit, self.tick_s = name, limit, tick_s
        self._tick = tick
        self._cond = threading.Condition()
        self._samples: deque[_Work] = deque()
        self._requests: deque[_Work] = deque()
        self._seq = itertools.count()
        self._waiting: Counter[int] = Counter()
        self._dropped: Counter[int] = Counter()
        self._busy = False
        self._stopping = False
        self.thread = threading.Thread(target=self._loop, name=f"trainer-{name}", daemon=True)
        self.thread.start()

    # -- handing work over (any thread) ------------------------------------------------------

    def offer(self, fn: Callable[[], object], *, session_id: int) -> None:
        """Queue a session's sample; never blocks. A full queue drops its oldest sample."""
        with self._cond:
            if self._stopping:
                self._dropped[session_id] += 1
                return
            if len(self._samples) >= self.limit:
                old = self._samples.popleft()
                self._waiting[old.session_id] -= 1
                self._dropped[old.session_id] += 1
            self._samples.append(_Work(next(self._seq), fn, session_id=session_id))
            self._waiting[session_id] += 1
            self._cond.notify()

    def submit(self, fn: Callable[[], object]) -> Future:
        """Queue work that must not be dropped; its Future holds the result or the error."""
        future: Future = Future()
        with self._cond:
            if self._stopping:
                future.set_exception(TrainerStopped(f"trainer {self.name} has stopped"))
                return future
            self._requests.append(_Work(next(self._seq), fn, future))
            self._cond.notify()
        return future

    def waiting(self, session_id: int) -> int:
        """Samples of `session_id` handed over and not applied yet."""
        with self._cond:
            return self._waiting[session_id]

    def dropped(self, session_id: int) -> int:
        """Samples of `session_id` dropped because the queue was full (or the engine stopped)."""
        with self._cond:
            return self._dropped[session_id]

    def busy(self) -> bool:
        """Whether any work is queued or in hand."""
        with self._cond:
            return bool(self._samples or self._requests or self._busy)

    def drain(self, timeout: float) -> bool:
        """Wait until everything handed over so far is done; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._samples or self._requests or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def stop(self, drain_s: float = 5.0) -> None:
        """Finish what is queued (for at most `drain_s`), then stop; what is left is dropped
        (samples) or fails with TrainerStopped (requests)."""
        self.drain(drain_s)
        with self._cond:
            self._stopping = True
            left = list(self._samples) + list(self._requests)
            self._samples.clear()
            self._requests.clear()
            for work in left:
                if work.session_id is not None:
                    self._waiting[work.session_id] -= 1
                    self._dropped[work.session_id] += 1
                elif work.future is not None:
                    work.future.set_exception(TrainerStopped(f"trainer {self.name} stopped"))
            self._cond.notify_all()
        self.thread.join(drain_s + 1)
        self._tick = None  # the owner's callback: no cycle left once stopped

    # -- the trainer thread ------------------------------------------------------------------

    def _next(self) -> _Work | None:
        """The oldest queued work of either kind (call with the condition held)."""
        if self._samples and (not self._requests or self._samples[0].seq < self._requests[0].seq):
            work = self._samples.popleft()
            self._waiting[work.session_id] -= 1
            return work
        return self._requests.popleft() if self._requests else None

    def _loop(self) -> None:
        priority.trainer_thread()
        while True:
            with self._cond:
                if not (self._samples or self._requests or self._stopping):
                    self._cond.wait(self.tick_s)
                if self._stopping:
                    return
                work = self._next()
                self._busy = work is not None
            if work is not None:
                self._run(work)
            if self._tick is not None:
                try:
                    self._tick()
                except Exception:
                    log.exception("trainer %s: tick failed", self.name)
            with self._cond:  # idle only once the tick after the work is done too
                self._busy = False
                self._cond.notify_all()

    def _run(self, work: _Work) -> None:
        try:
            result = work.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, or logged
            if work.future is not None:
                work.future.set_exception(exc)
            else:
                log.warning("trainer %s: a sample failed: %s", self.name, exc)
        else:
            if work.future is not None:
                work.future.set_result(result)
