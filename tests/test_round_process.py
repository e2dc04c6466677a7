"""Rounds as their own process: progress in the database, kill -9, stale runs, the cross-process lock,
automatic rounds, and the CLI verbs train / rounds / cancel."""

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import add_labelled_pairs, short_long_pairs

from app.cli import cli
from app.services import rounds as training_rounds
from app.services.workdir import MODELS_DIR
from data.runs import RoundBusy
from data.store import Store
from training import scheduler
from training.registry import temp_dir


def v0_id(app):
    return app.store.versions.get("v0").id


def wait_for(predicate, timeout_s: float = 120.0, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError("timed out waiting")


def persist_settings(app, **values) -> None:
    """Write settings into the workdir's prefloop.toml (what the CLI and the round process read)."""
    sections: dict[str, list[str]] = {}
    for key, value in values.items():
        section, name = key.split("__")
        literal = value if isinstance(value, str) and value in ("true", "false") else repr(value)
        literal = f'"{value}"' if isinstance(value, str) and value not in ("true", "false") else literal
        sections.setdefault(section, []).append(f"{name} = {literal}")
    text = "\n".join(f"[{s}]\n" + "\n".join(lines) for s, lines in sections.items())
    (app.workdir / "prefloop.toml").write_text(text + "\n", encoding="utf-8")


def wait_until_ended(app, run_id: int, timeout_s: float = 300.0):
    """The run row once it has a final status (its log's tail in the failure message otherwise)."""
    def ended():
        run = app.store.runs.get(run_id)
        return run if run.status in ("done", "failed", "cancelled") else None

    try:
        return wait_for(ended, timeout_s)
    except AssertionError:
        raise AssertionError((app.workdir / "logs" / f"round-{run_id}.log").read_text()[-3000:]) from None


@pytest.mark.slow
def test_a_round_process_of_its_own_streams_progress_finishes_and_exits(tiny_app):
    app = tiny_app(training__max_steps=3, training__worker_idle_s=0)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(12))
    run_id, pid = scheduler.start_round(app.store, app.workdir, training_rounds.round_config(app, deploy=True),
                                        models_dir=app.models_dir)
    run = wait_until_ended(app, run_id)
    assert run.status == "done" and run.pid == pid
    assert [m["step"] for m in run.metrics if "loss" in m] == [1, 2, 3]
    assert app.store.versions.deployed().name == "v1"
    wait_for(lambda: not scheduler.pid_alive(pid), 30)  # one round, then it exits


@pytest.mark.slow
def test_kill_9_keeps_the_deployed_version_and_the_next_round_recovers(tiny_app):
    app = tiny_app(training__max_steps=100000, training__stale_after_s=60)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(16))
    run_id, pid = scheduler.start_round(app.store, app.workdir, training_rounds.round_config(app, deploy=True),
                                        models_dir=app.models_dir)
    wait_for(lambda: any("loss" in m for m in app.store.runs.get(run_id).metrics))
    # a partial version folder, as a kill during saving leaves it
    partial = temp_dir(app.models_dir, "v1")
    partial.mkdir()
    (partial / "config.json").write_text("{")
    os.kill(pid, signal.SIGKILL)  # the warm round worker, mid-round
    wait_for(lambda: not scheduler.pid_alive(pid), 30)

    assert app.store.versions.deployed().name == "v0"  # it kept serving all along
    with pytest.raises(RoundBusy):  # a fresh heartbeat and a live pid would still hold the lock ...
        app.store.runs.create(None, [], {}, is_stale=lambda run: False)
    # ... but the process is gone, so the next start marks it failed and goes ahead, in a new worker
    assert training_rounds.list_rounds(app)[0]["status"] == "failed"
    assert "died" in app.store.runs.get(run_id).error
    app.settings.training.max_steps = 2
    new_id = training_rounds.start_round(app, deploy=True)
    assert wait_until_ended(app, new_id).status == "done"
    assert app.store.runs.get(new_id).pid != pid
    assert not partial.exists()
    assert [v.name for v in app.store.versions.all()] == ["v0", "v1"]
    assert (app.models_dir / "v1" / "config.json").read_text() != "{"
    assert app.store.versions.deployed().name == "v1"


def test_stale_means_dead_pid_or_old_heartbeat(store):
    from datetime import timedelta

    from data.models import utcnow

    run = store.runs.create(None, [], {})
    assert not scheduler.is_stale(run, 60)
    store.runs.update(run.id, heartbeat_at=utcnow() - timedelta(seconds=120))
    assert scheduler.is_stale(store.runs.get(run.id), 60)
    store.runs.update(run.id, heartbeat_at=utcnow(), pid=os.getpid())
    assert not scheduler.is_stale(store.runs.get(run.id), 60)
    dead = multiprocessing.get_context("spawn").Process(target=int)
    dead.start()
    dead.join()
    store.runs.update(run.id, pid=dead.pid)
    assert scheduler.is_stale(store.runs.get(run.id), 60)
    # another machine's pid means nothing here: only its heartbeat counts
    with store.write() as s:
        from data.models import TrainingRun

        row = s.get(TrainingRun, run.id)
        row.config = {"host": "another-machine"}
        s.add(row)
    assert not scheduler.is_stale(store.runs.get(run.id), 60)
    store.runs.update(run.id, config={})
    assert scheduler.recover_stale_runs(store, 60) == [run.id]


def _try_round(url: str, models_dir: str, barrier, results) -> None:
    """One process starting a round (pair selection, then the lock) as `prefloop train` does; reports the outcome."""
    from training.config import RoundConfig

    store = Store(url)
    try:
        barrier.wait(timeout=120)  # all at once: they race for the lock, they do not take turns
        run_id = scheduler.queue_round(store, Path(models_dir), RoundConfig(min_pairs=4, eval_fraction=0.0))
        results.put(("won", run_id))
    except RoundBusy as busy:
        results.put(("busy", str(busy)))
    except Exception as error:  # reported, so the test fails with it rather than waiting for an answer
        results.put(("error", repr(error)))
    finally:
        store.close()


def test_the_round_lock_lets_exactly_one_process_through(store, workdir):
    """Four processes, each with its own Store on the one database, start a round at once: exactly one round is
    queued, the others are refused with RoundBusy; the stale run they all find is failed once, by the winner."""
    from datetime import timedelta

    from data.models import utcnow

    store.versions.add("v0", str(workdir / "v0"))
    store.versions.deploy("v0")
    add_labelled_pairs(store, store.versions.get("v0").id, short_long_pairs(6))
    stale = store.runs.create(None, [], {})
    store.runs.update(stale.id, heartbeat_at=utcnow() - timedelta(hours=1))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_try_round, args=(store.url, str(workdir / MODELS_DIR), barrier, results))
             for _ in range(4)]
    for p in procs:
        p.start()
    try:
        outcomes = sorted(results.get(timeout=180) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [kind for kind, _ in outcomes] == ["busy"] * 3 + ["won"], outcomes
    [(_, won)] = [o for o in outcomes if o[0] == "won"]
    assert all(f"training run {won} is queued; one round at a time" in why for kind, why in outcomes if kind == "busy")
    runs = {run.id: run.status for run in store.runs.all()}
    assert runs == {stale.id: "failed", won: "queued"}


def test_automatic_rounds_every_n_new_pairs(tiny_app, round_launches):
    launched = round_launches
    app = tiny_app(training__min_pairs=2, training__eval_fraction=0)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(5))
    assert training_rounds.maybe_auto_round(app) is None  # auto_every = 0: off
    app.settings.training.auto_every = 6
    assert training_rounds.maybe_auto_round(app) is None  # 5 < 6
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(1, offset=9), prompt_prefix="more")
    run_id = training_rounds.maybe_auto_round(app)
    assert run_id is not None and launched == [run_id]
    assert training_rounds.maybe_auto_round(app) is None  # one at a time
    assert app.store.runs.get(run_id).pairs_used == 6


# -- the CLI ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_train_wait_rounds_and_cancel(tiny_app):
    app = tiny_app()
    persist_settings(app, training__min_pairs=4, training__max_steps=2, training__batch_size=4,
                     training__probe_prompts=1, generation__max_new_tokens=8, model__device="cpu")
    runner = CliRunner()
    base = ["--workdir", str(app.workdir)]
    result = runner.invoke(cli, [*base, "train", "--deploy"])
    assert result.exit_code != 0 and "min_pairs" in result.output

    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(10))
    result = runner.invoke(cli, [*base, "train", "--deploy", "--wait"])
    assert result.exit_code == 0, result.output
    assert "done  v0 -> v1" in result.output
    timing = next(line for line in result.output.splitlines() if line.startswith("    time "))
    for phase in ("selecting pairs", "starting", "loading", "reference log-probs", "training", "promoting"):
        assert f"{phase} " in timing  # the round's own process, started by the CLI, timed each phase
    held_out = app.store.runs.get(1).report["eval"]["after"]
    assert held_out["pairs"] == 3 and f"(3 pairs, 95% {held_out['accuracy_low']:.2f}-" in result.output
    result = runner.invoke(cli, [*base, "rounds"])
    assert result.exit_code == 0 and result.output.startswith("1  done  v0 -> v1  pairs")
    assert result.output.splitlines()[1] == timing
    assert "*" in runner.invoke(cli, [*base, "versions"]).output.splitlines()[1]

    # --no-wait returns once the process has started; the row tells the rest
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(10, offset=30), prompt_prefix="later")
    result = runner.invoke(cli, [*base, "train", "--no-wait"])
    assert result.exit_code == 0 and "training run 2 started" in result.output
    wait_for(lambda: training_rounds.round_status(app, 2)["status"] not in ("queued", "running"))
    assert training_rounds.round_status(app, 2)["status"] == "done"
    assert app.store.versions.deployed().name == "v1"  # without --deploy it is registered, not deployed

    run = app.store.runs.create(v0_id(app), [], {})
    result = runner.invoke(cli, [*base, "cancel", str(run.id)])
    assert result.exit_code == 0 and f"training run {run.id}: cancelled" in result.output
    assert runner.invoke(cli, [*base, "cancel", "999"]).exit_code != 0


def test_cli_help_lists_the_training_verbs():
    result = CliRunner().invoke(cli, ["--help"])
    for verb in ("train", "rounds", "cancel"):
        assert verb in result.output
    assert "--wait / --no-wait" in CliRunner().invoke(cli, ["train", "--help"]).output


def test_the_heartbeat_thread_keeps_a_run_fresh(store):
    from datetime import timedelta

    from data.models import utcnow
    from training.progress import run_heartbeat

    run = store.runs.create(None, [], {})
    store.runs.update(run.id, heartbeat_at=utcnow() - timedelta(seconds=600))
    assert scheduler.is_stale(store.runs.get(run.id), 60)
    with run_heartbeat(store, run.id, interval_s=0.05):
        time.sleep(0.3)
    assert not scheduler.is_stale(store.runs.get(run.id), 60)


@pytest.mark.slow
def test_four_train_commands_at_once_start_exactly_one_round(tmp_path, tiny_model_dir, db_url):
    """Four `prefloop train --no-wait` processes on one database: one starts a round, three are told why not."""
    import subprocess
    import sys

    from app.services.workdir import init_workdir

    settings = {"training": {"min_pairs": 4, "max_steps": 1, "batch_size": 4, "probe_prompts": 1},
                "generation": {"max_new_tokens": 8}, "model": {"device": "cpu"}}
    app, _ = init_workdir(tmp_path / "race", base=str(tiny_model_dir), config_values=settings, database_url=db_url)
    add_labelled_pairs(app.store, v0_id(app), short_long_pairs(8))
    prefloop = Path(sys.executable).with_name("prefloop")
    command = [str(prefloop), "--workdir", str(app.workdir), "train", "--no-wait"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(4)]
    outputs = [(p.wait(timeout=180), p.stdout.read()) for p in procs]
    started = [out for code, out in outputs if code == 0]
    refused = [out for code, out in outputs if code != 0]
    assert len(started) == 1 and "training run 1 started" in started[0], outputs
    assert len(refused) == 3 and all("training run 1 is" in out and "one round at a time" in out
                                     for out in refused), outputs
    assert "Traceback" not in "".join(out for _, out in outputs)
    assert [run.id for run in app.store.runs.all()] == [1]
    wait_for(lambda: training_rounds.round_status(app, 1)["status"] not in ("queued", "running"), timeout_s=300)
