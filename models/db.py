"""Engine and session factories for the API and the workers, and what a database outage
looks like to them."""

from __future__ import annotations

import select
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, exc, text
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


def accepts_writes(session: Session) -> bool:
    """One round trip: whether the database answers and takes writes (a replica promoted by a
    failover does; one still read-only does not). Raises if it does not answer."""
    if session.get_bind().dialect.name != "postgresql":
        session.execute(text("SELECT 1"))
        return True
    return session.scalar(text("SELECT current_setting('transaction_read_only')")) == "off"


def server_uptime_s(session: Session) -> float | None:
    """Seconds since the database server (re)started, by its own clock; None if unknown
    (SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    uptime = session.scalar(text("SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())"))
    return float(uptime) if uptime is not None else None


def normalize_database_url(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg2 (SQLAlchemy 2.1 would pick psycopg 3 for a bare scheme)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url


def json_dumps(value: Any) -> str:
    """JSON columns' encoder: orjson (several times the stdlib's speed; every job writes and
    reads a dozen JSON values)."""
    return orjson.dumps(value).decode()


def make_engine(url: str, *, pool_size: int = 10, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout for concurrent use."""
    url = normalize_database_url(url)
    kwargs.setdefault("json_serializer", json_dumps)
    kwargs.setdefault("json_deserializer", orjson.loads)
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
    _drop_connections_to_an_unavailable_server(engine)
    return engine


# A connection back in use within this many seconds is not pinged first.
PING_AFTER_IDLE_S = 5.0


def _ping_idle_connections(engine: Engine) -> None:
    """``pool_pre_ping``, but only for a connection that may be stale: one that sat idle in the
    pool, or one the server sent something to while it waited there (it hung up: a restart,
    a crash, an administrator ending sessions).

    Why: a job checks a connection out for each of its transactions, and pinging every time
    was a round trip (and ~0.2 ms of CPU) per transaction; looking for input is one
    ``poll()``. So the first request after the database returns gets a live connection
    instead of an error, however soon it comes. One that fails while busy raises, and the
    job's attempt runs again once the database is back (workers/outage.py).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None:
            return
        if time.monotonic() - idle_since < PING_AFTER_IDLE_S and not _has_input(dbapi_connection):
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError() from error


def _has_input(dbapi_connection: Any) -> bool:
    """Whether the server sent something to this idle connection (no round trip)."""
    try:
        fd = dbapi_connection.fileno()
    except Exception:  # closed already: let the ping find out
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def _drop_connections_to_an_unavailable_server(engine: Engine) -> None:
    """Errors that say the server went away or turned read-only (an administrator's shutdown,
    a failover to a replica) discard the connection, and the pool's others with it, so the
    next checkout connects afresh (to the new primary, once DNS points to it)."""

    @event.listens_for(engine, "handle_error")
    def _on_error(context: Any) -> None:
        code = getattr(context.original_exception, "pgcode", None)
        if code is not None and (code.startswith("08") or code in UNAVAILABLE_SQLSTATES):
            context.is_disconnect = True


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
