"""The store and its engine: SQLite pragmas, PostgreSQL's writer lock, dedup, one deployed version, durability
under kill -9."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from data.models import Comparison, Label, ModelVersion
from data.store import Sample, Store, normalize_messages, prompt_hash


@pytest.mark.sqlite_only
def test_sqlite_runs_in_wal_with_foreign_keys_and_durable_commits(store):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_postgresql_writers_hold_the_one_advisory_lock_and_readers_do_not(pg_schema):
    from data.db import PG_WRITE_LOCK

    store, other = Store(pg_schema()), Store(pg_schema())
    held = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            f" AND (classid::bigint << 32) + objid::bigint = {PG_WRITE_LOCK}")
    try:
        with store.read() as s:
            assert s.connection().exec_driver_sql(held).scalar() == 0
        with store.write_conn() as conn:
            assert conn.exec_driver_sql(held).scalar() == 1
            # Another writer, even on another schema of the database, cannot take it meanwhile.
            with other.engine.connect() as probe:
                taken = probe.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({PG_WRITE_LOCK})").scalar()
                assert taken is False
        with other.write() as s:  # released at commit
            assert s.connection().exec_driver_sql(held).scalar() == 1
    finally:
        store.close()
        other.close()


def test_foreign_keys_are_enforced(store):
    with pytest.raises(IntegrityError), store.write() as s:
        s.add(Comparison(prompt_id=999, response_a_id=1, response_b_id=2))


def test_a_plain_string_prompt_becomes_one_user_message():
    assert normalize_messages("hi") == [{"role": "user", "content": "hi"}]


def test_duplicate_prompts_are_counted_not_added(store):
    first = store.add_prompts(["a", "b", "a"], source="t")
    again = store.add_prompts(["b", [{"role": "user", "content": "a"}], "c"], source="t")
    assert (first.added, first.duplicates) == (2, 1)
    assert (again.added, again.duplicates) == (1, 2)
    assert store.stats()["prompts"] == 3


def test_prompt_hash_depends_on_roles_and_content():
    user = [{"role": "user", "content": "x"}]
    assert prompt_hash(user) != prompt_hash([{"role": "system", "content": "x"}])
    assert prompt_hash(user) == prompt_hash([{"role": "user", "content": "x", "name": "ignored"}][:1])


def test_only_one_version_is_deployed_at_a_time(store):
    store.add_version("v0", "/m/v0")
    store.add_version("v1", "/m/v1", parent_id=store.get_version("v0").id, round=1)
    store.deploy("v1")
    store.deploy("v0")
    assert store.deployed_version().name == "v0"
    with pytest.raises(IntegrityError), store.write() as s:
        for v in s.exec(select(ModelVersion)).all():
            v.deployed = True


def test_deploying_an_unknown_or_failed_version_is_refused(store):
    store.add_version("v0", "/m/v0")
    store.add_version("v1", "/m/v1", status="failed")
    with pytest.raises(LookupError, match="v9"):
        store.deploy("v9")
    with pytest.raises(ValueError, match="failed"):
        store.deploy("v1")


def _sampled_comparison(store, version_name: str, prompt_text: str) -> int:
    pid = store.add_prompts([prompt_text]).ids[0]
    v = store.get_version(version_name)
    samples = [Sample("one", "stop", 2), Sample("two", "stop", 2)]
    return store.add_samples(pid, v.id, samples, [(0, 1)], {"temperature": 0.8}, overlap=1)[0]


def test_deploy_retires_unlabelled_open_comparisons_of_older_versions(store):
    store.add_version("v0", "/m/v0")
    store.add_version("v1", "/m/v1")
    store.deploy("v0")
    unlabelled = _sampled_comparison(store, "v0", "p1")
    labelled = _sampled_comparison(store, "v0", "p2")
    with store.write() as s:
        s.add(Label(comparison_id=labelled, annotator="ann", choice="a"))
    assert store.deploy("v1", retire_open=True) == 1
    with store.read() as s:
        assert s.get(Comparison, unlabelled).status == "retired"
        assert s.get(Comparison, labelled).status == "open"


def test_stats_counts_what_an_operator_watches(store):
    store.add_version("v0", "/m/v0")
    store.deploy("v0")
    _sampled_comparison(store, "v0", "p")
    st = store.stats()
    assert st["prompts"] == 1 and st["responses"] == 2
    assert st["comparisons"] == {"open": 1}
    assert st["deployed_version"] == "v0"


WRITER = textwrap.dedent("""
    import sys
    from data.store import Store
    store = Store(sys.argv[1])
    i = 0
    while True:
        store.add_prompts([f"prompt {i}"])
        print(i, flush=True)  # acknowledged only after the commit returned
        i += 1
""")


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_write(workdir):
    url = f"sqlite:///{workdir / 'k.db'}"
    Store(url).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    acked = [int(proc.stdout.readline()) for _ in range(200)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(url)
    assert store.stats()["prompts"] >= acked[-1] + 1
    store.close()


@pytest.mark.parametrize("empty", ["", "   ", [], [{"role": "user", "content": " "}]])
def test_a_prompt_without_text_is_refused_and_nothing_is_added(store, empty):
    with pytest.raises(ValueError, match="prompt 2 has no text"):
        store.add_prompts(["a real question", empty])
    assert store.stats()["prompts"] == 0
