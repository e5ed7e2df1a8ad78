"""A batch job's forward and backward passes in a process of their own, so that live predictions
never wait for them.

Why a process: a training step dispatches thousands of small ops from Python, each taking the
GIL, and a thread serving live predictions waits for the GIL at each of its own. In one process
a session's p99 candle → prediction time nearly doubled while a batch job trained (1.85–1.99×
on two cores), whatever the thread priorities, GIL switch interval, allocator or thread pinning;
the same training in another process at low priority, pinned to the core predictions did not
use, left it unchanged (1.0×). docs/models-and-training.md has the measurements.

What crosses the process boundary: the engine keeps the model, its optimizer and its training
lock, so a worker that dies mid-step cannot leave half-updated weights. For each batch (under
the lock) it sends the weights and the batch; the worker splits the batch into parts, runs them
on threads of its own and returns each part's loss and hits and, for a training step, the
summed gradients; the engine then clips, steps and publishes as before. About 1 MB crosses a
pipe for a step of about 80 ms.

Workers start on first use (importing torch takes a second or two) and are kept for the
engine's life, one per caller at a time; a worker exits when its pipe closes, which includes its
engine being killed. If a worker cannot start or fails, the caller runs the work on its own
threads, as before, and the next call starts a fresh worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import torch

from engine import priority

log = logging.getLogger(__name__)
RETRY_AFTER_S = 60.0
REPLY_TIMEOUT_S = 120.0  # a hung worker (a step of a million candles takes about 20 s)
IDLE_FOR_S = 300.0  # idle workers beyond one are stopped after this long
_START = "import sys; from engine.step_worker import serve_fd; serve_fd(int(sys.argv[1]))"


@dataclass
class Request:
    """One batch's work: the model (its config, and its state_dict's tensors in order, as one
    flat array), the batch as arrays, how many parts to split it in and on which cores, whether
    to compute gradients (a training step) or only score it, and the norm to clip them to. The
    worker runs it through `runner.part_shares`, as the engine would here."""

    config: object
    weights: np.ndarray
    batch: tuple[np.ndarray, np.ndarray, np.ndarray]
    parts: int
    cores: list[int]
    backward: bool
    clip: float | None


@dataclass
class Reply:
    shares: list[tuple[float, int]]  # per part: its share of the batch's loss, its hits
    grads: np.ndarray | None  # summed over the parts and clipped, parameters in order
    has_grad: list[bool] | None  # per parameter: whether it got a gradient
    error: str | None = None  # the worker's traceback when the work raised


class _Worker:
    """One worker process and the engine's end of its socket. Started as a fresh interpreter
    (`_START`) rather than by multiprocessing's spawn, which would import the caller's main
    script again in the worker (a benchmark or notebook without a main guard)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        with ours, theirs:
            self.process = subprocess.Popen(  # -P: the engine's own code, whatever the cwd
                [sys.executable, "-P", "-c", _START, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
            )
            self.conn = Connection(ours.detach())
        self.idle_since = time.monotonic()
        # The worker's end now lives only in the worker: its death closes the socket, and the
        # engine's death closes ours, which ends the worker.

    def ask(self, request: Request) -> Reply:
        self.conn.send(request)
        if not self.conn.poll(REPLY_TIMEOUT_S):
            raise TimeoutError(
                f"no reply from step worker {self.process.pid} in {REPLY_TIMEOUT_S} s"
            )
        return self.conn.recv()

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Pool:
    """The engine's step workers: one per concurrent caller, kept idle between calls."""

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._starting: threading.Thread | None = None  # prestart's
        self._retry_at = 0.0  # monotonic time before which no worker is tried (one failed)
        self._lock = threading.Lock()

    def shares(self, config, state: list[torch.Tensor], params: list[torch.Tensor] | None,
               batch, parts: int, *, clip: float | None = None):  # fmt: skip
        """Each part's (loss share, hits) for `batch` (a runner.Batch) on the model of
        architecture `config` whose state_dict tensors are `state` (in order), computed in a
        worker. With `params` (the model's parameters, in order) it is a training step: the
        summed gradients, clipped to norm `clip`, are put in their `.grad`. None where no
        worker could do it: the caller computes it."""
        with torch.no_grad():
            weights = _flat(state).cpu().numpy()
        backward = params is not None
        request = Request(
            config, weights, (batch.x.numpy(), batch.actions.numpy(), batch.ghost.numpy()),
            parts, _cores(parts), backward, clip,
        )  # fmt: skip
        reply = self._ask(request)
        if reply is None:
            return None
        if backward:
            grads = torch.from_numpy(reply.grads).split([p.numel() for p in params])
            for p, grad, has in zip(params, grads, reply.has_grad, strict=True):
                p.grad = grad.view_as(p) if has else None
        return reply.shares

    def _ask(self, request: Request) -> Reply | None:
        """The reply of an idle (or new) worker; None, after logging why, if it failed: a
        worker that died or hung is stopped, and none is tried for RETRY_AFTER_S."""
        if time.monotonic() < self._retry_at:
            return None
        worker = self._take()
        if worker is None:
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            return None
        try:
            reply = worker.ask(request)
        except (OSError, EOFError, TimeoutError, pickle.PickleError):
            log.exception("a step worker failed: computing in the engine's own threads")
            worker.close()
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            return None
        except BaseException:
            worker.close()  # mid-conversation: its next reply would answer the wrong request
            raise
        self._give_back(worker)
        if reply.error is not None:  # the work itself raised: here it raises for the caller
            log.error("a step worker raised, computing in the engine instead:\n%s", reply.error)
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            return None
        return reply

    def prestart(self) -> None:
        """Start a worker in the background if none is idle or starting, so that a job's first
        step does not wait for the worker's imports (a batch job calls this before reading its
        data)."""
        with self._lock:
            if self._idle or (self._starting and self._starting.is_alive()):
                return

            def start() -> None:
                with contextlib.suppress(Exception):  # the first step tries again and says why
                    self._give_back(_Worker())

            self._starting = threading.Thread(target=start, name="step-worker", daemon=True)
            self._starting.start()

    def _take(self) -> _Worker | None:
        """An idle worker (waiting for one being started), else a new one; None if none
        starts."""
        starting = self._starting
        if starting is not None:
            starting.join()
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                worker.close()
        try:
            return _Worker()
        except Exception:
            log.exception("could not start a step worker: computing in the engine's own threads")
            return None

    def _give_back(self, worker: _Worker) -> None:
        """Keep `worker` idle; stop others idle for IDLE_FOR_S (one is always kept: a worker
        costs a few hundred MB while it waits)."""
        now = time.monotonic()
        worker.idle_since = now
        with self._lock:
            stale = [w for w in self._idle if now - w.idle_since > IDLE_FOR_S]
            self._idle = [w for w in self._idle if w not in stale] + [worker]
        for w in stale:
            w.close()

    def pids(self) -> list[int]:
        """The process ids of the idle workers."""
        with self._lock:
            return [worker.process.pid for worker in self._idle]

    def close(self) -> None:
        """Stop every idle worker (tests; the engine's workers end with it)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()


def _cores(parts: int) -> list[int]:
    """The cores a worker keeps to: while a thread here serves live predictions, every core
    this process may use but the first, which stays free for them (a worker on the same core
    as a prediction, even at nice 19, doubled its p99); else all of them."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return allowed[1:] if priority.serving() and len(allowed) > 1 else allowed


# -- the worker's side -------------------------------------------------------------------------


def serve_fd(fd: int) -> None:
    serve(Connection(fd))


def serve(conn: Connection) -> None:
    """A worker's life: answer requests until the engine closes the pipe or dies (watched
    every second too, for a worker busy with a step when it happens)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C stops the engine, which ends us
    priority.trainer_thread()  # background priority, one intra-op thread; inherited by helpers
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    models: dict[object, torch.nn.Module] = {}
    pinned: list[int] | None = None
    while True:
        try:
            request: Request = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if request.cores and request.cores != pinned:
                _pin(request.cores)
                pinned = request.cores
            reply = _compute(models, request)
        except Exception:
            reply = Reply([], None, None, traceback.format_exc())
        try:
            conn.send(reply)
        except OSError:  # the engine is gone
            return


def _exit_with(engine_pid: int) -> None:
    while os.getppid() == engine_pid:
        time.sleep(1.0)
    os._exit(0)


def _compute(models: dict, request: Request) -> Reply:
    from engine.model import CandleTransformer
    from engine.runner import Batch, part_shares

    model = models.get(request.config)
    if model is None:
        model = models[request.config] = CandleTransformer(request.config)
    with torch.no_grad():
        state = list(model.state_dict().values())
        for t, w in zip(state, torch.from_numpy(request.weights).split([t.numel() for t in state]),
                        strict=True):  # fmt: skip
            t.copy_(w.view_as(t))
    model.train(request.backward)  # as the engine's model: training, or a frozen snapshot
    model.zero_grad(set_to_none=True)
    batch = Batch(*(torch.from_numpy(a) for a in request.batch))
    shares = part_shares(model, batch, request.parts, backward=request.backward, clip=request.clip)
    if not request.backward:
        return Reply(shares, None, None)
    params = list(model.parameters())
    with torch.no_grad():
        grads = _flat(torch.zeros_like(p) if p.grad is None else p.grad for p in params)
    return Reply(shares, grads.numpy(), [p.grad is not None for p in params])


def _flat(tensors) -> torch.Tensor:
    """`tensors` end to end in one 1-D tensor (one array to send, not one per tensor)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def _pin(cores: list[int]) -> None:
    """Keep every thread of this process (and those it starts later) to `cores`."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cores)


shared = Pool()
