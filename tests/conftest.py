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
