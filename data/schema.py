"""Which schema revision a database is at, and bringing it to the one this prefloop needs (Alembic migrations
in data/migrations). A new database is created at the newest revision; an older one waits for `prefloop db upgrade`."""

from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text
from sqlmodel import SQLModel

from data.db import write_connection

HEAD = "0006"  # the newest file in data/migrations/versions; a test keeps the two in step
BASELINE = "0001"  # the first landing, which made its tables without Alembic
_VERSION_TABLE = "alembic_version"
MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaOutdated(RuntimeError):
    """The database was written by another version of prefloop; the message says what to run."""


def revision(conn: Connection) -> str | None:
    """The database's schema revision: None when it holds no prefloop tables at all."""
    tables = set(inspect(conn).get_table_names())
    if _VERSION_TABLE in tables:
        return conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalar()
    # Databases made before migrations existed hold the first landing's tables and no version table.
    return BASELINE if "prompt" in tables else None


def ensure_current(engine: Engine) -> None:
    """Create the schema in an empty database; refuse one at any other revision than HEAD."""
    with engine.connect() as conn:
        found = revision(conn)
    if found == HEAD:
        return
    if found is None:
        _create(engine)
        return
    raise SchemaOutdated(_outdated_message(engine, found))


def _outdated_message(engine: Engine, found: str) -> str:
    where = engine.url.render_as_string(hide_password=True)
    if found not in _known_revisions():
        return (f"the database {where} is at schema revision {found}, which this prefloop does not know "
                f"(it needs {HEAD}): it was written by a newer prefloop; upgrade prefloop")
    return (f"the database {where} is at schema revision {found} and this prefloop needs {HEAD}: "
            f"run `prefloop db upgrade` (back up the database first)")


def _create(engine: Engine) -> None:
    # One write transaction: a second process creating the same database waits, then sees HEAD.
    with write_connection(engine) as conn:
        if revision(conn) is not None:
            return
        SQLModel.metadata.create_all(conn)
        _stamp(conn, HEAD)


def _stamp(conn: Connection, rev: str) -> None:
    conn.execute(text(f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
                      f"CONSTRAINT {_VERSION_TABLE}_pkc PRIMARY KEY (version_num))"))
    conn.execute(text(f"DELETE FROM {_VERSION_TABLE}"))
    conn.execute(text(f"INSERT INTO {_VERSION_TABLE} (version_num) VALUES (:rev)"), {"rev": rev})


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Migrate the database to `target` in one transaction; returns (revision before, revision after)."""
    from alembic import command

    with write_connection(engine) as conn:
        before = revision(conn)
        if before is None:
            SQLModel.metadata.create_all(conn)
            _stamp(conn, HEAD)
            return None, HEAD
        if _VERSION_TABLE not in inspect(conn).get_table_names():
            _stamp(conn, BASELINE)
        command.upgrade(_config(conn), target)
        return before, revision(conn)


def status(engine: Engine) -> tuple[str | None, str]:
    """(the database's revision, the revision this prefloop needs)."""
    with engine.connect() as conn:
        return revision(conn), HEAD


def _known_revisions() -> set[str]:
    return {p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*.py")}


def _config(conn: Connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config
