"""The model registry on disk: `<workdir>/models/vN/`, written to `models/.vN.tmp/` and renamed into place only
when complete. A `.tmp` folder is never a version: it is what a killed round left, and the next round removes it."""

import os
import re
import shutil
from pathlib import Path

VERSION_NAME = re.compile(r"^v(\d+)$")


def next_version_name(store, models_dir: Path) -> str:
    """v(N+1) for the highest N among registered versions and folders (a folder without a row still counts)."""
    numbers = [0]
    names = [v.name for v in store.versions.all()]
    if models_dir.is_dir():
        names += [p.name for p in models_dir.iterdir()]
        names += [p.name[1:-4] for p in models_dir.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for name in names:
        m = VERSION_NAME.match(name)
        if m:
            numbers.append(int(m.group(1)))
    return f"v{max(numbers) + 1}"


def temp_dir(models_dir: Path, name: str) -> Path:
    return models_dir / f".{name}.tmp"


def clean_temp_dirs(models_dir: Path) -> list[str]:
    """Remove what killed rounds left behind; call only while no round runs (under the round lock)."""
    removed = []
    if models_dir.is_dir():
        for p in models_dir.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


def promote(tmp: Path, final: Path) -> Path:
    """Rename the complete temp folder into place (atomic on one filesystem)."""
    if final.exists():
        raise FileExistsError(f"model folder {final} already exists")
    os.replace(tmp, final)
    return final


class Staging:
    """The temp folder a round writes its new version into: emptied when the round names it, removed on the way
    out unless promoted, so a failed or cancelled round leaves no half-written folder behind."""

    def __init__(self, models_dir: Path):
        self.models_dir, self.path = models_dir, None

    def folder(self, name: str) -> Path:
        self.path = temp_dir(self.models_dir, name)
        shutil.rmtree(self.path, ignore_errors=True)
        return self.path

    def promote(self, name: str) -> Path:
        final = promote(self.path, self.models_dir / name)
        self.path = None
        return final

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
