"""The operations a person can ask prefloop for. The CLI verbs and the web UI call these and hold no logic.

Every function takes an `App` (settings + store of one workdir) and returns plain data."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import CONFIG_NAME, Settings, load_settings, render_config
from data.store import Store

DB_NAME = "prefloop.db"
MODELS_DIR = "models"
DEMO_PROMPTS = Path(__file__).with_name("demo_prompts.jsonl")


class WorkdirError(RuntimeError):
    """The workdir is missing or not a prefloop workdir."""


@dataclass
class App:
    """One workdir's settings and store, opened once per process."""
    workdir: Path
    settings: Settings
    store: Store

    @property
    def models_dir(self) -> Path:
        return self.workdir / MODELS_DIR

    def close(self) -> None:
        self.store.close()


def database_url(workdir: Path, settings: Settings) -> str:
    return settings.database_url or f"sqlite:///{(workdir / DB_NAME).resolve()}"


def open_app(workdir: Path, overrides: dict[str, str] | None = None) -> App:
    """Open an initialised workdir; a clear error when `prefloop init` has not been run there."""
    workdir = Path(workdir)
    if not (workdir / CONFIG_NAME).exists():
        raise WorkdirError(f"no prefloop workdir at {workdir} (no {CONFIG_NAME}): run `prefloop init` first, "
                           "or point --workdir / PREFLOOP_WORKDIR at an existing one")
    settings = load_settings(workdir, overrides)
    return App(workdir, settings, Store(database_url(workdir, settings)))


def init_workdir(workdir: Path, base: str | None = None, overrides: dict[str, str] | None = None,
                 progress: bool = False, config_values: dict[str, dict[str, Any]] | None = None) -> tuple[App, bool]:
    """Create the workdir (config file, database, model registry) and register the base model as v0.

    `config_values` ({section: {field: value}}) are written into a new prefloop.toml as real settings (the demo's
    automatic rounds). Idempotent: an existing workdir is opened, not overwritten. Returns the app and whether it
    was created."""
    workdir = Path(workdir)
    created = not (workdir / CONFIG_NAME).exists()
    (workdir / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    if created:
        (workdir / CONFIG_NAME).write_text(_config_text(base, config_values), encoding="utf-8")
    app = open_app(workdir, overrides)
    if app.store.get_version("v0") is None:
        path = _materialise_base(app, progress)
        app.store.add_version("v0", path, config={"base": app.settings.model.base})
        app.store.deploy("v0")
    return app, created


def _config_text(base: str | None, values: dict[str, dict[str, Any]] | None = None) -> str:
    text = render_config()
    values = {section: dict(fields) for section, fields in (values or {}).items()}
    if base is not None:
        # The one setting init writes for real: which model is v0.
        values.setdefault("model", {})["base"] = base
    for section, fields in values.items():
        lines = "".join(f"{key} = {_toml_value(value)}\n" for key, value in fields.items())
        text = text.replace(f"[{section}]\n", f"[{section}]\n{lines}", 1)
    return text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{_toml_escape(value)}"'
    return json.dumps(value)


def _toml_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _materialise_base(app: App, progress: bool) -> str:
    """v0's path: the tiny model is built (cached) and copied into the registry; other bases are used in place."""
    base = app.settings.model.base
    if base != "tiny":
        local = Path(base).expanduser()
        return str(local.resolve()) if local.exists() else base  # else a Hub id, loaded by the backend
    from generation.tiny_model import cached_tiny_model

    target = app.models_dir / "v0"
    if not target.exists():
        tmp = app.models_dir / ".v0.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(cached_tiny_model(progress=progress), tmp)
        tmp.rename(target)
    return str(target.resolve())


def build_tiny_model(out_dir: Path, seed: int = 0, progress: bool = True) -> Path:
    from generation.tiny_model import build_tiny_model as build

    return build(Path(out_dir), seed=seed, progress=progress)


# -- data in and out -------------------------------------------------------------------------------------------
def import_data(app: App, path: Path, fmt: str | None = None, prompt_field: str | None = None,
                skip_invalid: bool = False, report_path: Path | None = None, progress: bool = False):
    from data.importing import import_file

    if skip_invalid and report_path is None:
        report_path = app.workdir / "import-reports" / f"{Path(path).name}.invalid.jsonl"
        report_path.parent.mkdir(exist_ok=True)
    return import_file(app.store, Path(path), fmt=fmt, prompt_field=prompt_field, skip_invalid=skip_invalid,
                       report_path=report_path, overlap=app.settings.labelling.overlap, progress=progress)


def import_demo_prompts(app: App):
    return import_data(app, DEMO_PROMPTS, fmt="prompts-jsonl")


def export_data(app: App, out, fmt: str = "trl", sources: tuple[str, ...] = ("human", "import"),
                since_round: int | None = None, min_agreement: float | None = None,
                include_ties: bool = False, metadata: bool = False, progress: bool = False) -> int:
    from data.export import export_pairs

    return export_pairs(app.store, out, fmt=fmt, sources=sources, since_round=since_round,
                        min_agreement=min_agreement, include_ties=include_ties, metadata=metadata,
                        progress=progress)


def stats(app: App) -> dict[str, Any]:
    data = app.store.stats()
    data["judges"] = judge_agreement(app)  # issue #6: judge-human agreement per judge
    return data


# -- model versions ----------------------------------------------------------------------------------------------
def list_versions(app: App) -> list[dict[str, Any]]:
    by_id = {v.id: v.name for v in app.store.versions()}
    return [{"name": v.name, "parent": by_id.get(v.parent_id), "round": v.round, "status": v.status,
             "deployed": v.deployed, "kind": v.kind, "path": v.path, "created_at": v.created_at.isoformat(),
             "metrics": v.metrics} for v in app.store.versions()]


def deploy(app: App, name: str) -> int:
    """Deploy (or roll back to) version `name`; returns how many open comparisons were retired."""
    return app.store.deploy(name, retire_open=app.settings.generation.on_deploy == "retire")


# -- generation ----------------------------------------------------------------------------------------------------
def sampling_config(app: App, samples: int | None = None):
    """The worker's sampling config from the settings; `samples` overrides samples_per_prompt."""
    from generation.config import SamplingConfig

    fields = app.settings.generation.model_dump()
    if samples is not None:
        fields["samples_per_prompt"] = samples
    return SamplingConfig(**fields, overlap=app.settings.labelling.overlap)


def open_generator(app: App):
    """Start the configured backend on the deployed version (the worker swaps versions itself later)."""
    from generation.backend import load_backend
    from generation.worker import NoDeployedVersion

    version = app.store.deployed_version()
    if version is None:
        raise NoDeployedVersion("no model version is deployed: run `prefloop deploy VERSION`")
    m = app.settings.model
    extra = {"gpu_memory_utilization": m.gpu_memory_utilization} if m.backend == "vllm" else {"device": m.device}
    return load_backend(m.backend, version.path, dtype=m.dtype, **extra)


def generate(app: App, limit: int | None = None, samples: int | None = None, progress: bool = False):
    """Sample responses for prompts that still need comparisons under the deployed version."""
    from generation.worker import generate_once

    with open_generator(app) as backend:
        return generate_once(app.store, backend, sampling_config(app, samples), limit=limit, progress=progress)


def watch_generation(app: App, stop_event, samples: int | None = None, max_batches: int | None = None,
                     on_batch=None):
    """Keep the label queue topped up until `stop_event` is set, following deploys without a restart."""
    from generation.worker import watch

    with open_generator(app) as backend:
        return watch(app.store, backend, sampling_config(app, samples), stop_event, max_batches=max_batches,
                     on_batch=on_batch)


# -- the label queue (what the annotation UI calls) ------------------------------------------------------------
# data.queue is imported inside each function, like the other data modules here, to keep this module's imports lean.
def next_for(app: App, annotator: str):
    """The comparison `annotator` should label now (the one they hold, after a reload), or None when done."""
    from data.queue import next_comparison

    labelling = app.settings.labelling
    return next_comparison(app.store, annotator, labelling.lease_seconds, overlap_default=labelling.overlap)


def submit(app: App, annotator: str, comparison_id: int, choice: str, shown_order: str,
           rationale: str | None = None, time_spent_s: float | None = None):
    """Record a label (choice about responses A/B; see data.queue.choice_from_side for left/right clicks)."""
    from data.queue import submit_label

    return submit_label(app.store, annotator, comparison_id, choice, shown_order, rationale=rationale,
                        time_spent_s=time_spent_s, overlap_default=app.settings.labelling.overlap)


def edit(app: App, annotator: str, comparison_id: int, edited_text: str, shown_order: str,
         rationale: str | None = None, *, edited_from: str, original_choice: str = "skip",
         time_spent_s: float | None = None) -> int:
    """Store an annotator's rewrite of response `edited_from` as a new edit-vs-original pair; returns its id."""
    from data.queue import add_edited_response

    return add_edited_response(app.store, annotator, comparison_id, edited_text, shown_order, rationale,
                               edited_from=edited_from, original_choice=original_choice, time_spent_s=time_spent_s)


def my_progress(app: App, annotator: str) -> dict[str, int]:
    """open comparisons, those left for `annotator`, and their labels today."""
    from data.queue import queue_counts

    return queue_counts(app.store, annotator, overlap_default=app.settings.labelling.overlap)


# -- issue #4: accounts for the web UI and the JSON API, and what the operator console shows ---------------------
API_TOKEN_DAYS = 30


def _token_hash(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def check_login(app: App, name: str, password: str):
    """The user when the password is theirs (argon2; ~100 ms by design), else None."""
    from app.auth import authenticate

    return authenticate(app, (name or "").strip(), password or "")


def issue_token(app: App, name: str, password: str) -> tuple[str, Any] | None:
    """Log in for the JSON API: (bearer token, user), or None. Only the token's SHA-256 is stored."""
    import secrets
    from datetime import timedelta

    from data.models import utcnow

    user = check_login(app, name, password)
    if user is None:
        return None
    token = secrets.token_urlsafe(32)
    app.store.add_api_token(_token_hash(token), user.name, utcnow() + timedelta(days=API_TOKEN_DAYS))
    return token, user


def user_for_token(app: App, token: str):
    """The user an API bearer token belongs to (a hash lookup, no argon2 per request), or None."""
    return app.store.user_for_token(_token_hash(token)) if token else None


def role_of(app: App, name: str | None) -> str | None:
    """The role of user `name` as stored now (None for unknown users): checked on every operator event."""
    user = app.store.get_user(name) if name else None
    return user.role if user else None


def guidelines(app: App) -> str:
    return app.settings.labelling.guidelines


def labels_per_day(app: App, days: int = 30):
    """Labels per day and source over the last `days` days, as a DataFrame (day 'YYYY-MM-DD', source, labels)."""
    from datetime import timedelta

    import pandas as pd

    from data.models import utcnow

    since = (utcnow() - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = app.store.label_times(since)
    frame = pd.DataFrame(rows, columns=["created_at", "annotator", "source"])
    if frame.empty:
        return pd.DataFrame({"day": pd.Series(dtype="str"), "source": pd.Series(dtype="str"),
                             "labels": pd.Series(dtype="int64")})
    frame["day"] = pd.to_datetime(frame["created_at"]).dt.strftime("%Y-%m-%d")
    return frame.groupby(["day", "source"]).size().reset_index(name="labels")


def overview(app: App) -> dict[str, Any]:
    """What the operator console shows at a glance: stats plus the queue's progress."""
    from data.queue import queue_counts

    data = stats(app)
    data["queue"] = queue_counts(app.store, overlap_default=app.settings.labelling.overlap)
    return data


def submit_side(app: App, annotator: str, comparison_id: int, side: str | None, shown_order: str,
                rationale: str | None = None, time_spent_s: float | None = None, choice: str | None = None):
    """A label as clicked: `side` (left|right|tie|both_bad|skip, as shown) or `choice` (about A/B, as stored)."""
    from data.queue import choice_from_side

    if choice is None:
        choice = choice_from_side(side or "", shown_order)
    return submit(app, annotator, comparison_id, choice, shown_order, rationale=rationale, time_spent_s=time_spent_s)


@dataclass
class LabelView:
    """What the label page shows an annotator: the comparison they hold (or None), their progress, a notice."""
    item: Any
    progress: dict[str, int]
    notice: str = ""


def label_view(app: App, annotator: str, notice: str = "") -> LabelView:
    return LabelView(next_for(app, annotator), my_progress(app, annotator), notice)


def label_and_next(app: App, annotator: str, comparison_id: int, side: str, shown_order: str,
                   rationale: str | None = None, time_spent_s: float | None = None) -> LabelView:
    """Submit a click, then what to show next. A refused label (taken meanwhile, already labelled differently,
    retired) is not an error for the annotator: they get the next comparison and a notice saying why."""
    from data.queue import QueueError

    try:
        submit_side(app, annotator, comparison_id, side, shown_order, rationale, time_spent_s)
        notice = ""
    except (QueueError, LookupError) as e:
        notice = str(e)
    return label_view(app, annotator, notice)


def edit_and_next(app: App, annotator: str, comparison_id: int, edited_text: str, edited_side: str,
                  shown_order: str, rationale: str | None = None, time_spent_s: float | None = None) -> LabelView:
    """The annotator rewrote the response shown on `edited_side` (left|right): store it as preferred, move on."""
    from data.queue import choice_from_side

    edited_from = choice_from_side(edited_side, shown_order)
    if edited_from not in ("a", "b"):
        raise ValueError("choose the left or the right response to edit")
    edit(app, annotator, comparison_id, edited_text, shown_order, rationale, edited_from=edited_from,
         time_spent_s=time_spent_s)
    return label_view(app, annotator, "Thanks: your edit was saved as the preferred response.")


def console_snapshot(app: App) -> dict[str, Any]:
    """Everything the operator console shows on a refresh, in one call."""
    return {"overview": overview(app), "labels_per_day": labels_per_day(app), "versions": list_versions(app)}


# -- training rounds (DPO) -----------------------------------------------------------------------------------------
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


# -- issue #6: the LLM-judge worker and judge-human agreement ------------------------------------------------------
def judge_config(app: App, name: str | None = None):
    """The judge's config from the [judge] settings; `name` overrides judge.name. An llm judge without a
    model_path judges with the deployed version."""
    from generation.judges import JudgeConfig

    fields = app.settings.judge.model_dump(exclude={"mode", "calibration_share", "batch_size", "watch_interval_s"})
    if name:
        fields["name"] = name
    if fields["kind"] == "llm" and not fields["model_path"]:
        version = app.store.deployed_version()
        if version is None:
            raise LookupError("an llm judge needs judge.model_path, or a deployed model version to judge with")
        fields["model_path"] = version.path
    return JudgeConfig(**fields)


def open_judge(app: App, name: str | None = None):
    """Start the configured judge (loads its model, if it has one)."""
    from generation.judges import make_judge

    return make_judge(judge_config(app, name))


def run_judge(app: App, name: str | None = None, limit: int | None = None, mode: str | None = None,
              progress: bool = False, judge=None):
    """Label comparisons with the judge (each in both orders; see generation.judge_worker); returns the report.
    `judge`: an already opened judge to use instead of the configured one."""
    from generation.judge_worker import judge_once

    j = app.settings.judge
    opened = judge or open_judge(app, name)
    try:
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
        return watch(app.store, opened, stop_event, mode=mode or j.mode, batch_size=j.batch_size,
                     calibration_share=j.calibration_share, interval_s=j.watch_interval_s, max_rounds=max_rounds,
                     on_report=on_report)
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


def judge_panel(app: App) -> dict[str, Any]:
    """What the console's judges panel shows, in one call: agreement with the humans and the judge runs."""
    return {"agreement": judge_agreement(app), "status": judge_status(app)}
