"""Training rounds, as an operator runs them: start, follow, cancel and list DPO rounds, and the automatic
trigger with its back-off after failures. Thin over training/."""

from typing import Any

from app.services.errors import NotFound, refusals
from app.services.judging import judge_config
from app.services.workdir import App


def round_config(app: App, deploy: bool = False):
    """One round's config: the training settings, the probe sampling settings, and whether to deploy."""
    import dataclasses

    from app.services.quality import derivation, gold_policy
    from training.config import RoundConfig

    s = app.settings
    with refusals():  # settings the round refuses
        return RoundConfig.from_settings(s.training, s.generation, s.model, deploy=deploy,
                                         retire_open=s.generation.on_deploy == "retire", judge=_win_rate_judge(app),
                                         gold=dataclasses.asdict(gold_policy(s)),
                                         derivation=dataclasses.asdict(derivation(s)))


def _win_rate_judge(app: App) -> dict[str, Any] | None:
    """The [judge] settings as a JSON-able dict when training.win_rate_judge is on (stored with the run). A judge
    that cannot be configured does not block the round: its error is kept and shows in the round's report."""
    import dataclasses

    if not app.settings.training.win_rate_judge:
        return None
    try:
        return dataclasses.asdict(judge_config(app))
    except (LookupError, ValueError) as error:
        return {"error": f"{type(error).__name__}: {error}"}


def _round_refusals():
    """A round refused now (one runs already, too few new pairs) is a Conflict."""
    from training.scheduler import NotEnoughPairs, RoundBusy

    return refusals(RoundBusy, NotEnoughPairs)


def start_round(app: App, deploy: bool = False, inline: bool = False) -> int:
    """Start a DPO round on the deployed version in a round process (the registry's warm round worker, see
    training.worker), or in this one with `inline` (returns when it ends); returns the training run id. Refuses
    below training.min_pairs or while a round runs. A generator sampling on the round's GPU, in any process, sleeps
    while the round trains (training.handoff)."""
    from training.scheduler import queue_round
    from training.scheduler import start_round as start

    cfg = round_config(app, deploy)
    with _round_refusals():
        if inline:
            run_id = queue_round(app.store, app.models_dir, cfg)
        else:
            run_id, _pid = start(app.store, app.workdir, cfg, app.database_url, models_dir=app.models_dir)
    if inline:
        from training.round import run_round

        run_round(app.store, app.models_dir, run_id)
    return run_id


def round_status(app: App, run_id: int) -> dict[str, Any]:
    """A training run as plain data: status, progress (step of max_steps), last metrics, report, error."""
    run = app.store.runs.get(run_id)
    if run is None:
        raise NotFound(f"no training run {run_id}")
    return _run_dict(app, run)


def _run_dict(app: App, run) -> dict[str, Any]:
    """`error` is one readable line (older rows kept a traceback after it); `log` the round process's log file,
    which has the traceback, when there is one (an inline round logs where its process logs); `phases` the wall
    time of each phase so far, [(phase, seconds)]; `method` training.method (rows from before it: dpo)."""
    names = {v.id: v.name for v in app.store.versions.all()}
    last = run.metrics[-1] if run.metrics else {}
    log = log_path(app, run.id)
    return {"id": run.id, "status": run.status, "parent": names.get(run.parent_version_id),
            "version": names.get(run.output_version_id), "pairs": run.pairs_used,
            "skipped_pairs": (run.config or {}).get("skipped_pairs", 0),
            "trigger": (run.config or {}).get("trigger", "manual"),
            "method": ((run.config or {}).get("round") or {}).get("method", "dpo"),
            "step": last.get("step", 0), "max_steps": last.get("max_steps") or run.report.get("max_steps"),
            "phase": run.report.get("phase"), "phases": phase_times(run.report), "last_metrics": last,
            "report": run.report,
            "error": error_line(run.error), "log": str(log) if log.exists() else None,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None}


def phase_times(report: dict[str, Any]) -> list[tuple[str, float]]:
    """(phase, seconds) in the order the round went through them; empty for a row from before they were kept."""
    return [(str(name), float(seconds)) for name, seconds in (report or {}).get("phases") or []]


def log_path(app: App, run_id: int):
    """Where round `run_id`'s process writes its output, the traceback of a failure included."""
    from training.scheduler import log_path as path

    return path(app.workdir, run_id)


def error_line(error: str | None) -> str | None:
    """A stored error as one readable line (training.scheduler.error_line)."""
    from training.scheduler import error_line as one_line

    return one_line(error)


def list_rounds(app: App) -> list[dict[str, Any]]:
    """Every training run, oldest first (stale ones are marked failed first)."""
    from training.scheduler import recover_stale_runs

    recover_stale_runs(app.store, app.settings.training.stale_after_s)
    return [_run_dict(app, run) for run in app.store.runs.all()]


@refusals()
def cancel_round(app: App, run_id: int) -> str:
    """Ask training run `run_id` to stop; returns its status ('cancelling' until the process stops)."""
    return app.store.runs.request_cancel(run_id)


def maybe_auto_round(app: App, now=None) -> int | None:
    """Start a round when training.auto_every new pairs have resolved, none runs and the back-off after failed
    automatic rounds allows it (at `now`, default the clock); returns its run id or None."""
    from training.scheduler import maybe_start_round

    started = maybe_start_round(app.store, app.workdir, round_config(app, deploy=False), app.database_url, now=now,
                                models_dir=app.models_dir)
    return started[0] if started else None


def auto_state(app: App, now=None):
    """training.scheduler.AutoBackoff: failed automatic rounds in a row, the last error, the wait, the pause."""
    from training.scheduler import auto_backoff

    return auto_backoff(app.store, round_config(app), now)


def auto_notice(app: App, now=None) -> str | None:
    """What an operator should know about automatic rounds, in plain words (None when all is well)."""
    return notice_text(auto_state(app, now)) if app.settings.training.auto_every > 0 else None


def notice_text(state) -> str | None:
    """auto_notice's words for an AutoBackoff state."""
    if not state.failures:
        return None
    error = state.error.rstrip(". ")
    what = (f"automatic round {state.run_id} failed: {error}" if state.failures == 1 else
            f"{state.failures} automatic rounds failed in a row; the last (round {state.run_id}): {error}")
    if state.paused:
        return (f"Automatic rounds are paused: {what}. Fix the cause, then resume them (the console's "
                f"\"Resume automatic rounds\", or `prefloop rounds --resume-auto`).")
    wait = (state.next_try_at - state.now).total_seconds()
    when = f"is in {_duration(wait)}" if wait > 0 else "starts at the next check"
    return f"{what[0].upper()}{what[1:]}. The next automatic try {when}."


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def resume_auto_rounds(app: App, actor: str) -> str:
    """An operator resumes automatic rounds after failures (recorded as an AuditEvent); returns what happened."""
    from training.scheduler import resume_auto_rounds as resume

    state = resume(app.store, round_config(app), actor)
    if not state.failures:
        return "Automatic rounds are not paused: no automatic round has failed since the last success or resume."
    was = "paused" if state.paused else "waiting to retry"
    return (f"Automatic rounds resumed (they were {was} after {state.failures} failure(s) in a row; last error: "
            f"{state.error}).")
