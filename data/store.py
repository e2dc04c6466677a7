"""The store: prefloop's API over the database. Everyone outside `data/` reads and writes through it."""

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select

from data.db import create_schema, make_engine, read_session, write_session
from data.models import Comparison, Label, ModelVersion, Prompt, Response, TrainingRun, User, utcnow


def normalize_messages(messages: str | Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """A plain string becomes one user message; messages keep only role and content."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def prompt_hash(messages: Sequence[dict[str, str]]) -> str:
    canonical = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Sample:
    """One sampled response, as a generator backend returns it."""
    text: str
    finish_reason: str  # stop|length
    token_count: int


@dataclass
class AddedCounts:
    added: int = 0
    duplicates: int = 0
    ids: list[int] = field(default_factory=list)


class Store:
    """Owns the engine; every method runs one short session."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        create_schema(self.engine)

    def read(self):
        return read_session(self.engine)

    def write(self):
        return write_session(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- prompts -------------------------------------------------------------------------------------------
    def add_prompts(self, prompts: Iterable[str | Sequence[dict]], source: str = "") -> AddedCounts:
        """Add prompts in one transaction; a prompt whose content hash is already stored is counted, not added."""
        counts = AddedCounts()
        with self.write() as s:
            seen = set()
            for raw in prompts:
                messages = normalize_messages(raw)
                h = prompt_hash(messages)
                if h in seen or s.exec(select(Prompt.id).where(Prompt.content_hash == h)).first():
                    counts.duplicates += 1
                    continue
                seen.add(h)
                p = Prompt(messages=messages, source=source, content_hash=h)
                s.add(p)
                s.flush()
                counts.added += 1
                counts.ids.append(p.id)
        return counts

    def get_prompt(self, prompt_id: int) -> Prompt | None:
        with self.read() as s:
            return s.get(Prompt, prompt_id)

    def skip_prompt(self, prompt_id: int, reason: str) -> None:
        with self.write() as s:
            s.exec(update(Prompt).where(Prompt.id == prompt_id).values(skip_reason=reason))

    def prompts_to_sample(self, version_id: int, limit: int) -> list[Prompt]:
        """Prompts not skipped that have no generated response from `version_id` yet, oldest first."""
        sampled = select(Response.prompt_id).where(
            Response.model_version_id == version_id, Response.source == "generated")
        with self.read() as s:
            q = (select(Prompt).where(col(Prompt.skip_reason).is_(None), col(Prompt.id).not_in(sampled))
                 .order_by(Prompt.id).limit(limit))
            return list(s.exec(q).all())

    # -- generated samples and comparisons ----------------------------------------------------------------
    def add_samples(self, prompt_id: int, version_id: int, samples: Sequence[Sample],
                    pairs: Sequence[tuple[int, int]], params: dict[str, Any], overlap: int) -> list[int]:
        """Store every sample with its version and params, and one open comparison per (i, j) pair of samples."""
        with self.write() as s:
            rows = [Response(prompt_id=prompt_id, model_version_id=version_id, text=x.text,
                             finish_reason=x.finish_reason, token_count=x.token_count,
                             sampling_params=params) for x in samples]
            s.add_all(rows)
            s.flush()
            comps = [Comparison(prompt_id=prompt_id, response_a_id=rows[i].id, response_b_id=rows[j].id,
                                model_version_id=version_id, overlap=overlap) for i, j in pairs]
            s.add_all(comps)
            s.flush()
            return [c.id for c in comps]

    def open_comparison_count(self, version_id: int | None = None) -> int:
        q = select(func.count()).select_from(Comparison).where(Comparison.status == "open")
        if version_id is not None:
            q = q.where(Comparison.model_version_id == version_id)
        with self.read() as s:
            return s.exec(q).one()

    # -- model versions -------------------------------------------------------------------------------------
    def add_version(self, name: str, path: str, parent_id: int | None = None, round: int = 0,
                    status: str = "ready", kind: str = "full", config: dict | None = None,
                    metrics: dict | None = None) -> ModelVersion:
        with self.write() as s:
            v = ModelVersion(name=name, path=path, parent_id=parent_id, round=round, status=status,
                             kind=kind, config=config or {}, metrics=metrics or {})
            s.add(v)
            s.flush()
            return v

    def get_version(self, name: str) -> ModelVersion | None:
        with self.read() as s:
            return s.exec(select(ModelVersion).where(ModelVersion.name == name)).first()

    def versions(self) -> list[ModelVersion]:
        with self.read() as s:
            return list(s.exec(select(ModelVersion).order_by(ModelVersion.id)).all())

    def deployed_version(self) -> ModelVersion | None:
        with self.read() as s:
            return s.exec(select(ModelVersion).where(ModelVersion.deployed == True)).first()  # noqa: E712

    def deploy(self, name: str, retire_open: bool = True) -> int:
        """Mark `name` deployed (one transaction); retire unlabelled open comparisons of other versions.

        Returns how many comparisons were retired."""
        with self.write() as s:
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
            labelled = select(Label.comparison_id)
            result = s.exec(update(Comparison).where(
                Comparison.status == "open", Comparison.source == "generated",
                Comparison.model_version_id != v.id, col(Comparison.id).not_in(labelled),
            ).values(status="retired"))
            return result.rowcount

    # -- users ----------------------------------------------------------------------------------------------
    def add_user(self, name: str, role: str, password_hash: str) -> User:
        with self.write() as s:
            if s.exec(select(User).where(User.name == name)).first():
                raise ValueError(f"a user named {name!r} already exists")
            u = User(name=name, role=role, password_hash=password_hash)
            s.add(u)
            s.flush()
            return u

    def get_user(self, name: str) -> User | None:
        with self.read() as s:
            return s.exec(select(User).where(User.name == name)).first()

    def users(self) -> list[User]:
        with self.read() as s:
            return list(s.exec(select(User).order_by(User.name)).all())

    # -- stats ----------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts of everything an operator watches, as plain data."""
        with self.read() as s:
            def grouped(column, *where):
                q = select(column, func.count()).where(*where).group_by(column) if where else \
                    select(column, func.count()).group_by(column)
                return {k: n for k, n in s.exec(q).all()}

            deployed = s.exec(select(ModelVersion.name).where(ModelVersion.deployed == True)).first()  # noqa: E712
            return {
                "prompts": s.exec(select(func.count()).select_from(Prompt)).one(),
                "prompts_skipped": s.exec(select(func.count()).select_from(Prompt)
                                          .where(col(Prompt.skip_reason).is_not(None))).one(),
                "responses": s.exec(select(func.count()).select_from(Response)).one(),
                "comparisons": grouped(Comparison.status),
                "labels_by_source": grouped(Label.source),
                "labels_by_annotator": grouped(Label.annotator),
                "labels_by_choice": grouped(Label.choice),
                "model_versions": grouped(ModelVersion.status),
                "deployed_version": deployed,
                "training_runs": grouped(TrainingRun.status),
                "users": grouped(User.role),
            }


def lease_deadline(seconds: float):
    return utcnow() + timedelta(seconds=seconds)
