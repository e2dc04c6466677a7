"""LLM judges, as an operator runs them: run or watch the configured judge, its runs, and its agreement with
the humans. Thin over generation/judges/, generation/judge_worker.py and data/agreement.py."""

from typing import Any

from app.services.errors import refusals
from app.services.workdir import App


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
    from generation.backend import ModelLoadError
    from generation.judges import make_judge

    with refusals(unavailable=(ModelLoadError,)):
        return make_judge(judge_config(app, name))


def run_judge(app: App, name: str | None = None, limit: int | None = None, mode: str | None = None,
              progress: bool = False, judge=None):
    """Label comparisons with the judge (each in both orders; see generation.judge_worker); returns the report.
    `judge`: an already opened judge to use instead of the configured one."""
    from generation.judge_worker import judge_once

    j = app.settings.judge
    opened = judge or open_judge(app, name)
    try:
        with refusals():
            return judge_once(app.store, opened, mode=mode or j.mode, limit=limit, batch_size=j.batch_size,
                              calibration_share=j.calibration_share, progress=progress)
    finally:
        if judge is None:
            opened.close()


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
    """Per judge: totals over its runs (judged, labelled, consistent, flipped, abstained) and its recent runs."""
    from generation.judge_worker import judge_status as status

    return status(app.store, name)


def judge_agreement(app: App) -> dict[str, Any]:
    """Per judge: raw agreement and Cohen's kappa with the humans (overall and per round), both-order
    consistency rate and abstain rate (see data.agreement)."""
    from data.agreement import judge_agreement as agreement

    return agreement(app.store)
