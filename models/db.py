"""Engine and session factories for the API and the workers, and what a database outage
looks like to them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

# SQLSTATEs that say the server cannot serve us now, not that the statement is wrong: connection
# exceptions (class 08), insufficient resources (class 53: too many connections, disk full),
# shutdowns and start-up (57P01-57P03), and a read-only server (a replica after a failover).
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53")
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "25006"})


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) says the database is away: down,
    restarting, full or read-only. Such work is worth running again once it is back."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, exc.TimeoutError):  # no pooled connection came free in time
            return True
        if isinstance(current, exc.DBAPIError) and _unavailable(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _unavailable(error: exc.DBAPIError) -> bool:
    if error.connection_invalidated:
        return True
    code: str | None = getattr(error.orig, "pgcode", "")
    if code == "":
        return False  # not PostgreSQL's: SQLite's errors are about its file or the statement
    if code is None:
        # libpq's own errors carry no SQLSTATE: connection refused, server closed the
        # connection, timeout expired.
        return isinstance(error, exc.OperationalError | exc.InterfaceError)
    return code.startswith(UNAVAILABLE_SQLSTATE_CLASSES) or code in UNAVAILABLE_SQLSTATES


def normalize_database_url(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg2 (SQLAlchemy 2.1 would pick psycopg 3 for a bare scheme)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url


def make_engine(url: str, *, pool_size: int = 10, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout for concurrent use."""
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"connect_timeout": 10},
        **kwargs,
    )
    _ping_idle_connections(engine)
    return engine


# A connection back in use within this many seconds is not pinged first.
PING_AFTER_IDLE_S = 5.0


def _ping_idle_connections(engine: Engine) -> None:
    """``pool_pre_ping``, but only for a connection that sat idle in the pool.

    Why: a job checks a connection out for each of its transactions, and pinging every time
    was a round trip (and ~0.2 ms of CPU) per transaction. Connections that go stale (a
    database restart, a firewall's idle timeout) are the idle ones; one that fails while busy
    raises, and the job's attempt is retried like any other database error.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None:
            return
        if time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError() from error


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
