"""CPU priorities inside the engine process: live inference first, background training second.

Python's cyclic garbage collector is the other source of stalls: a full collection walks every
long-lived object (a loaded engine holds about half a million: torch, pandas, SQLAlchemy, the
models) with the GIL held, 150–250 ms on this kind of machine, and every thread waits — a
replayed candle then misses its slot. `settle_heap()` collects once and moves what survives into
the permanent generation (`gc.freeze()`), so later full collections only walk what was made
since: a few ms. The engine calls it once it has started, and after loading a model.

On a small machine a batch training job would otherwise take every core and the GIL, and live
predictions would queue behind its steps. Background threads (jobs, trainers) therefore run at a
lower OS scheduling priority (Linux lets a thread lower its own) on one intra-op thread, and the
engine hands the GIL over more often than Python's default 5 ms, so a waiting inference thread
gets it quickly; live inference itself runs a traced model (one GIL acquisition per forward,
see `engine.inference.trace_last_candle`) on one intra-op thread.

A batch job's training step takes every core only while nothing else here needs one: no
thread serving live predictions is alive and at most one background job runs (`spare_cores`).
It then splits its batch into parts that run on threads of their own, each on one intra-op
thread (`parallel_parts`), rather than asking OpenMP for more threads: a part whose core is
taken for a moment only delays itself, while an OpenMP team waits at every op for its slowest
thread. With a live session it keeps to one thread, and the other core stays free for
predictions. Whether the spare cores make it faster is measured, not assumed (`ThreadChoice`).
The parts run in a step worker process (`engine.step_worker`), so that their Python does not
hold this process's GIL. Measured by `bench/model.py`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import torch

GIL_SWITCH_S = 0.0001
BACKGROUND_NICE = 19
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_serving: set[threading.Thread] = set()  # threads that called inference_thread()
_jobs: set[threading.Thread] = set()  # threads that called background_thread()
_registry = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None  # parallel_parts' helper threads
T, R = TypeVar("T"), TypeVar("R")


def configure_process() -> None:
    """Call once at engine start."""
    sys.setswitchinterval(GIL_SWITCH_S)


def inference_thread() -> None:
    """Call at the start of a thread that serves live predictions: one intra-op thread is as
    fast for a one-candle forward and leaves the other core to training, which keeps to one
    intra-op thread itself for as long as this thread lives."""
    torch.set_num_threads(1)
    _register(_serving)


def background_thread() -> None:
    """Call at the start of a background job's thread (affects that thread only)."""
    trainer_thread()
    _register(_jobs)


def trainer_thread() -> None:
    """Call at the start of a working model's trainer thread: background priority, but not a
    job (it waits idle between the work handed to it)."""
    torch.set_num_threads(1)  # per thread with OpenMP: the other threads keep their pool
    with contextlib.suppress(AttributeError, OSError, PermissionError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def _register(threads: set[threading.Thread]) -> None:
    with _registry:
        threads.add(threading.current_thread())


def _alive(threads: set[threading.Thread]) -> int:
    with _registry:
        threads.difference_update([t for t in threads if not t.is_alive()])
        return len(threads)


def serving() -> bool:
    """Whether a thread serving live predictions is alive here."""
    return bool(_alive(_serving))


def spare_cores() -> int:
    """Intra-op threads a training step may use now: every core while no thread serving live
    predictions is alive and at most one background job runs, else one."""
    return CORES if not _alive(_serving) and _alive(_jobs) <= 1 else 1


class ThreadChoice:
    """How many threads a repeated piece of CPU work split into parts (one model's training
    steps, a pass's chunks, validation) uses while cores are spare: the count that ran fastest
    here lately, measured in seconds per candle.

    Why measured, not assumed: parts on every core beat one thread on an idle machine, but not
    necessarily while other processes keep the cores busy. One thread comes first; every core
    is tried after EXPLORE_MIN steps, and whichever count is not in use is tried again later,
    less often each time it loses (up to EXPLORE_MAX), so a machine that calms down or gets
    busy is noticed. (A part whose core is taken for a moment only delays itself, so a try
    costs little even on busy cores.)"""

    EXPLORE_MIN, EXPLORE_MAX = 8, 256
    SMOOTHING = 0.5  # weight of the newest step in the running cost

    def __init__(self) -> None:
        self._cost: dict[int, float] = {}  # threads → seconds per candle of batch
        self._every, self._since = self.EXPLORE_MIN, 0
        self._trying: int | None = None
        self._lock = threading.Lock()

    def pick(self, spare: int) -> int:
        """The thread count for the next step, given `spare_cores()`."""
        if spare <= 1:
            return 1
        with self._lock:
            if 1 not in self._cost:
                return 1
            best = spare if self._cost.get(spare, math.inf) < self._cost[1] else 1
            self._since += 1
            if self._since < self._every:
                return best
            self._since, other = 0, 1 if best == spare else spare
            self._trying = other
            return other

    def record(self, threads: int, seconds: float, candles: int) -> None:
        """A step on `threads` threads took `seconds` for a batch of `candles` candles."""
        if candles <= 0:
            return
        with self._lock:
            cost, old = seconds / candles, self._cost.get(threads)
            if old is None or threads == self._trying:  # what was known of it is stale
                self._cost[threads] = cost
            else:
                self._cost[threads] = old + self.SMOOTHING * (cost - old)
            if threads == self._trying:
                rival = min((c for n, c in self._cost.items() if n != threads), default=math.inf)
                won = self._cost[threads] < rival
                self._every = self.EXPLORE_MIN if won else min(2 * self._every, self.EXPLORE_MAX)
                self._trying = None

    def costs(self) -> dict[int, float]:
        """Seconds per candle of batch by thread count, as measured so far."""
        with self._lock:
            return dict(self._cost)


@contextlib.contextmanager
def timed(choice: ThreadChoice, candles: int):
    """Yield the thread count `choice` picks from `spare_cores()` for a piece of work of
    `candles` candles, and record how long the work took with it (unless it raised)."""
    threads = choice.pick(spare_cores())
    t0 = time.perf_counter()
    yield threads
    choice.record(threads, time.perf_counter() - t0, candles)


def parallel_parts(fn: Callable[[T], R], parts: list[T]) -> list[R]:
    """`fn(part)` for every part at once: the first on this thread, the others on helper
    threads (background priority, one intra-op thread each). Returns the results in order once
    all are done; raises the first error, after every part has finished."""
    futures = [_helpers().submit(fn, part) for part in parts[1:]]
    try:
        first = fn(parts[0])
    finally:
        concurrent.futures.wait(futures)
    return [first] + [f.result() for f in futures]


def _helpers() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _registry:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max(1, CORES - 1), thread_name_prefix="part", initializer=trainer_thread
            )
        return _pool


def settle_heap() -> None:
    """Collect garbage now, then exempt what is left (long-lived: modules, models) from later
    full collections, which stay short as a result."""
    gc.collect()
    gc.freeze()
