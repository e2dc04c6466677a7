"""The workdir: its one layout (config file, database file, model registry, import reports) and the `App` every
process opens on it (workdir, settings, store); creating a workdir, building the tiny model, and its schema."""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.services.errors import Unavailable, refusals
from app.services.memory import AccountMemory
from app.settings import CONFIG_NAME, Settings, load_settings, render_config
from data.store import Store

# The layout, with CONFIG_NAME (prefloop.toml, named where the settings are read). Round logs go to logs/, which
# training.scheduler.log_path owns.
DB_NAME = "prefloop.db"  # the SQLite database, unless settings.database_url names another
MODELS_DIR = "models"  # the model registry: models/<version>/
REPORTS_DIR = "import-reports"  # what `import --skip-invalid` left out, by file


class WorkdirError(Unavailable):
    """The workdir is missing or not a prefloop workdir, or its database cannot be used."""


@dataclass
class App:
    """One workdir's settings and store, opened once per process; every path in the workdir comes from here."""
    workdir: Path
    settings: Settings
    store: Store
    accounts_seen: AccountMemory = field(default_factory=AccountMemory)  # this process's, between requests

    def __post_init__(self):
        # Which labels resolve pairs depends on who the gold-accuracy settings hold back (data.pairs reads it there).
        from app.services.quality import derivation, gold_policy

        self.store.gold_policy = gold_policy(self.settings)
        self.store.derivation = derivation(self.settings)

    @property
    def config_path(self) -> Path:
        return self.workdir / CONFIG_NAME

    @property
    def models_dir(self) -> Path:
        return self.workdir / MODELS_DIR

    @property
    def reports_dir(self) -> Path:
        return self.workdir / REPORTS_DIR

    @property
    def database_url(self) -> str:
        return database_url(self.workdir, self.settings)

    def close(self) -> None:
        self.store.close()


def database_url(workdir: Path, settings: Settings) -> str:
    return settings.database_url or f"sqlite:///{(Path(workdir) / DB_NAME).resolve()}"


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

    from data.schema import SchemaOutdated

    try:
        return Store(url)
    except OperationalError as error:
        cause = str(error.orig or error).strip().splitlines()[0]
        where = make_url(url).render_as_string(hide_password=True)
        raise WorkdirError(f"cannot reach the database {where}: {cause}") from None
    except SchemaOutdated as error:
        raise WorkdirError(str(error)) from error


def _workdir_settings(workdir: Path, overrides: dict[str, str] | None) -> Settings:
    if not (workdir / CONFIG_NAME).exists():
        raise WorkdirError(f"no prefloop workdir at {workdir} (no {CONFIG_NAME}): run `prefloop init` first, "
                           "or point --workdir / PREFLOOP_WORKDIR at an existing one")
    with refusals():  # a bad value in the file, the environment or --set
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
    from data.schema import SchemaOutdated

    engine = make_engine(database_url(workdir, _workdir_settings(Path(workdir), overrides)))
    try:
        with refusals(unavailable=(SchemaOutdated,)):
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
    if app.store.versions.get("v0") is None:
        config = _base_config(app.settings.model.base)
        app.store.versions.add("v0", _materialise_base(app, progress), config=config)
        app.store.versions.deploy("v0")
    return app, created


def _base_config(base: str) -> dict[str, Any]:
    """What v0 records about its base model: a Hub id's resolved commit, so the lineage says exactly what ran."""
    from generation.backend import ModelLoadError
    from generation.hub import hub_revision, looks_like_hub_id

    if base == "tiny" or not looks_like_hub_id(base):
        return {"base": base}
    with refusals(unavailable=(ModelLoadError,)):
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
    """The offline tiny chat model in `out_dir` (`prefloop tiny-model`)."""
    from generation.tiny_model import build_tiny_model as build

    return build(Path(out_dir), seed=seed, progress=progress)

