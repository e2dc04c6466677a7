"""The generation modules' dependencies: the base knows no backend, and neither backend imports the other."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

GENERATION = Path(__file__).resolve().parents[1] / "generation"
BACKENDS = {"generation.hf_backend", "generation.vllm_backend"}


def imported_modules(module: str) -> set[str]:
    """Every module a generation module's source imports, at the top or inside a function."""
    tree = ast.parse((GENERATION / f"{module.rpartition('.')[2]}.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_loaded_by(module: str) -> set[str]:
    """The generation.* modules a fresh interpreter holds after importing `module` alone."""
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('generation.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=GENERATION.parent)
    return set(out.stdout.split())


def test_importing_the_base_loads_no_backend():
    loaded = modules_loaded_by("generation.backend")
    assert "generation.backend" in loaded and not loaded & BACKENDS
    assert not imported_modules("generation.backend") & BACKENDS


@pytest.mark.parametrize(("module", "other"), [("generation.vllm_backend", "generation.hf_backend"),
                                               ("generation.hf_backend", "generation.vllm_backend")])
def test_neither_backend_imports_the_other(module, other):
    assert other not in modules_loaded_by(module)  # vllm itself is imported only inside functions
    assert other not in imported_modules(module)


def test_the_factory_imports_a_backend_only_when_it_is_chosen():
    assert not modules_loaded_by("generation.backends") & BACKENDS
