"""The warm round worker: rounds after the first run in the same process, each with its own log; a cancelled
round does not end it; an idle worker leaves and the next round starts a fresh one; nothing is handed to a
worker that is leaving."""

import json

import pytest
from conftest import add_labelled_pairs, short_long_pairs
from test_round_process import wait_for, wait_until_ended

from app.services import rounds as training_rounds
from training import scheduler, worker


def v0_id(app):
    return app.store.versions.get("v0").id


@pytest.mark.slow
def test_rounds_after_the_first_run_in_the_same_warm_process_each_with_its_own_log(tiny_app):
    app = tiny_app(training__max_steps=2)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(8))
    first = training_rounds.start_round(app, deploy=True)
    assert wait_until_ended(app, first).status == "done"
    pid = app.store.runs.get(first).pid
    assert worker.live_worker(app.models_dir, app.database_url) == pid

    # cancelled as soon as it is handed over: the worker ends it and stays
    add_labelled_pairs(app.store, app.store.versions.deployed().id, short_long_pairs(8, offset=100),
                       prompt_prefix="again")
    cancelled = training_rounds.start_round(app, deploy=True)
    training_rounds.cancel_round(app, cancelled)
    assert wait_until_ended(app, cancelled).status == "cancelled"

    third = training_rounds.start_round(app, deploy=True)
    run = wait_until_ended(app, third)
    assert run.status == "done" and run.pid == pid
    assert app.store.versions.deployed().name == "v2"
    logs = app.workdir / "logs"
    for run_id in (first, third):
        assert "'loss'" in (logs / f"round-{run_id}.log").read_text()  # TRL's own output, in the round's log
    assert "'loss'" not in (logs / "round-worker.log").read_text()


@pytest.mark.slow
def test_an_idle_worker_leaves_and_the_next_round_starts_a_fresh_one(tiny_app):
    app = tiny_app(training__max_steps=1, training__worker_idle_s=0.5)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(8))
    first = training_rounds.start_round(app, deploy=True)
    assert wait_until_ended(app, first).status == "done"
    pid = app.store.runs.get(first).pid
    wait_for(lambda: not scheduler.pid_alive(pid), 60)
    assert not (app.models_dir / worker.PID_FILE).exists()
    assert worker.live_worker(app.models_dir, app.database_url) is None

    add_labelled_pairs(app.store, app.store.versions.deployed().id, short_long_pairs(8, offset=100),
                       prompt_prefix="again")
    second = training_rounds.start_round(app, deploy=True)
    run = wait_until_ended(app, second)
    assert run.status == "done" and run.pid != pid


def test_a_worker_leaves_only_when_nothing_was_handed_to_it(store, tmp_path):
    """The decision under the hand-over lock: a run handed to it meanwhile keeps it (and its pid file)."""
    me = 4242
    (tmp_path / worker.PID_FILE).write_text(json.dumps({"pid": me}))
    run = store.runs.create(None, [1], {})
    store.runs.update(run.id, pid=me)
    assert store.runs.handed_to(me) == run.id
    assert not worker.leave(store, tmp_path, me)
    assert (tmp_path / worker.PID_FILE).exists()

    store.runs.finish(run.id, "cancelled")
    assert store.runs.handed_to(me) is None
    assert worker.leave(store, tmp_path, me)
    assert not (tmp_path / worker.PID_FILE).exists()


def test_a_pid_file_for_another_database_or_a_dead_process_names_no_worker(tmp_path):
    import os

    url = "sqlite:///somewhere.db"
    info = {"pid": os.getpid(), "host": __import__("socket").gethostname(), "database": worker.database_key(url)}
    (tmp_path / worker.PID_FILE).write_text(json.dumps(info))
    assert worker.live_worker(tmp_path, url) is None  # alive, but not a round worker (pytest)
    assert worker.live_worker(tmp_path, "sqlite:///elsewhere.db") is None
    (tmp_path / worker.PID_FILE).write_text("{not json")
    assert worker.live_worker(tmp_path, url) is None
