"""The SQLAlchemy engine factory: SQLite tuned for one writer and many readers, or PostgreSQL.

SQLite setup (zero "database is locked" under write load: bench/command_roundtrip.py counts them):
WAL journal, `synchronous=NORMAL`, `busy_timeout`, and the driver's own transaction handling
switched off so that every transaction starts with an explicit `BEGIN IMMEDIATE` (writers take
the write lock up front and wait for it under busy_timeout, instead of failing when a read
transaction tries to upgrade). Read-only engines (`readonly()`) start `BEGIN DEFERRED`.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

from db import settings

BUSY_TIMEOUT_MS = 5000
# PostgreSQL ends a transaction left idle this many heartbeat timeouts: a process stopped
# inside one (a stall: swapping, a paused VM, SIGSTOP) would otherwise keep its row locks for
# as long as it is stopped, and an engine taking its sessions over would wait on them. By then
# the others have found it dead (db/engines.py); when it wakes, its connection is gone.
STALLED_TRANSACTION_HEARTBEATS = 2

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def make_engine(url: str | None = None) -> Engine:
    """A new SQLAlchemy engine for `url` (default: `settings.database_url()`)."""
    url = url or settings.database_url()
    if not url.startswith("sqlite"):
        idle_ms = int(STALLED_TRANSACTION_HEARTBEATS * settings.heartbeat_timeout_s() * 1000)
        options = f"-c idle_in_transaction_session_timeout={idle_ms}"
        return create_engine(url, pool_pre_ping=True, connect_args={"options": options})

    engine = create_engine(url, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("readonly"):
            # Straight to the driver: a deferred BEGIN takes no lock and cannot fail on one,
            # and SQLAlchemy's statement path cost more than the read it opens (the Live page
            # opens several a second).
            conn.connection.dbapi_connection.execute("BEGIN DEFERRED")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # errors wrapped as SQLAlchemy's

    return engine


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for `url`, made once (engines own connection pools)."""
    url = url or settings.database_url()
    with _lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
        return _engines[url]


def long_transaction(conn) -> None:
    """Let the transaction open on `conn` stay idle between statements for as long as it
    needs (PostgreSQL; see STALLED_TRANSACTION_HEARTBEATS): for work that is one transaction
    by design and spends seconds in Python between statements, such as a large import."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")


def readonly(engine: Engine) -> Engine:
    """A view of `engine` whose transactions only read (SQLite: `BEGIN DEFERRED`)."""
    return engine.execution_options(readonly=True)


def first_row_with_files(engine: Engine, query) -> tuple | None:
    """The first row of `query` (columns holding files, and plain values), read in a read-only
    transaction. On PostgreSQL its values come in binary: psycopg's default text format sends
    bytea as hex, and a 45 MB candle snapshot took 0.40 s to fetch against 0.16 s."""
    with readonly(engine).begin() as conn:
        if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
            row = conn.execute(query).first()
            return None if row is None else tuple(row)
        compiled = query.compile(dialect=conn.dialect)
        with conn.connection.driver_connection.cursor(binary=True) as cursor:
            cursor.execute(compiled.string, compiled.params)
            return cursor.fetchone()


def dispose_all() -> None:
    """Close every pooled connection (tests and forked processes)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def insert_ignoring_duplicates(engine: Engine, table, index_elements: list[str], **values):
    """INSERT … ON CONFLICT (index_elements) DO NOTHING, in the engine's dialect (both SQLite
    and PostgreSQL spell it the same way, through different constructs)."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return (
        dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=index_elements)
    )


def upsert(engine: Engine, table, index_elements: list[str], update: list[str], **values):
    """INSERT … ON CONFLICT (index_elements) DO UPDATE SET the `update` columns, in the
    engine's dialect."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values)
    return stmt.on_conflict_do_update(
        index_elements=index_elements, set_={c: stmt.excluded[c] for c in update}
    )
