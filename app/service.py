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
    """Open an initialised workdir; a clear error when `prefloop init` has not been run there, or when its
    database needs `prefloop db upgrade` first."""
    workdir = Path(workdir)
    settings = _workdir_settings(workdir, overrides)
    return App(workdir, settings, open_store(database_url(workdir, settings)))


def open_store(url: str) -> Store:
    """The store on `url`; a database server that cannot be reached is one clear line, not a driver traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    try:
        return Store(url)
    except OperationalError as error:
        cause = str(error.orig or error).strip().splitlines()[0]
        where = make_url(url).render_as_string(hide_password=True)
        raise WorkdirError(f"cannot reach the database {where}: {cause}") from None


def _workdir_settings(workdir: Path, overrides: dict[str, str] | None) -> Settings:
    if not (workdir / CONFIG_NAME).exists():
        raise WorkdirError(f"no prefloop workdir at {workdir} (no {CONFIG_NAME}): run `prefloop init` first, "
                           "or point --workdir / PREFLOOP_WORKDIR at an existing one")
    return load_settings(workdir, overrides)


def schema_status(workdir: Path, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """The workdir database's schema revision and the one this prefloop needs, without opening the store."""
    from data.schema import status

    database, (current, head) = _on_database(workdir, overrides, status)
    return {"database": database, "current": current, "head": head}


def upgrade_schema(workdir: Path, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """Migrate the workdir's database to the schema this prefloop needs; returns the revisions before and after."""
    from data.schema import upgrade

    database, (before, after) = _on_database(workdir, overrides, upgrade)
    return {"database": database, "before": before, "after": after}


def _on_database(workdir: Path, overrides: dict[str, str] | None, fn) -> tuple[str, Any]:
    """(the database's URL without password, fn(engine)) on a bare engine: the store would refuse an old schema."""
    from data.db import make_engine

    engine = make_engine(database_url(workdir, _workdir_settings(Path(workdir), overrides)))
    try:
        return engine.url.render_as_string(hide_password=True), fn(engine)
    finally:
        engine.dispose()


def init_workdir(workdir: Path, base: str | None = None, overrides: dict[str, str] | None = None,
                 progress: bool = False, config_values: dict[str, dict[str, Any]] | None = None,
                 database_url: str | None = None) -> tuple[App, bool]:
    """Create the workdir (config file, database, model registry) and register the base model as v0.

    `config_values` ({section: {field: value}}) are written into a new prefloop.toml as real settings (the demo's
    automatic rounds), and so is `database_url` (every later command then finds the same database, with no
    environment variable to forget). Idempotent: an existing workdir is opened, not overwritten. Returns the app
    and whether it was created."""
    workdir = Path(workdir)
    created = not (workdir / CONFIG_NAME).exists()
    if created and base is not None:
        _base_config(base)  # a Hub id that is neither cached nor reachable fails before anything is written
    (workdir / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    if created:
        text = _config_text(base, config_values, database_url)
        (workdir / CONFIG_NAME).write_text(text, encoding="utf-8")
    if not created and database_url and _workdir_settings(workdir, overrides).database_url != database_url:
        raise WorkdirError(f"{workdir} is already initialised on another database; change database_url in "
                           f"{workdir / CONFIG_NAME} to move it")
    app = open_app(workdir, overrides)
    if app.store.get_version("v0") is None:
        config = _base_config(app.settings.model.base)
        app.store.add_version("v0", _materialise_base(app, progress), config=config)
        app.store.deploy("v0")
    return app, created


def _base_config(base: str) -> dict[str, Any]:
    """What v0 records about its base model: a Hub id's resolved commit, so the lineage says exactly what ran."""
    from generation.hf_backend import hub_revision, looks_like_hub_id

    if base == "tiny" or not looks_like_hub_id(base):
        return {"base": base}
    return {"base": base, "revision": hub_revision(base)}


def _config_text(base: str | None, values: dict[str, dict[str, Any]] | None = None,
                 database_url: str | None = None) -> str:
    text = render_config()
    if database_url:
        # A top-level key: it must come before the first [section].
        text = f"database_url = {_toml_value(database_url)}\n\n" + text
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
                include_ties: bool = False, metadata: bool = False, progress: bool = False,
                to: str | None = None, part: str | None = None) -> int:
    """Resolved pairs to a path (ties and metadata in sidecar files beside it) or an open file. `to` is the
    container (jsonl, parquet, dataset; default from `out`); `part` (pairs, ties, metadata) writes just that
    file of the export to the open file `out`. Returns the pairs and ties written."""
    from data.export import export_pairs, export_part

    filters = dict(fmt=fmt, sources=sources, since_round=since_round, min_agreement=min_agreement)
    if part is not None:
        return export_part(app.store, out, part, metadata=metadata, **filters)
    return export_pairs(app.store, out, include_ties=include_ties, metadata=metadata, progress=progress, to=to,
                        **filters)


def export_chunks(app: App, fmt: str = "trl", part: str = "pairs", metadata: bool = False,
                  sources: tuple[str, ...] = ("human", "import")):
    """One file of an export (as `export_data` with `part`) as a generator of byte chunks, produced as they are
    read: what a streamed download sends, in flat memory."""
    from data.export import iter_part

    return iter_part(app.store, part, metadata=metadata, fmt=fmt, sources=sources)


def stats(app: App) -> dict[str, Any]:
    data = app.store.stats()
    from app.judging import judge_agreement

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
