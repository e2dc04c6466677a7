"""Schema migrations: a database written by the first landing upgrades with every row and index, new databases
start at the newest revision, and every process refuses an old schema with a message saying what to run."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from app.services.workdir import DB_NAME
from data import schema
from data.db import make_engine
from data.store import Store

FIRST_LANDING = Path(__file__).with_name("fixtures") / "first_landing.sql"
PREFLOOP = str(Path(sys.executable).with_name("prefloop"))
EXPRESSION_INDEXES = ("ix_comparison_queue", "ix_comparison_uncertainty", "ix_comparison_judge_split")
QUEUE_INDEXES = (*EXPRESSION_INDEXES, "ix_label_comparison_id", "ix_lease_comparison_id", "ix_lease_expires_at",
                 "ix_modelversion_one_deployed")


def _load_first_landing(path: Path, drop_indexes: tuple[str, ...] = ()) -> str:
    conn = sqlite3.connect(path)
    conn.executescript(FIRST_LANDING.read_text(encoding="utf-8"))
    for name in drop_indexes:
        conn.execute(f"DROP INDEX {name}")
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def _rows(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    rows = {}
    for table in tables:
        if table == "alembic_version":
            continue
        columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
        rows[table] = [dict(zip(columns, r, strict=True)) for r in conn.execute(f'SELECT * FROM "{table}" ORDER BY id')]
    conn.close()
    return rows


def _indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    conn.close()
    return names


def _upgrade(url: str) -> tuple[str | None, str]:
    engine = make_engine(url)
    try:
        return schema.upgrade(engine)
    finally:
        engine.dispose()


def test_head_is_the_newest_migration_file():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory(str(schema.MIGRATIONS)).get_current_head() == schema.HEAD


def test_first_landing_fixture_has_rows_in_every_table():
    conn = sqlite3.connect(":memory:")
    conn.executescript(FIRST_LANDING.read_text(encoding="utf-8"))
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert len(tables) == 10
    assert all(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] > 0 for t in tables)


def test_first_landing_database_upgrades_keeping_every_row_and_the_queue_indexes(tmp_path):
    db = tmp_path / "old.db"
    url = _load_first_landing(db)
    before = _rows(db)
    assert _upgrade(url) == ("0001", schema.HEAD)
    after = _rows(db)
    for table, rows in before.items():
        assert [{k: r[k] for k in old} for r, old in zip(after[table], rows, strict=True)] == rows, table
    assert after["auditevent"] == []
    assert all(r["discarded_at"] is None for t in ("prompt", "comparison", "label") for r in after[t])
    assert set(QUEUE_INDEXES) <= _indexes(db)


def test_a_database_made_before_the_queue_index_gets_it_on_upgrade(tmp_path):
    db = tmp_path / "older.db"
    url = _load_first_landing(db, drop_indexes=("ix_comparison_queue", "ix_label_comparison_id"))
    assert "ix_comparison_queue" not in _indexes(db)
    _upgrade(url)
    assert set(QUEUE_INDEXES) <= _indexes(db)


def test_upgraded_schema_matches_the_tables_prefloop_declares(tmp_path):
    import warnings

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    url = _load_first_landing(tmp_path / "old.db")
    _upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # expression indexes cannot be reflected on SQLite; checked above by name
        diffs = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    # Reflected expression indexes come back as a guess; they are checked by name in the tests above.
    assert [d for d in diffs if d[1].name not in EXPRESSION_INDEXES] == []


def test_upgraded_database_serves_the_queue_and_exports_its_pairs(tmp_path):
    from data.export import export_pairs
    from data.queue import next_comparison

    url = _load_first_landing(tmp_path / "old.db")
    _upgrade(url)
    store = Store(url)
    try:
        item = next_comparison(store, "carol", lease_seconds=60)
        assert item is not None and item.comparison_id == 2
        out = tmp_path / "pairs.jsonl"
        assert export_pairs(store, out) == 2
    finally:
        store.close()


def test_an_old_database_is_refused_with_what_to_run(tmp_path):
    url = _load_first_landing(tmp_path / "old.db")
    needs = rf"revision 0001 .* needs {schema.HEAD}: run `prefloop db upgrade`"
    with pytest.raises(schema.SchemaOutdated, match=needs):
        Store(url)


def test_a_database_from_a_newer_prefloop_is_refused(tmp_path):
    url = _load_first_landing(tmp_path / "old.db")
    _upgrade(url)
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.commit()
    conn.close()
    with pytest.raises(schema.SchemaOutdated, match="written by a newer prefloop"):
        Store(url)


def test_a_new_database_starts_at_the_newest_revision_and_upgrade_is_a_no_op(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    Store(url).close()
    engine = make_engine(url)
    assert schema.status(engine) == (schema.HEAD, schema.HEAD)
    assert schema.upgrade(engine) == (schema.HEAD, schema.HEAD)
    assert "auditevent" in inspect(engine).get_table_names()
    engine.dispose()


def _cli(*args, workdir):
    return subprocess.run([PREFLOOP, "--workdir", str(workdir), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_cli_refuses_an_old_schema_then_db_upgrade_migrates_it(tmp_path):
    workdir = tmp_path / "work"
    base = tmp_path / "base"
    base.mkdir()
    assert _cli("init", "--base", base, workdir=workdir).returncode == 0
    db = workdir / DB_NAME
    db.unlink()
    _load_first_landing(db)

    for verb in (("stats",), ("serve", "--port", "1"), ("generate",), ("judge",)):
        refused = _cli(*verb, workdir=workdir)
        assert refused.returncode != 0, verb
        assert "prefloop db upgrade" in refused.stderr and "Traceback" not in refused.stderr, verb

    status = _cli("db", "status", workdir=workdir)
    assert "revision 0001" in status.stdout and "needs `prefloop db upgrade`" in status.stdout
    upgraded = _cli("db", "upgrade", workdir=workdir)
    assert upgraded.returncode == 0 and f"from revision 0001 to {schema.HEAD}" in upgraded.stdout
    assert "already at revision" in _cli("db", "upgrade", workdir=workdir).stdout
    stats = _cli("stats", "--json", workdir=workdir)
    assert stats.returncode == 0, stats.stderr


def test_empty_prompts_of_the_first_release_are_discarded_with_an_audit_event(tmp_path):
    from data.curation import audit_events
    from data.export import export_pairs

    db = tmp_path / "old.db"
    url = _load_first_landing(db)
    conn = sqlite3.connect(db)  # what the first release stored for {"chosen": "The sky is blue.", "rejected": ...}
    conn.executescript("""
        INSERT INTO prompt VALUES (3, '[]', 'trl.jsonl', 'e', 'no prompt: implicit-prompt preference pair',
                                   '2026-11-22 08:00:00.000000');
        INSERT INTO response VALUES (6, 3, NULL, 'The sky is blue.', 'import', NULL, NULL, '{}', '2026-11-22 08:00:00');
        INSERT INTO response VALUES (7, 3, NULL, 'The sky is green.', 'import', NULL, NULL, '{}',
                                     '2026-11-22 08:00:00');
        INSERT INTO comparison VALUES (4, 3, 6, 7, NULL, 1, 'done', 0, 'import', 'trl.jsonl:2', 'f',
                                       '2026-11-22 08:00:00');
        INSERT INTO label VALUES (5, 4, 'import', 'import', 'a', 'ab', NULL, NULL, '2026-11-22 08:00:00');
    """)
    conn.commit()
    conn.close()
    _upgrade(url)
    store = Store(url)
    try:
        [event] = audit_events(store)
        assert (event.action, event.target, event.target_id) == ("discard", "prompt", 3)
        assert "re-import" in event.reason
        out = tmp_path / "pairs.jsonl"
        assert export_pairs(store, out) == 2
        assert all(json.loads(line)["prompt"] for line in out.read_text().splitlines())
    finally:
        store.close()
