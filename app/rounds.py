"""Training rounds as a person asks for them: start, watch, cancel, list, and the automatic trigger.

Thin wrappers over training/ for the CLI and the console; every function takes an `App`."""

from typing import Any

from app.judging import judge_config
from app.service import App


def round_config(app: App, deploy: bool = False):
    """One round's config: the training settings, the probe sampling settings, and whether to deploy."""
    from training.config import RoundConfig

    g = app.settings.generation
    return RoundConfig(**app.settings.training.model_dump(), temperature=g.temperature, top_p=g.top_p,
                       max_new_tokens=g.max_new_tokens, device=app.settings.model.device, deploy=deploy,
                       retire_open=g.on_deploy == "retire", judge=_win_rate_judge(app))


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


def start_round(app: App, deploy: bool = False, inline: bool = False, generator=None) -> int:
    """Start a DPO round on the deployed version in its own process (or in this one with `inline`, which
    returns when it ends); returns the training run id. Refuses below training.min_pairs or while a round runs.

    `generator`: a backend in this process sharing the device; it sleeps during the round (when it can), then
    serves whatever is deployed after it (training.handoff). Implies `inline`."""
    from training.round import run_round
    from training.scheduler import queue_round
    from training.scheduler import start_round as start

    cfg = round_config(app, deploy)
    if inline or generator is not None:
        run_id = queue_round(app.store, app.models_dir, cfg)
        if generator is None:
            run_round(app.store, app.models_dir, run_id)
        else:
            from training.handoff import train_with_handoff

            def deployed_path():
                version = app.store.deployed_version()
                return version.path if version else None

            train_with_handoff(generator, lambda: run_round(app.store, app.models_dir, run_id), deployed_path)
        return run_id
    run_id, _proc = start(app.store, app.workdir, cfg, app.settings.database_url or None)
    return run_id


def round_status(app: App, run_id: int) -> dict[str, Any]:
    """A training run as plain data: status, progress (step of max_steps), last metrics, report, error."""
    run = app.store.get_training_run(run_id)
    if run is None:
        raise LookupError(f"no training run {run_id}")
    return _run_dict(app, run)


def _run_dict(app: App, run) -> dict[str, Any]:
    names = {v.id: v.name for v in app.store.versions()}
    last = run.metrics[-1] if run.metrics else {}
    return {"id": run.id, "status": run.status, "parent": names.get(run.parent_version_id),
            "version": names.get(run.output_version_id), "pairs": run.pairs_used,
            "step": last.get("step", 0), "max_steps": last.get("max_steps") or run.report.get("max_steps"),
            "phase": run.report.get("phase"), "last_metrics": last, "report": run.report, "error": run.error,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None}


def list_rounds(app: App) -> list[dict[str, Any]]:
    """Every training run, oldest first (stale ones are marked failed first)."""
    from training.scheduler import recover_stale_runs

    recover_stale_runs(app.store, app.settings.training.stale_after_s)
    return [_run_dict(app, run) for run in app.store.training_runs()]


def cancel_round(app: App, run_id: int) -> str:
    """Ask training run `run_id` to stop; returns its status ('cancelling' until the process stops)."""
    return app.store.request_cancel(run_id)


def training_panel(app: App, run_id: int | None = None) -> dict[str, Any]:
    """What the console's training panel shows, in one call: every round (list_rounds), the round to follow
    (`run_id`, else the active one, else the latest) with its per-step metrics, and the auto-round settings."""
    rounds = list_rounds(app)
    by_id = {r["id"]: r for r in rounds}
    active = [r for r in rounds if r["status"] in app.store.ACTIVE_RUN_STATUSES]
    chosen = by_id.get(run_id) if run_id is not None else None
    chosen = chosen or (active[-1] if active else (rounds[-1] if rounds else None))
    selected = None
    if chosen is not None:
        run = app.store.get_training_run(chosen["id"])
        selected = {**chosen, "metrics": list(run.metrics or []) if run else []}
    t = app.settings.training
    return {"rounds": rounds, "selected": selected, "active": active[-1]["id"] if active else None,
            "auto_every": t.auto_every, "min_pairs": t.min_pairs, "auto_deploy": t.auto_deploy}


def maybe_auto_round(app: App) -> int | None:
    """Start a round when training.auto_every new pairs have resolved and none runs; returns its run id or None."""
    from training.scheduler import maybe_start_round

    started = maybe_start_round(app.store, app.workdir, round_config(app, deploy=False),
                                app.settings.database_url or None)
    return started[0] if started else None
