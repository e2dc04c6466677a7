"""The store: prefloop's API over the database. Everyone outside `data/` reads and writes through it."""

import hashlib
import json
import threading
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, text, update
from sqlmodel import col, select

from data.db import make_engine, read_session, write_connection, write_session
from data.models import ApiToken, Comparison, Label, ModelVersion, Prompt, Response, TrainingRun, User, utcnow
from data.schema import ensure_current


def normalize_messages(messages: str | Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """A plain string becomes one user message; messages keep only role and content."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def prompt_hash(messages: Sequence[dict[str, str]], tools: list[dict[str, Any]] | None = None,
                parallel_tool_calls: bool | None = None) -> str:
    """The content hash of a prompt: its messages, plus its tool definitions when it has any.

    Tools enter the hash only when present, so every prompt without tools keeps the hash it always had; the same
    messages offered with other tools are another prompt (a model may answer them differently)."""
    canonical: Any = [[m["role"], m["content"]] for m in messages]
    if tools:
        canonical = {"messages": canonical, "tools": tools, "parallel_tool_calls": parallel_tool_calls}
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class RoundBusy(ValueError):
    """Another training round is queued or running."""


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
        self._write_lock = threading.RLock()  # issue #4: see _one_writer
        ensure_current(self.engine)  # a new database is created; an old one is refused (`prefloop db upgrade`)

    def read(self):
        return read_session(self.engine)

    def write(self):
        return _one_writer(self._write_lock, write_session(self.engine))

    def write_conn(self):
        """Like write(), but a plain Connection (no ORM Session) in one write transaction: for hot paths in SQL."""
        return _one_writer(self._write_lock, write_connection(self.engine))

    def close(self) -> None:
        self.engine.dispose()

    # -- prompts -------------------------------------------------------------------------------------------
    def add_prompts(self, prompts: Iterable[str | Sequence[dict]], source: str = "") -> AddedCounts:
        """Add prompts in one transaction; a prompt whose content hash is already stored is counted, not added.
        A prompt with no text is refused (ValueError) and nothing is added: nothing could sample or train on it."""
        counts = AddedCounts()
        with self.write() as s:
            seen = set()
            for raw in prompts:
                messages = normalize_messages(raw)
                if not any(m["content"].strip() for m in messages):
                    raise ValueError(f"prompt {len(seen) + counts.duplicates + 1} has no text: nothing can be "
                                     "sampled from it or trained on it")
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
        """Prompts not skipped nor discarded that have no generated response from `version_id` yet, oldest first."""
        sampled = select(Response.prompt_id).where(
            Response.model_version_id == version_id, Response.source == "generated")
        with self.read() as s:
            q = (select(Prompt).where(col(Prompt.skip_reason).is_(None), col(Prompt.discarded_at).is_(None),
                                      col(Prompt.id).not_in(sampled))
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
        """Open comparisons an annotator can get (not discarded): what the generator keeps topped up."""
        q = select(func.count()).select_from(Comparison).where(Comparison.status == "open", live_comparison())
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

    # -- API tokens (issue #4) ----------------------------------------------------------------------------
    def add_api_token(self, token_hash: str, user_name: str, expires_at) -> None:
        with self.write() as s:
            s.add(ApiToken(token_hash=token_hash, user_name=user_name, expires_at=expires_at))

    def user_for_token(self, token_hash: str) -> User | None:
        """The user holding the unexpired token with this hash, or None."""
        with self.read() as s:
            q = (select(User).join(ApiToken, col(ApiToken.user_name) == User.name)
                 .where(ApiToken.token_hash == token_hash, col(ApiToken.expires_at) > utcnow()))
            return s.exec(q).first()

    def label_times(self, since=None) -> list[tuple[Any, str, str]]:
        """(created_at, annotator, source) of every label (since `since`), oldest first: for plots."""
        with self.read() as s:
            q = select(Label.created_at, Label.annotator, Label.source).order_by(Label.created_at)
            if since is not None:
                q = q.where(col(Label.created_at) >= since)
            return list(s.exec(q).all())

    # -- training runs (DPO rounds) ------------------------------------------------------------------------------
    ACTIVE_RUN_STATUSES = ("queued", "running", "cancelling")

    def create_training_run(self, parent_version_id: int | None, comparison_ids: Sequence[int],
                            config: dict[str, Any], is_stale=None) -> TrainingRun:
        """Queue a round: the lock that keeps at most one round at a time, across processes.

        In one write transaction (BEGIN IMMEDIATE on SQLite): active runs for which `is_stale(run)` is true
        are marked failed; if an active run is left, RoundBusy is raised; else a queued run is created."""
        with self.write() as s:
            active = s.exec(select(TrainingRun).where(col(TrainingRun.status).in_(self.ACTIVE_RUN_STATUSES))).all()
            for run in active:
                if is_stale is not None and is_stale(run):
                    self._fail_stale(s, run)
                else:
                    raise RoundBusy(f"training run {run.id} is {run.status}; one round at a time "
                                    f"(`prefloop cancel {run.id}` stops it)")
            now = utcnow()
            run = TrainingRun(parent_version_id=parent_version_id, comparison_ids=list(comparison_ids),
                              pairs_used=len(comparison_ids), config=config, status="queued", heartbeat_at=now)
            s.add(run)
            s.flush()
            return run

    @staticmethod
    def _fail_stale(s, run: TrainingRun) -> None:
        run.status = "failed"
        run.error = (run.error or "") + "the training process died or stopped reporting (stale heartbeat)"
        run.finished_at = utcnow()
        s.add(run)

    def recover_stale_runs(self, is_stale) -> list[int]:
        """Mark failed every active run for which `is_stale(run)` is true; returns their ids."""
        with self.write() as s:
            active = s.exec(select(TrainingRun).where(col(TrainingRun.status).in_(self.ACTIVE_RUN_STATUSES))).all()
            stale = [run for run in active if is_stale(run)]
            for run in stale:
                self._fail_stale(s, run)
            return [run.id for run in stale]

    def get_training_run(self, run_id: int) -> TrainingRun | None:
        with self.read() as s:
            return s.get(TrainingRun, run_id)

    def training_runs(self) -> list[TrainingRun]:
        with self.read() as s:
            return list(s.exec(select(TrainingRun).order_by(TrainingRun.id)).all())

    def update_training_run(self, run_id: int, **values: Any) -> None:
        with self.write() as s:
            s.exec(update(TrainingRun).where(TrainingRun.id == run_id).values(**values))

    def finish_training_run(self, run_id: int, status: str, **values: Any) -> bool:
        """Set a final status unless the run already has one (e.g. it was marked failed as stale)."""
        with self.write() as s:
            result = s.exec(update(TrainingRun).where(
                TrainingRun.id == run_id, col(TrainingRun.status).in_(self.ACTIVE_RUN_STATUSES),
            ).values(status=status, finished_at=utcnow(), **values))
            return result.rowcount == 1

    def log_training_step(self, run_id: int, entry: dict[str, Any]) -> str | None:
        """Append one step's metrics and beat the heart; returns the run's status (for cancellation)."""
        with self.write() as s:
            run = s.get(TrainingRun, run_id)
            if run is None:
                return None
            run.metrics = [*run.metrics, entry]
            run.heartbeat_at = utcnow()
            s.add(run)
            return run.status

    def heartbeat_training_run(self, run_id: int) -> str | None:
        """Refresh the heartbeat; returns the run's status."""
        with self.write() as s:
            s.exec(update(TrainingRun).where(TrainingRun.id == run_id).values(heartbeat_at=utcnow()))
            return s.exec(select(TrainingRun.status).where(TrainingRun.id == run_id)).first()

    def request_cancel(self, run_id: int) -> str:
        """Ask an active run to stop (status 'cancelling'; a queued run is cancelled at once). Returns the status."""
        with self.write() as s:
            run = s.get(TrainingRun, run_id)
            if run is None:
                raise LookupError(f"no training run {run_id}")
            if run.status == "queued" and run.pid is None:
                run.status, run.finished_at = "cancelled", utcnow()
            elif run.status in ("queued", "running"):
                run.status = "cancelling"
            s.add(run)
            return run.status

    def trained_comparison_ids(self) -> set[int]:
        """Comparisons already trained on by a round that produced a version."""
        with self.read() as s:
            rows = s.exec(select(TrainingRun.comparison_ids).where(TrainingRun.status == "done")).all()
        return {cid for ids in rows for cid in ids}

    def human_labelled_comparison_ids(self) -> set[int]:
        with self.read() as s:
            return set(s.exec(select(Label.comparison_id).where(Label.source == "human",
                                                                col(Label.discarded_at).is_(None)).distinct()).all())

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
                # Still counted above (they are stored); never queued, trained on or exported (data.curation).
                "discarded": {name: s.exec(select(func.count()).select_from(table)
                                           .where(col(table.discarded_at).is_not(None))).one()
                              for name, table in (("prompts", Prompt), ("comparisons", Comparison),
                                                  ("labels", Label))},
            }

    # -- issue #6: the LLM-judge worker -------------------------------------------------------------------------
    JUDGE_MODES = ("all", "unseen", "calibration")

    def comparisons_for_judge(self, annotator: str, mode: str, limit: int, calibration_share: float = 0.1,
                              exclude: Sequence[int] = ()) -> list[tuple[int, list[dict[str, Any]], str, str]]:
        """(comparison id, prompt messages, response A text, response B text) that judge `annotator` has not
        labelled, highest priority then oldest first. `all`: open comparisons; `unseen`: open ones no human
        holds or has labelled (nor import); `calibration`: a fixed share of comparisons (picked by a hash of the
        id, open or done) that humans label too, so the judge can be compared with them."""
        from sqlalchemy import exists, literal

        from data.models import Lease

        if mode not in self.JUDGE_MODES:
            raise ValueError(f"judge mode must be one of {', '.join(self.JUDGE_MODES)}, not {mode!r}")
        ra, rb = Response.__table__.alias("ra"), Response.__table__.alias("rb")
        judged = exists().where(Label.comparison_id == Comparison.id, Label.annotator == annotator)
        q = (select(Comparison.id, Prompt.messages, ra.c.text, rb.c.text)
             .join(Prompt, col(Prompt.id) == Comparison.prompt_id)
             .join(ra, ra.c.id == Comparison.response_a_id).join(rb, rb.c.id == Comparison.response_b_id)
             .where(~judged, live_comparison()))
        if mode == "calibration":
            buckets = 10_000
            # Knuth's multiplicative hash spreads consecutive ids; the same ids are picked on every run.
            q = q.where(col(Comparison.status).in_(("open", "done")),
                        (col(Comparison.id) * literal(2654435761)) % buckets < int(calibration_share * buckets))
        else:
            q = q.where(Comparison.status == "open")
        if mode == "unseen":
            seen = exists().where(Label.comparison_id == Comparison.id, Label.source != "judge")
            held = exists().where(Lease.comparison_id == Comparison.id, col(Lease.expires_at) > utcnow())
            q = q.where(~seen, ~held)
        if exclude:
            q = q.where(col(Comparison.id).not_in(list(exclude)))
        q = q.order_by(col(Comparison.priority).desc(), Comparison.id).limit(limit)
        with self.read() as s:
            return [(cid, messages, a, b) for cid, messages, a, b in s.exec(q).all()]

    def start_judge_run(self, judge: str, kind: str, mode: str) -> int:
        from data.models import JudgeRun

        with self.write() as s:
            run = JudgeRun(judge=judge, kind=kind, mode=mode)
            s.add(run)
            s.flush()
            return run.id

    def update_judge_run(self, run_id: int, **values: Any) -> None:
        from data.models import JudgeRun

        with self.write() as s:
            s.exec(update(JudgeRun).where(JudgeRun.id == run_id).values(updated_at=utcnow(), **values))

    def judge_runs(self, judge: str | None = None, limit: int | None = None) -> list:
        """JudgeRun rows (of one judge annotator, when given), newest first."""
        from data.models import JudgeRun

        q = select(JudgeRun).order_by(col(JudgeRun.id).desc())
        if judge is not None:
            q = q.where(JudgeRun.judge == judge)
        if limit is not None:
            q = q.limit(limit)
        with self.read() as s:
            return list(s.exec(q).all())

    def judge_run_totals(self) -> dict[str, dict[str, int]]:
        """Per judge annotator, summed over its runs: judged, labelled, consistent, flipped, abstained."""
        from data.models import JudgeRun

        fields = ("judged", "labelled", "consistent", "flipped", "abstained")
        q = select(JudgeRun.judge, *(func.coalesce(func.sum(getattr(JudgeRun, f)), 0) for f in fields)) \
            .group_by(JudgeRun.judge)
        with self.read() as s:
            return {row[0]: dict(zip(fields, map(int, row[1:]), strict=True)) for row in s.exec(q).all()}
    # -- end of issue #6 ----------------------------------------------------------------------------------------


# The one rule of which comparisons are live (data.curation): neither the comparison nor its prompt is discarded.
# As SQL on `comparison c` for the queue's plain-SQL hot path, and as a clause on the Comparison table.
LIVE_COMPARISON_SQL = ("c.discarded_at IS NULL AND NOT EXISTS"
                       " (SELECT 1 FROM prompt p WHERE p.id = c.prompt_id AND p.discarded_at IS NOT NULL)")


def live_comparison():
    return text(LIVE_COMPARISON_SQL.replace("c.", "comparison."))


@contextmanager
def _one_writer(lock, session_cm):
    """Issue #4: writers of one process take turns on a lock before BEGIN IMMEDIATE. Under many concurrent
    annotators this queues them in the process instead of in SQLite's busy handler, whose sleep-and-retry
    backoff gave waits of seconds at the tail. Other processes still coordinate through the database lock."""
    with lock, session_cm as session:
        yield session


def lease_deadline(seconds: float):
    return utcnow() + timedelta(seconds=seconds)
