"""Wake the engine the moment a command is submitted, instead of at its next poll.

The engine listens on a loopback UDP port recorded in its `engines` row; `notify()` sends one
datagram to every live engine after a submit commits. It is best effort by design: a lost
datagram costs one poll interval, never a command, because the database stays the only source
of truth (the engine still polls).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

from sqlalchemy import Engine

from db import engines

_CACHE_S = 1.0
_cache: dict[str, tuple[float, list[tuple[str, int]]]] = {}
_cache_lock = threading.Lock()
_sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


class WakeSocket:
    """The engine's side: a loopback UDP socket to sleep on between polls."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()

    def wait(self, timeout_s: float) -> bool:
        """Sleep until a wake-up arrives or `timeout_s` passes; True if woken."""
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        if not ready:
            return False
        try:
            while True:
                self.sock.recv(64)
        except BlockingIOError:
            pass
        return True

    def poke(self) -> None:
        """Wake this socket from inside the same process (e.g. on shutdown)."""
        _sender.sendto(b"!", self.address)

    def close(self) -> None:
        self.sock.close()


def _addresses(engine: Engine) -> list[tuple[str, int]]:
    key = str(engine.url)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < _CACHE_S:
            return hit[1]
    rows = engines.alive(engine)
    addrs = [(r.wake_host, r.wake_port) for r in rows if r.wake_host and r.wake_port]
    with _cache_lock:
        _cache[key] = (now, addrs)
    return addrs


def notify(engine: Engine) -> None:
    """Tell every live engine that a command is waiting. Never raises."""
    try:
        for addr in _addresses(engine):
            with contextlib.suppress(OSError):
                _sender.sendto(b"!", addr)
    except Exception:  # a wake-up is an optimisation; the poll still finds the command
        pass
