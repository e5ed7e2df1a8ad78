"""Wake engines the moment a command is submitted, instead of at their next poll.

Why: an engine polls the `commands` table every poll interval (100 ms by default); a wake-up
lets a submit be picked up in about a millisecond without polling any faster.

How, by database:
- PostgreSQL: every engine holds one extra connection (autocommit, `application_name`
  `candlelab-wake`) that has run `LISTEN candlelab_commands`, and sleeps on its socket.
  `bus.submit` runs `pg_notify('candlelab_commands', '')` inside the transaction that inserts
  the command (`notify_in`), so PostgreSQL delivers the notification at commit, to engines on
  any machine, and never before the row is visible. `notify(engine)` sends one on its own
  short transaction, for callers that are not inside one.
- SQLite (one machine by nature): each engine binds a loopback UDP port recorded in its
  `engines` row; `notify(engine)` sends one datagram to every live engine after the commit.

It is best effort by design: the database stays the only source of truth, and every engine
still polls, so a lost wake-up (a dropped datagram, a listen connection cut by a database
restart, a notification sent while an engine was reconnecting) costs at most one poll
interval, never a command. A listener whose connection drops logs it once, keeps polling, and
reconnects on a later `wait()`; it never raises. One limit of sending the notification inside
the submit's transaction: PostgreSQL refuses the commit if its notification queue (8 GB) is
full, which takes a listening session that stops reading for a very long time; the listener
here reads whenever its socket has data, so in practice the queue stays empty.

One interface for both: `listener(engine)` returns a `Listener` (`wait`, `poke`, `close`,
`address`), and the engine sleeps on it between polls.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from typing import Protocol

from sqlalchemy import Connection, Engine, text

from db import engines

log = logging.getLogger(__name__)

CHANNEL = "candlelab_commands"
APPLICATION_NAME = "candlelab-wake"
RECONNECT_EVERY_S = 1.0  # a listener that lost its connection retries at most this often
CONNECT_TIMEOUT_S = 3  # so a reconnect to an unreachable server cannot stall the engine long

_NOTIFY_SQL = text("SELECT pg_notify(:channel, '')")
_CACHE_S = 1.0
_cache: dict[str, tuple[float, list[tuple[str, int]]]] = {}
_cache_lock = threading.Lock()
_sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


class Listener(Protocol):
    """What an engine sleeps on between polls."""

    # Where to reach this listener, recorded in the engine's row: a UDP (host, port) on
    # SQLite, None on PostgreSQL (the channel is reached through the database).
    address: tuple[str, int] | None

    def wait(self, timeout_s: float) -> bool:
        """Sleep until a wake-up arrives or `timeout_s` passes; True if woken (the caller
        should look at the queue), False on timeout. Never raises."""
        ...

    def poke(self) -> None:
        """Wake a `wait()` from inside the same process (e.g. on shutdown); safe from a signal
        handler and from other threads."""
        ...

    def close(self) -> None: ...


def listener(engine: Engine) -> Listener:
    """The wake-up listener for this database: LISTEN/NOTIFY on PostgreSQL, loopback UDP
    otherwise."""
    if engine.dialect.name == "postgresql":
        return PgListener(engine)
    return WakeSocket()


# -- SQLite: loopback UDP ---------------------------------------------------------------------


class WakeSocket:
    """The engine's side on SQLite: a loopback UDP socket to sleep on between polls."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] | None = self.sock.getsockname()

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
        with contextlib.suppress(OSError):
            _sender.sendto(b"!", self.address)

    def close(self) -> None:
        self.sock.close()


# -- PostgreSQL: LISTEN / NOTIFY --------------------------------------------------------------


class PgListener:
    """The engine's side on PostgreSQL: a dedicated autocommit connection that LISTENs on
    `CHANNEL`, plus a socket pair for `poke()`, both in one `select`."""

    address: tuple[str, int] | None = None

    def __init__(self, engine: Engine) -> None:
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        kwargs.pop("context", None)  # SQLAlchemy's adapters; LISTEN needs none
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        # A peer that vanishes without closing (a network cut) is noticed within about a minute.
        for key, value in (("keepalives", 1), ("keepalives_idle", 30),
                           ("keepalives_interval", 10), ("keepalives_count", 3)):  # fmt: skip
            kwargs.setdefault(key, value)
        self._connect_args = (args, {**kwargs, "application_name": APPLICATION_NAME})
        self._where = engine.url.render_as_string(hide_password=True)
        self._conn = None  # psycopg.Connection while listening
        self._next_try = 0.0
        self._lost_logged = False
        self._closed = False
        self._poke_r, self._poke_w = socket.socketpair()
        self._poke_r.setblocking(False)
        self._poke_w.setblocking(False)
        self._connect()

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up (as far as this side knows)."""
        return self._conn is not None

    def _connect(self) -> bool:
        """Open the connection and LISTEN; False (logged once per outage) if that fails."""
        import psycopg

        args, kwargs = self._connect_args
        conn = None
        try:
            conn = psycopg.connect(*args, autocommit=True, **kwargs)
            conn.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self._next_try = time.monotonic() + RECONNECT_EVERY_S  # retry, but not at every poll
            self._lost(f"cannot listen ({_said(exc)})")
            return False
        self._conn = conn
        if self._lost_logged:
            log.info("wake-up: listening on %s again", self._where)
            self._lost_logged = False
        return True

    def _lost(self, why: str) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if not self._lost_logged:
            log.warning("wake-up: not listening on %s: %s; polling only until it reconnects",
                        self._where, why)  # fmt: skip
            self._lost_logged = True

    def _drain_pokes(self) -> bool:
        got = False
        try:
            while self._poke_r.recv(64):
                got = True
        except (BlockingIOError, OSError):
            pass
        return got

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            woken = self._wait_once(max(0.0, deadline - time.monotonic()))
            if woken or time.monotonic() >= deadline:
                return woken

    def _wait_once(self, timeout_s: float) -> bool:
        """One select; True if woken. May return False early when the socket had only other
        traffic (a notice, a parameter change): `wait` then sleeps out the rest."""
        if self._closed:
            time.sleep(timeout_s)
            return False
        if self._conn is None:
            if time.monotonic() >= self._next_try and self._connect():
                return True  # a command may have come while we were deaf: look at the queue
            ready, _, _ = select.select([self._poke_r], [], [], timeout_s)
            return bool(ready) and self._drain_pokes()
        try:
            fd = self._conn.fileno()
            ready, _, _ = select.select([self._poke_r, fd], [], [], timeout_s)
        except Exception as exc:  # the connection object went bad under us
            self._lost(_said(exc))
            return True
        if not ready:
            return False
        woken = self._poke_r in ready and self._drain_pokes()
        if fd in ready:
            try:
                # Read all that arrived, without blocking: notifications, or the server's
                # goodbye (which raises).
                woken = len(list(self._conn.notifies(timeout=0))) > 0 or woken
            except Exception as exc:  # e.g. the server restarted or ended this session
                self._lost(f"the connection dropped ({_said(exc)})")
                return True  # let the caller look at the queue; reconnect on the next wait
            if self._conn.closed or self._conn.broken:
                self._lost("the connection was closed")
                return True
        return woken

    def poke(self) -> None:
        with contextlib.suppress(OSError):  # a full buffer already holds a poke
            self._poke_w.send(b"!")

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self._poke_r.close()
        self._poke_w.close()


def _said(exc: Exception) -> str:
    """An exception on one line (libpq's messages span several)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


# -- the submit side --------------------------------------------------------------------------


def notify_in(conn: Connection) -> bool:
    """Queue a wake-up inside the caller's open transaction on `conn`, delivered when it
    commits (PostgreSQL). False where that is not possible (SQLite): the caller then calls
    `notify(engine)` after its commit. A failure here fails the caller's transaction, as any
    statement in it would."""
    if conn.dialect.name != "postgresql":
        return False
    conn.execute(_NOTIFY_SQL, {"channel": CHANNEL})
    return True


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
    """Tell every live engine that a command (or other work) is waiting, from outside any
    transaction: PostgreSQL, a NOTIFY on its own short transaction; SQLite, a datagram to each
    live engine's port. Never raises."""
    try:
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                notify_in(conn)
            return
        for addr in _addresses(engine):
            with contextlib.suppress(OSError):
                _sender.sendto(b"!", addr)
    except Exception:  # a wake-up is an optimisation; the poll still finds the command
        pass
