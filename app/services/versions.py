"""Model versions, as an operator manages them: the lineage, and deploying or rolling back a version in place
(with a preview of what the deploy would retire, to confirm first)."""

from dataclasses import dataclass
from typing import Any

from app.services.errors import Conflict, NotFound, refusals
from app.services.workdir import App


@dataclass(frozen=True)
class DeployPreview:
    """What deploying `name` would do now: the version it replaces (None when none is deployed), whether that is
    a roll back to an older version, and how many open comparisons it would retire (0 when on_deploy = keep)."""
    name: str
    deployed: str | None
    is_rollback: bool
    would_retire: int
    retires: bool  # generation.on_deploy = retire


def list_versions(app: App) -> list[dict[str, Any]]:
    by_id = {v.id: v.name for v in app.store.versions.all()}
    return [{"name": v.name, "parent": by_id.get(v.parent_id), "round": v.round, "status": v.status,
             "deployed": v.deployed, "kind": v.kind, "path": v.path, "created_at": v.created_at.isoformat(),
             "metrics": v.metrics} for v in app.store.versions.all()]


@refusals()
def deploy_preview(app: App, name: str) -> DeployPreview:
    """What `deploy(app, name)` would do, to confirm first; refuses what the deploy would refuse, and a version
    that is deployed already."""
    target, current = app.store.versions.get(name), app.store.versions.deployed()
    if target is None:
        raise NotFound(f"There is no model version named {name!r}.")
    if target.status != "ready":
        raise Conflict(f"Model version {name} is {target.status}; only a ready version can be deployed.")
    if current is not None and current.id == target.id:
        raise Conflict(f"{name} is deployed already; nothing to do.")
    retires = app.settings.generation.on_deploy == "retire"
    would_retire = app.store.versions.count_retired_by_deploying(name) if retires else 0
    return DeployPreview(name, current.name if current else None, current is not None and target.id < current.id,
                         would_retire, retires)


@refusals()
def deploy(app: App, name: str) -> int:
    """Deploy (or roll back to) version `name`; returns how many open comparisons were retired."""
    return app.store.versions.deploy(name, retire_open=app.settings.generation.on_deploy == "retire")
