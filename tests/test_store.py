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
from data.prompts import normalize_messages, prompt_hash
from data.store import Store
from generation.backend import Sample


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
    first = store.prompts.add(["a", "b", "a"], source="t")
    again = store.prompts.add(["b", [{"role": "user", "content": "a"}], "c"], source="t")
    assert (first.added, first.duplicates) == (2, 1)
    assert (again.added, again.duplicates) == (1, 2)
    assert store.stats.summary()["prompts"] == 3


def test_prompt_hash_depends_on_roles_and_content():
    user = [{"role": "user", "content": "x"}]
    assert prompt_hash(user) != prompt_hash([{"role": "system", "content": "x"}])
    assert prompt_hash(user) == prompt_hash([{"role": "user", "content": "x", "name": "ignored"}][:1])


def test_only_one_version_is_deployed_at_a_time(store):
    store.versions.add("v0", "/m/v0")
    store.versions.add("v1", "/m/v1", parent_id=store.versions.get("v0").id, round=1)
    store.versions.deploy("v1")
    store.versions.deploy("v0")
    assert store.versions.deployed().name == "v0"
    with pytest.raises(IntegrityError), store.write() as s:
        for v in s.exec(select(ModelVersion)).all():
            v.deployed = True


def test_deploying_an_unknown_or_failed_version_is_refused(store):
    store.versions.add("v0", "/m/v0")
    store.versions.add("v1", "/m/v1", status="failed")
    with pytest.raises(LookupError, match="v9"):
        store.versions.deploy("v9")
    with pytest.raises(ValueError, match="failed"):
        store.versions.deploy("v1")


def _sampled_comparison(store, version_name: str, prompt_text: str) -> int:
    pid = store.prompts.add([prompt_text]).ids[0]
    v = store.versions.get(version_name)
    samples = [Sample("one", "stop", 2), Sample("two", "stop", 2)]
    return store.prompts.add_samples(pid, v.id, samples, [(0, 1)], {"temperature": 0.8}, overlap=1)[0]


def test_deploy_retires_unlabelled_open_comparisons_of_older_versions(store):
    store.versions.add("v0", "/m/v0")
    store.versions.add("v1", "/m/v1")
    store.versions.deploy("v0")
    unlabelled = _sampled_comparison(store, "v0", "p1")
    labelled = _sampled_comparison(store, "v0", "p2")
    with store.write() as s:
        s.add(Label(comparison_id=labelled, annotator="ann", choice="a"))
    assert store.versions.deploy("v1", retire_open=True) == 1
    with store.read() as s:
        assert s.get(Comparison, unlabelled).status == "retired"
        assert s.get(Comparison, labelled).status == "open"


def test_stats_counts_what_an_operator_watches(store):
    store.versions.add("v0", "/m/v0")
    store.versions.deploy("v0")
    _sampled_comparison(store, "v0", "p")
    st = store.stats.summary()
    assert st["prompts"] == 1 and st["responses"] == 2
    assert st["comparisons"] == {"open": 1}
    assert st["deployed_version"] == "v0"


WRITER = textwrap.dedent("""
    import sys
    from data.store import Store
    store = Store(sys.argv[1])
    i = 0
    while True:
        store.prompts.add([f"prompt {i}"])
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
    assert store.stats.summary()["prompts"] >= acked[-1] + 1
    store.close()


@pytest.mark.parametrize("empty", ["", "   ", [], [{"role": "user", "content": " "}]])
def test_a_prompt_without_text_is_refused_and_nothing_is_added(store, empty):
    with pytest.raises(ValueError, match="prompt 2 has no text"):
        store.prompts.add(["a real question", empty])
    assert store.stats.summary()["prompts"] == 0


def test_tokens_are_revoked_one_or_all_and_expired_ones_deleted(store):
    from datetime import timedelta

    from data.models import utcnow

    store.accounts.add_user("alice", "annotator", "x")
    store.accounts.add_user("bob", "annotator", "x")
    later, earlier = utcnow() + timedelta(days=1), utcnow() - timedelta(seconds=1)
    for token, who, expires in (("a1", "alice", later), ("a2", "alice", later), ("b1", "bob", later),
                                ("b2", "bob", earlier)):
        store.accounts.add_token(token, who, expires)
    assert store.accounts.user_for_token("b2") is None  # expired: refused even before it is deleted
    assert store.accounts.revoke_tokens("alice", "a1") == 1
    assert store.accounts.user_for_token("a1") is None and store.accounts.user_for_token("a2").name == "alice"
    assert store.accounts.delete_expired_tokens() == 1
    assert store.accounts.revoke_tokens("bob") == 1 and store.accounts.user_for_token("b1") is None
    assert store.accounts.revoke_tokens("alice") == 1 and store.accounts.revoke_tokens("alice") == 0


def test_postgresql_queue_transactions_wait_only_for_the_same_annotators(pg_schema):
    """A label-queue transaction holds its annotator's lock, not the one every other writer takes: other
    annotators' clicks, and imports or rounds, run beside it."""
    from data.db import PG_QUEUE_LOCK, PG_WRITE_LOCK

    store = Store(pg_schema())
    try:
        with store.queue_conn("alice"), store.engine.connect() as probe:
            def free(lock: str) -> bool:
                return probe.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({lock})").scalar()

            assert free(str(PG_WRITE_LOCK))
            assert free(f"{PG_QUEUE_LOCK}, hashtext('bob')")
            assert not free(f"{PG_QUEUE_LOCK}, hashtext('alice')")
    finally:
        store.close()


def test_per_annotator_counts_are_peoples_labels_and_add_up_to_today(store):
    """Skips, judge and import labels and discarded ones are not anyone's work in the per-annotator counts; today's
    counts per annotator add up to the queue's labelled_today."""
    from data.curation import discard
    from data.queue import queue_counts, submit_label

    store.versions.add("v0", "/m/v0")
    store.versions.deploy("v0")
    ids = [_sampled_comparison(store, "v0", f"p{i}") for i in range(4)]
    submit_label(store, "alice", ids[0], "a", "ab")
    submit_label(store, "alice", ids[1], "skip", "ab")
    submit_label(store, "bob", ids[1], "b", "ab")
    submit_label(store, "judge:j", ids[2], "a", "ab", source="judge")
    wrong = submit_label(store, "bob", ids[3], "tie", "ab")
    discard(store, "label", wrong.label_id, "mistake", "olivia")
    st = store.stats.summary()
    assert st["labels_by_annotator"] == {"alice": 1, "bob": 1}
    assert st["labels_today_by_annotator"] == {"alice": 1, "bob": 1}
    assert st["skips_by_annotator"] == {"alice": 1}
    assert sum(st["labels_today_by_annotator"].values()) == queue_counts(store)["labelled_today"] == 2


def test_password_role_and_disabling_change_an_account_and_revoke_its_tokens(store):
    from datetime import timedelta

    from data.models import utcnow

    store.accounts.add_user("alice", "annotator", "old")
    later = utcnow() + timedelta(days=1)
    store.accounts.add_token("t1", "alice", later)
    store.accounts.set_role("alice", "operator")
    assert store.accounts.user_for_token("t1").role == "operator"  # a role change keeps the token
    store.accounts.set_password("alice", "new")
    assert store.accounts.get_user("alice").password_hash == "new" and store.accounts.user_for_token("t1") is None
    store.accounts.add_token("t2", "alice", later)
    store.accounts.set_disabled("alice", True)
    assert store.accounts.get_user("alice").disabled_at is not None
    assert store.accounts.user_for_token("t2") is None and store.accounts.revoke_tokens("alice") == 0
    store.accounts.set_disabled("alice", False)
    store.accounts.add_token("t3", "alice", later)
    assert store.accounts.user_for_token("t3").name == "alice"
    with pytest.raises(LookupError, match="no user named 'bob'"):
        store.accounts.set_role("bob", "operator")
