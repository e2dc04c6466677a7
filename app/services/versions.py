"""Model versions, as an operator manages them: the lineage, and deploying or rolling back a version in place."""

from typing import Any

from app.services.errors import refusals
from app.services.workdir import App


def list_versions(app: App) -> list[dict[str, Any]]:
    by_id = {v.id: v.name for v in app.store.versions.all()}
    return [{"name": v.name, "parent": by_id.get(v.parent_id), "round": v.round, "status": v.status,
             "deployed": v.deployed, "kind": v.kind, "path": v.path, "created_at": v.created_at.isoformat(),
             "metrics": v.metrics} for v in app.store.versions.all()]


@refusals()
def deploy(app: App, name: str) -> int:
    """Deploy (or roll back to) version `name`; returns how many open comparisons were retired."""
    return app.store.versions.deploy(name, retire_open=app.settings.generation.on_deploy == "retire")
