"""CPU priorities inside the engine process: live inference first, background training second.

Python's cyclic garbage collector is the other source of stalls: a full collection walks every
long-lived object (a loaded engine holds about half a million: torch, pandas, SQLAlchemy, the
models) with the GIL held, 150–250 ms on this kind of machine, and every thread waits — a
replayed candle then misses its slot. `settle_heap()` collects once and moves what survives into
the permanent generation (`gc.freeze()`), so later full collections only walk what was made
since: a few ms. The engine calls it once it has started, and after loading a model.

On a small machine a batch training job would otherwise take every core and the GIL, and live
predictions would queue behind its steps. A background job thread therefore runs torch on one
thread and at a lower OS scheduling priority (Linux lets a thread lower its own), and the
engine hands the GIL over more often than Python's default 5 ms, so a waiting inference thread
gets it quickly; live inference itself runs a traced model (one GIL acquisition per forward,
see `engine.inference.trace_last_candle`) on one intra-op thread. Measured by `bench/model.py`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading

import torch

GIL_SWITCH_S = 0.0001
BACKGROUND_NICE = 19


def configure_process() -> None:
    """Call once at engine start."""
    sys.setswitchinterval(GIL_SWITCH_S)


def inference_thread() -> None:
    """Call at the start of a thread that serves live predictions: one intra-op thread is as
    fast for a one-candle forward and leaves the other core to training."""
    torch.set_num_threads(1)


def background_thread() -> None:
    """Call at the start of a background job's thread (affects that thread only)."""
    torch.set_num_threads(1)  # per thread with OpenMP: the other threads keep their pool
    with contextlib.suppress(AttributeError, OSError, PermissionError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def settle_heap() -> None:
    """Collect garbage now, then exempt what is left (long-lived: modules, models) from later
    full collections, which stay short as a result."""
    gc.collect()
    gc.freeze()
