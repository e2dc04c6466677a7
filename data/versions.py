"""Model versions: registering them, finding them, and which one is deployed (deploying retires the open
comparisons other versions left unlabelled)."""

from sqlalchemy import func, update
from sqlmodel import col, select

from data.models import Comparison, Label, ModelVersion, utcnow


class Versions:
    """store.versions: every method runs one short session of the store's."""

    def __init__(self, store):
        self.store = store

    def add(self, name: str, path: str, parent_id: int | None = None, round: int = 0,
                    status: str = "ready", kind: str = "full", config: dict | None = None,
                    metrics: dict | None = None) -> ModelVersion:
        with self.store.write() as s:
            v = ModelVersion(name=name, path=path, parent_id=parent_id, round=round, status=status,
                             kind=kind, config=config or {}, metrics=metrics or {})
            s.add(v)
            s.flush()
            return v

    def get(self, name: str) -> ModelVersion | None:
        with self.store.read() as s:
            return s.exec(select(ModelVersion).where(ModelVersion.name == name)).first()

    def all(self) -> list[ModelVersion]:
        with self.store.read() as s:
            return list(s.exec(select(ModelVersion).order_by(ModelVersion.id)).all())

    def deployed(self) -> ModelVersion | None:
        with self.store.read() as s:
            return s.exec(select(ModelVersion).where(ModelVersion.deployed == True)).first()  # noqa: E712

    def deploy(self, name: str, retire_open: bool = True) -> int:
        """Mark `name` deployed (one transaction); retire unlabelled open comparisons of other versions.

        Returns how many comparisons were retired."""
        with self.store.write() as s:
            v = s.exec(select(ModelVersion).where(ModelVersion.name == name)).first()
            if v is None:
                raise LookupError(f"no model version named {name!r}")
            if v.status != "ready":
                raise ValueError(f"model version {name} is {v.status}, only a ready version can be deployed")
            # Clear first, then set: the one-deployed unique index is checked per statement.
            s.exec(update(ModelVersion).where(ModelVersion.deployed == True).values(deployed=False))  # noqa: E712
            s.exec(update(ModelVersion).where(ModelVersion.id == v.id).values(deployed=True, deployed_at=utcnow()))
            if not retire_open:
                return 0
            result = s.exec(update(Comparison).where(*_retired_by_deploying(v.id)).values(status="retired"))
            return result.rowcount

    def count_retired_by_deploying(self, name: str) -> int:
        """How many comparisons deploying `name` now would retire (when generation.on_deploy = retire)."""
        with self.store.read() as s:
            v = s.exec(select(ModelVersion).where(ModelVersion.name == name)).first()
            if v is None:
                raise LookupError(f"no model version named {name!r}")
            return s.exec(select(func.count()).select_from(Comparison).where(*_retired_by_deploying(v.id))).one()


def _retired_by_deploying(version_id: int) -> tuple:
    """The one rule of what a deploy retires: open generated comparisons of other versions with no label yet (one
    already labelled stays open, so the labels it has are not wasted)."""
    return (Comparison.status == "open", Comparison.source == "generated", Comparison.model_version_id != version_id,
            col(Comparison.id).not_in(select(Label.comparison_id)))
