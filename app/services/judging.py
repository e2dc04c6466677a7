"""LLM judges, as an operator runs them: run the configured judge (in its own process, or here) one run at a time,
watch for new comparisons, follow its runs, and its agreement with the humans. Thin over generation/judges/,
generation/judge_worker.py and data/agreement.py."""

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.services.errors import Conflict, NotFound, ServiceError, refusals
from app.services.workdir import App

DATABASE_URL_ENV = "PREFLOOP_DATABASE_URL"  # how a run's process gets the database (the setting's own variable)


def judge_config(app: App, name: str | None = None):
    """The judge's config from the [judge] settings; `name` overrides judge.name. An llm judge without a
    model_path judges with the deployed version (LookupError when none is)."""
    from generation.judges import JudgeConfig

    j, changes = app.settings.judge, {"name": name} if name else {}
    if j.kind == "llm" and not j.model_path:
        version = app.store.versions.deployed()
        if version is None:
            raise LookupError("an llm judge needs judge.model_path, or a deployed model version to judge with")
        changes["model_path"] = version.path
    return JudgeConfig.from_settings(j, **changes)


def open_judge(app: App, name: str | None = None):
    """Start the configured judge (loads its model, if it has one)."""
    return open_judge_config(judge_config(app, name))


def open_judge_config(config):
    """Start the judge a JudgeConfig describes."""
    from generation.backend import ModelLoadError
    from generation.judges import make_judge

    with refusals(unavailable=(ModelLoadError,)):
        return make_judge(config)


def start_judge_run(app: App, name: str | None = None, limit: int | None = None,
                    mode: str | None = None) -> dict[str, Any]:
    """Start a judge run in its own process (`prefloop judge --run-id`) and return it at once (judge_run_status);
    its row has its progress (judged of limit) and, when it labels nothing, why. Refuses (Conflict) while a judge
    run runs. A judge that cannot be configured is a run that failed at once, with the reason."""
    run_id, ready = _claim(app, name, limit, mode)
    if ready:
        _launch(app, run_id)
    return judge_run_status(app, run_id)


def run_judge(app: App, name: str | None = None, limit: int | None = None, mode: str | None = None,
              progress: bool = False, judge=None):
    """Label comparisons with the judge in this process (each in both orders; see generation.judge_worker), one
    judge run at a time; returns the report (its `reason` says why nothing was labelled, if so). `judge`: an
    already opened judge to use instead of the configured one."""
    run_id, ready = _claim(app, name, limit, mode, kind=judge.kind if judge else None)
    if not ready:
        raise Conflict(judge_run_status(app, run_id)["reason"])
    return carry_out(app, run_id, progress=progress, judge=judge)


def carry_out(app: App, run_id: int, progress: bool = False, judge=None):
    """Do started run `run_id` here (what its process runs): open its judge, judge, finish its row."""
    from generation.judge_worker import judge_heartbeat, judge_once
    from generation.judges import JudgeConfig

    run = app.store.judge_runs.get(run_id)
    if run is None:
        raise NotFound(f"no judge run {run_id}")
    record = _record(run)
    opened = judge
    if opened is None:
        try:
            opened = open_judge_config(JudgeConfig(**record["config"]))
        except ServiceError as error:  # a setting it refuses, a model that does not load: the run says why
            raise type(error)(_fail(app, run_id, f"the judge could not start: {error}")) from error
        except Exception as error:
            _fail(app, run_id, f"the judge could not start: {type(error).__name__}: {error}")
            raise
    beat = min(10.0, app.settings.training.stale_after_s / 4)
    try:
        with refusals(), judge_heartbeat(app.store, run_id, beat):
            return judge_once(app.store, opened, mode=run.mode, limit=record.get("limit"),
                              batch_size=record["batch_size"], calibration_share=record["calibration_share"],
                              progress=progress, run_id=run_id)
    finally:
        if judge is None:
            opened.close()


def judge_run_status(app: App, run_id: int) -> dict[str, Any]:
    """One judge run as plain data (generation.judge_worker.run_dict), after marking dead runs failed."""
    from generation.judge_worker import run_dict

    recover_stale_judge_runs(app)
    run = app.store.judge_runs.get(run_id)
    if run is None:
        raise NotFound(f"no judge run {run_id}")
    return run_dict(run)


def recover_stale_judge_runs(app: App) -> list[int]:
    """Mark failed the judge runs whose process died (or stopped reporting for training.stale_after_s)."""
    from generation.judge_worker import is_stale

    stale_after = app.settings.training.stale_after_s
    return app.store.judge_runs.recover_stale(lambda run: is_stale(run, stale_after))


def _claim(app: App, name: str | None, limit: int | None, mode: str | None,
           kind: str | None = None) -> tuple[int, bool]:
    """Start a run's row under the one-at-a-time lock; (run id, whether it can go on). A judge that cannot be
    configured (no deployed version for an llm judge, ...) leaves a failed row with the reason: (id, False)."""
    import dataclasses

    from data.judge_runs import JudgeBusy
    from generation.judge_worker import is_stale, judge_annotator

    j = app.settings.judge
    record = {"limit": limit, "batch_size": j.batch_size, "calibration_share": j.calibration_share,
              "host": socket.gethostname()}
    try:
        config = judge_config(app, name)
        record["config"] = dataclasses.asdict(config)
        annotator, problem = judge_annotator(config.label_name), None
    except (LookupError, ValueError) as error:
        annotator, problem = judge_annotator(name or j.name or j.kind), str(error)
    stale_after = app.settings.training.stale_after_s
    with refusals(JudgeBusy):
        run_id = app.store.judge_runs.claim(annotator, kind or j.kind, mode or j.mode, record,
                                            is_stale=lambda run: is_stale(run, stale_after))
    if problem is not None:
        _fail(app, run_id, f"the judge settings are incomplete: {problem}")
        return run_id, False
    return run_id, True


def _fail(app: App, run_id: int, why: str) -> str:
    """Finish run `run_id` as failed before it judged anything; returns the reason (a sentence)."""
    reason = f"Nothing was labelled: {' '.join(why.split()).rstrip('.')}."
    app.store.judge_runs.record(run_id, reason=reason)
    app.store.judge_runs.finish(run_id, "failed", error=why)
    return reason


def _record(run) -> dict[str, Any]:
    from data.judge_runs import split_choices

    return split_choices(run.choices)[1]


def log_path(app: App, run_id: int) -> Path:
    """Where judge run `run_id`'s process writes its output, the traceback of a failure included."""
    return Path(app.workdir).resolve() / "logs" / f"judge-{run_id}.log"


def _launch(app: App, run_id: int) -> None:
    """Start `prefloop judge --run-id` for a started run, detached, logging to <workdir>/logs/judge-N.log."""
    log = log_path(app, run_id)
    log.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "app.cli", "--workdir", str(Path(app.workdir).resolve()), "judge",
           "--run-id", str(run_id)]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    env[DATABASE_URL_ENV] = app.database_url  # the environment, not argv: `ps` shows argv to every user
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
    except OSError as error:
        _fail(app, run_id, f"its process could not start: {error}")
        raise
    # The child writes its own pid when it starts; writing it here too covers a child that dies before that.
    app.store.judge_runs.record(run_id, pid=proc.pid)


def watch_judge(app: App, stop_event, name: str | None = None, mode: str | None = None, max_rounds: int | None = None,
                on_report=None, judge=None):
    """Judge new comparisons as they appear until `stop_event` is set."""
    from generation.judge_worker import watch

    j = app.settings.judge
    opened = judge or open_judge(app, name)
    try:
        with refusals():
            return watch(app.store, opened, stop_event, mode=mode or j.mode, batch_size=j.batch_size,
                         calibration_share=j.calibration_share, interval_s=j.watch_interval_s,
                         max_rounds=max_rounds, on_report=on_report)
    finally:
        if judge is None:
            opened.close()


def judge_status(app: App, name: str | None = None) -> dict[str, Any]:
    """Per judge: totals over its runs (judged, labelled, consistent, flipped, abstained) and its recent runs
    (newest first; runs whose process died are marked failed first)."""
    from generation.judge_worker import judge_status as status

    recover_stale_judge_runs(app)
    return status(app.store, name)


def judge_agreement(app: App) -> dict[str, Any]:
    """Per judge: raw agreement and Cohen's kappa with the humans (overall and per round), both-order
    consistency rate and abstain rate (see data.agreement)."""
    from data.agreement import judge_agreement as agreement

    return agreement(app.store)
