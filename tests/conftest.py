"""Shared fixtures: a temp workdir, a store on a real SQLite file, the shared datasets folder."""

import os
from pathlib import Path

import pytest

from data.store import Store

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture
def store(workdir: Path):
    s = Store(f"sqlite:///{workdir / 'prefloop.db'}")
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
def web_app(workdir, tmp_path):
    """An initialised workdir whose v0 is a placeholder path: enough for labelling, no model is ever loaded."""
    from app import service

    app, _ = service.init_workdir(workdir, base=str(tmp_path / "base-model"))
    yield app
    app.close()


@pytest.fixture(scope="session")
def password_hash() -> str:
    """One argon2 hash of TEST_PASSWORD, computed once: tests add many users without hashing each time."""
    from app.auth import hash_password

    return hash_password(TEST_PASSWORD)


TEST_PASSWORD = "correct horse battery"


def seed_comparisons(store, n: int, overlap: int = 1, texts=None) -> list[int]:
    """n open comparisons, each on its own prompt; `texts(i)` gives (prompt, response A, response B)."""
    import uuid

    from data.store import Sample

    version = store.get_version("v0") or store.add_version("v0", "/models/v0")
    tag = uuid.uuid4().hex[:8]
    texts = texts or (lambda i: (f"prompt {tag} {i}", f"response A{i}", f"response B{i}"))
    ids = []
    for i in range(n):
        prompt, a, b = texts(i)
        prompt_id = store.add_prompts([prompt]).ids[0]
        ids += store.add_samples(prompt_id, version.id, [Sample(a, "stop", 2), Sample(b, "stop", 2)], [(0, 1)], {},
                                 overlap)
    return ids


@pytest.fixture
def seed():
    return seed_comparisons


# -- training rounds: labelled pairs without sampling ------------------------------------------------------------------
def add_labelled_pairs(store, version_id: int | None, texts: list[tuple[str, str]], choice: str = "a",
                       source: str = "human", annotator: str = "ann", prompt_prefix: str = "q") -> list[int]:
    """One prompt, two responses and one resolved comparison per (a, b) text pair, labelled `choice` by
    `annotator` (source human or judge). Returns the comparison ids."""
    from data.models import Label
    from data.store import Sample

    ids = []
    for i, (a, b) in enumerate(texts):
        prompt = [{"role": "system", "content": "You are a helpful assistant that explains Python."},
                  {"role": "user", "content": f"{prompt_prefix} {i}: what does module {i} do?"}]
        pid = store.add_prompts([prompt], source="test").ids[0]
        samples = [Sample(a, "stop", len(a.split()) + 1), Sample(b, "stop", len(b.split()) + 1)]
        cid = store.add_samples(pid, version_id, samples, [(0, 1)], {}, overlap=1)[0]
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
    from app import service

    apps = []

    def make(name: str = "w", **overrides):
        over = {"training.min_pairs": "4", "training.max_steps": "2", "training.batch_size": "4",
                "training.learning_rate": "1e-4", "training.probe_prompts": "2", "training.eval_fraction": "0.2",
                "generation.max_new_tokens": "16", "model.device": "cpu"}
        over.update({k.replace("__", "."): str(v) for k, v in overrides.items()})
        app, _ = service.init_workdir(tmp_path / name, base=str(tiny_model_dir), overrides=over)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()
