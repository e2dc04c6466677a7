"""The one engine factory: any SQLAlchemy URL; for SQLite, WAL, busy timeout, foreign keys, durable commits; for
PostgreSQL, one advisory lock that serialises writers as SQLite's write lock does, and the row locks that let label
queue transactions run side by side. Dialect-specific SQL lives here."""

import json
import math
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlmodel import Session

from data import models  # noqa: F401  (registers the tables on SQLModel.metadata)


def _dumps(obj) -> str:
    # Non-ASCII stays readable in the database and in exports that splice stored JSON.
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or infinity (an empty held-out split): not JSON, and PostgreSQL refuses it
        return json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False)


def _finite(obj):
    """`obj` with every NaN or infinite float as None (JSON null), on both backends alike."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def make_engine(url: str, busy_timeout_ms: int = 30_000) -> Engine:
    """Create an engine for `url`; SQLite files get WAL, foreign keys and BEGIN IMMEDIATE for writers."""
    if url.startswith("postgresql"):
        engine = create_engine(url, json_serializer=_dumps, pool_pre_ping=True)
        _configure_postgresql(engine)
        return engine
    if not url.startswith("sqlite"):
        return create_engine(url, json_serializer=_dumps, pool_pre_ping=True)
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, json_serializer=_dumps,
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
    )
    _configure_sqlite(engine, busy_timeout_ms)
    return engine


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Take transaction control from pysqlite so we can say BEGIN IMMEDIATE for writers.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        # FULL: a commit that returned is on disk, so kill -9 or power loss loses no acknowledged label.
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the write lock up front: no deadlock-prone lock upgrades between concurrent writers.
        mode = "IMMEDIATE" if conn.get_execution_options().get("prefloop_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


# Any constant: the key of the one advisory lock every prefloop writer takes on PostgreSQL.
PG_WRITE_LOCK = 0x70726566  # "pref"


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # PostgreSQL has no BEGIN IMMEDIATE: writers take one transaction-scoped advisory lock first, so every
        # rule the SQLite writer lock keeps (a comparison leased within its overlap, one round at a time, the
        # first label wins) holds the same way under READ COMMITTED, across processes. Readers never wait.
        if conn.get_execution_options().get("prefloop_write"):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})")


# The label queue's transactions take this lock, keyed by annotator, instead of PG_WRITE_LOCK: one person's clicks
# take turns (a double click leases once), different people's run side by side. What keeps a comparison within
# its overlap is the comparison's row lock (ROW_LOCK), taken before any lease or label is added to it.
PG_QUEUE_LOCK = 0x71756575  # "queu"
ROW_LOCK = " FOR UPDATE OF c"  # PostgreSQL's suffixes on a query over `comparison c`
SKIP_LOCKED = " FOR UPDATE OF c SKIP LOCKED"


@contextmanager
def read_session(engine: Engine):
    with Session(engine, expire_on_commit=False) as session:
        yield session


@contextmanager
def write_session(engine: Engine):
    """A short transaction that holds the write lock from its start and commits on success."""
    session = Session(engine.execution_options(prefloop_write=True), expire_on_commit=False)
    with session, session.begin():
        yield session


@contextmanager
def write_connection(engine: Engine):
    """write_session's transaction (write lock from its start, commit on success) on a bare Connection."""
    with engine.execution_options(prefloop_write=True).begin() as conn:
        yield conn


def locks_rows(engine: Engine) -> bool:
    """Whether queue transactions run side by side under row locks (PostgreSQL) or one at a time (SQLite)."""
    return engine.dialect.name == "postgresql"


@contextmanager
def queue_connection(engine: Engine, annotator: str):
    """One annotator's label-queue transaction on PostgreSQL: it waits only for the same annotator's other queue
    transactions (on SQLite, queue transactions are write_connection's, which serialises everyone)."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key, hashtext(:annotator))"),
                     {"key": PG_QUEUE_LOCK, "annotator": annotator})
        yield conn
