"""Shared fixtures: a temp workdir, a store on a real SQLite file, the shared datasets folder."""

import contextlib
import os
import uuid
from pathlib import Path

import pytest

from app.services.workdir import DB_NAME
from data.store import Store

pytest_plugins = ["browsing"]  # the browser harness: browser, site, session

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def _stop_round_workers(tmp_path_factory):
    """A round a test started leaves a warm round worker waiting (training.worker_idle_s): stopped when it ends."""
    yield
    stop_round_workers(str(tmp_path_factory.getbasetemp()))


@pytest.fixture
def round_launches(monkeypatch) -> list[int]:
    """Rounds are queued but never handed to a process (the round's process is not under test): the ids queued."""
    from types import SimpleNamespace

    from training import scheduler

    launched: list[int] = []
    monkeypatch.setattr(scheduler, "hand_over", lambda store, run_id, **kwargs: launched.append(run_id))
    monkeypatch.setattr(scheduler, "launch",
                        lambda workdir, run_id, *a, **k: launched.append(run_id) or SimpleNamespace(pid=None))
    return launched


def stop_round_workers(under: str, wait_s: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL, the round workers whose registry lies under the folder `under`; their pids. Reads
    /proc directly: a few ms, where asking psutil for every command line takes several times that."""
    import signal
    import time

    from training.scheduler import pid_alive

    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "training.run_round" in argv and "--worker" in argv and any(a.startswith(under) for a in argv):
            pids.append(int(entry))
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry), signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return pids


# -- the database backends ---------------------------------------------------------------------------------------
# Tests of these modules run on SQLite and on PostgreSQL (the server in PREFLOOP_TEST_DATABASE_URL, which .ci/run
# starts); every other module runs on SQLite. Any PostgreSQL database the URL names will do: each test gets a
# schema of its own in it and drops it afterwards.
BOTH_BACKENDS = {"test_store", "test_queue", "test_pairs", "test_export", "test_importing", "test_agreement",
                 "test_curation", "test_server", "test_round", "test_round_process", "test_round_backoff",
                 "test_roundtrip", "test_judge_worker", "test_worker", "test_labelling", "test_api",
                 "test_console_annotators", "test_console_models", "test_console_overview",
                 "test_console_judges", "test_adjudication", "test_quality", "test_derived", "test_continuations"}
TEST_PG_ENV = "PREFLOOP_TEST_DATABASE_URL"


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        module = metafunc.module.__name__.rpartition(".")[2]
        both = module in BOTH_BACKENDS and not metafunc.definition.get_closest_marker("sqlite_only")
        params = ["sqlite", "postgresql"] if both else ["sqlite"]
        metafunc.parametrize("backend", params, indirect=True)


@pytest.fixture
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL URL tests may make schemas in; skipped when unset, except under CI where it must be set."""
    url = os.environ.get(TEST_PG_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{TEST_PG_ENV} is not set under CI (.ci/run starts a PostgreSQL server)")
        pytest.skip(f"PostgreSQL tests need {TEST_PG_ENV} (e.g. from `.ci/pg start DIR PORT`)")
    return url


@pytest.fixture
def pg_schema(request):
    """A factory of PostgreSQL URLs, each on a fresh schema (search_path), dropped after the test."""
    from sqlalchemy import create_engine

    base = request.getfixturevalue("pg_server")
    admin = create_engine(base)
    made = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
        made.append(name)
        return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{name}"

    yield make
    with admin.begin() as conn:
        conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")  # a connection left open must not hang the suite
        for name in made:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    admin.dispose()


@pytest.fixture
def db_url(backend: str, workdir: Path, request) -> str | None:
    """The test's database: the workdir's SQLite file, or a fresh PostgreSQL schema."""
    if backend == "sqlite":
        return f"sqlite:///{workdir / DB_NAME}"
    return request.getfixturevalue("pg_schema")()


@pytest.fixture
def more_db_urls(backend: str, tmp_path: Path, request):
    """A factory of more empty databases on the test's backend (a fresh store to import an export into, say)."""
    if backend == "sqlite":
        return lambda: f"sqlite:///{tmp_path / f'more-{uuid.uuid4().hex[:8]}.db'}"
    return request.getfixturevalue("pg_schema")


@pytest.fixture
def store(db_url: str):
    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """../shared/datasets; skipped when absent, except under CI where it must be there."""
    if not SHARED_DATASETS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared datasets missing at {SHARED_DATASETS} under CI")
        pytest.skip("../shared/datasets is not beside this checkout")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The offline tiny chat model, built once into the cache (about a minute) and reused after."""
    from generation.tiny_model import cached_tiny_model

    return cached_tiny_model()


@pytest.fixture(scope="session")
def v1_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Another model version: the tiny model with deterministic noise on every weight, saved with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dst = tmp_path_factory.mktemp("perturbed-v1")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05 * p.std())
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(dst)
    return dst


# -- the web server and UI ----------------------------------------------------------------------------------------
@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where browser tests save screenshots to look at: $PREFLOOP_SCREENSHOTS when set, else the test's tmp dir."""
    folder = Path(os.environ.get("PREFLOOP_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def initialised(workdir, tmp_path):
    """A workdir that `prefloop init` made over a placeholder base: for tests of CLI verbs that load no model."""
    from test_cli import run

    base = tmp_path / "base-model"
    base.mkdir()
    r = run("init", "--base", base, workdir=workdir)
    assert r.returncode == 0, r.stderr
    return workdir


@pytest.fixture
def web_app(workdir, tmp_path, db_url):
    """An initialised workdir whose v0 is a placeholder path: enough for labelling, no model is ever loaded."""
    from app.services.workdir import init_workdir

    url = None if db_url.startswith("sqlite") else db_url  # SQLite: the workdir's own file, as by default
    app, _ = init_workdir(workdir, base=str(tmp_path / "base-model"), database_url=url)
    yield app
    app.close()


@pytest.fixture(scope="session")
def password_hash() -> str:
    """One argon2 hash of TEST_PASSWORD, computed once: tests add many users without hashing each time."""
    from app.services.accounts import hash_password

    return hash_password(TEST_PASSWORD)


TEST_PASSWORD = "correct horse battery"


def seed_comparisons(store, n: int, overlap: int = 1, texts=None) -> list[int]:
    """n open comparisons, each on its own prompt; `texts(i)` gives (prompt, response A, response B)."""
    import uuid

    from generation.backend import Sample

    version = store.versions.get("v0") or store.versions.add("v0", "/models/v0")
    tag = uuid.uuid4().hex[:8]
    texts = texts or (lambda i: (f"prompt {tag} {i}", f"response A{i}", f"response B{i}"))
    ids = []
    for i in range(n):
        prompt, a, b = texts(i)
        prompt_id = store.prompts.add([prompt]).ids[0]
        samples = [Sample(a, "stop", 2), Sample(b, "stop", 2)]
        ids += store.prompts.add_samples(prompt_id, version.id, samples, [(0, 1)], {}, overlap)
    return ids


def make_kind_comparison(store: Store, kind: str, k: int | None = None, overlap: int = 1,
                         texts: list[str] | None = None, prompt: str | None = None) -> int:
    """One open comparison of `kind` (ranking, rating or thumbs) over fresh responses by position, `texts` or k of
    them ('R0'.., a thumbs one: k=1), to a prompt of its own (`prompt`, or a made-up one); its id."""
    from data.models import Comparison, ComparisonResponse, Response

    texts = texts or [f"R{i}" for i in range(k)]
    prompt_id = store.prompts.add([prompt or f"{kind} prompt {uuid.uuid4().hex[:8]}"]).ids[0]
    with store.write() as s:
        rows = [Response(prompt_id=prompt_id, text=text) for text in texts]
        s.add_all(rows)
        s.flush()
        c = Comparison(prompt_id=prompt_id, response_a_id=rows[0].id, response_b_id=rows[min(1, len(rows) - 1)].id,
                       overlap=overlap, kind=kind)
        s.add(c)
        s.flush()
        s.add_all(ComparisonResponse(comparison_id=c.id, position=i, response_id=r.id) for i, r in enumerate(rows))
        return c.id


@pytest.fixture
def seed():
    return seed_comparisons


# -- training rounds: labelled pairs without sampling ------------------------------------------------------------------
def add_labelled_pairs(store, version_id: int | None, texts: list[tuple[str, str]], choice: str = "a",
                       source: str = "human", annotator: str = "ann", prompt_prefix: str = "q") -> list[int]:
    """One prompt, two responses and one resolved comparison per (a, b) text pair, labelled `choice` by
    `annotator` (source human or judge). Returns the comparison ids."""
    from data.models import Label
    from generation.backend import Sample

    ids = []
    for i, (a, b) in enumerate(texts):
        prompt = [{"role": "system", "content": "You are a helpful assistant that explains Python."},
                  {"role": "user", "content": f"{prompt_prefix} {i}: what does module {i} do?"}]
        pid = store.prompts.add([prompt], source="test").ids[0]
        samples = [Sample(a, "stop", len(a.split()) + 1), Sample(b, "stop", len(b.split()) + 1)]
        cid = store.prompts.add_samples(pid, version_id, samples, [(0, 1)], {}, overlap=1)[0]
        with store.write() as s:
            s.add(Label(comparison_id=cid, annotator=annotator, source=source, choice=choice))
        ids.append(cid)
    return ids


def short_long_pairs(n: int, offset: int = 0) -> list[tuple[str, str]]:
    return [(f"The m{i + offset} module helps.",
             f"The m{i + offset} module does many things, " * 3 + "and more.") for i in range(n)]


@pytest.fixture
def tiny_app(tmp_path: Path, tiny_model_dir):
    """A factory of real workdirs on the tiny model (init_workdir), with setting overrides; closed after."""
    from app.services.workdir import init_workdir

    apps = []

    def make(name: str = "w", **overrides):
        over = {"training.min_pairs": "4", "training.max_steps": "2", "training.batch_size": "4",
                "training.learning_rate": "1e-4", "training.probe_prompts": "2", "training.eval_fraction": "0.2",
                "generation.max_new_tokens": "16", "model.device": "cpu"}
        over.update({k.replace("__", "."): str(v) for k, v in overrides.items()})
        app, _ = init_workdir(tmp_path / name, base=str(tiny_model_dir), overrides=over)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()
