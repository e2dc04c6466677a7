"""The LLM-judge worker's rows: which comparisons a judge has yet to label (and why none are), and its runs with
their counts, progress and the lock that keeps one judge run at a time. A judge says a, b or tie: it labels pairs
only, never a ranking, rating or thumbs comparison.

A run's own record beyond its counts (its limit, settings, process and host, why it labelled nothing) lives under
RUN_KEY in its `choices` JSON, beside the per-choice label counts (no column of its own): see split_choices."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import exists, func, literal, update
from sqlmodel import col, select

from data.models import Comparison, JudgeRun, Label, Lease, Prompt, Response, utcnow
from data.rules import live_comparison

RUN_KEY = "_run"  # the run's own record inside JudgeRun.choices (choice names never start with '_')


class JudgeBusy(ValueError):
    """Another judge run is running."""


def split_choices(choices: dict[str, Any] | None) -> tuple[dict[str, int], dict[str, Any]]:
    """A JudgeRun's `choices` as (the per-choice label counts, the run's record: limit, settings, pid, host,
    reason)."""
    choices = dict(choices or {})
    meta = choices.pop(RUN_KEY, None) or {}
    return choices, meta


class JudgeRuns:
    """store.judge_runs: every method runs one short session of the store's."""

    MODES = ("all", "unseen", "calibration")

    def __init__(self, store):
        self.store = store

    def to_judge(self, annotator: str, mode: str, limit: int, calibration_share: float = 0.1,
                 exclude: Sequence[int] = ()) -> list[tuple[int, list[dict[str, Any]], str, str]]:
        """(comparison id, prompt messages, response A text, response B text) that judge `annotator` has not
        labelled, highest priority then oldest first. `all`: open comparisons; `unseen`: open ones no human
        holds or has labelled (nor import); `calibration`: a fixed share of comparisons (picked by a hash of the
        id, open or done) that humans label too, so the judge can be compared with them."""
        ra, rb = Response.__table__.alias("ra"), Response.__table__.alias("rb")
        q = (self._candidates(select(Comparison.id, Prompt.messages, ra.c.text, rb.c.text), mode, calibration_share)
             .join(Prompt, col(Prompt.id) == Comparison.prompt_id)
             .join(ra, ra.c.id == Comparison.response_a_id).join(rb, rb.c.id == Comparison.response_b_id)
             .where(~self._judged_by(annotator)))
        if mode == "unseen":
            q = q.where(*self._unseen())
        if exclude:
            q = q.where(col(Comparison.id).not_in(list(exclude)))
        q = q.order_by(col(Comparison.priority).desc(), Comparison.id).limit(limit)
        with self.store.read() as s:
            return [(cid, messages, a, b) for cid, messages, a, b in s.exec(q).all()]

    def left_counts(self, annotator: str, mode: str, calibration_share: float = 0.1) -> dict[str, int]:
        """Why to_judge may find nothing: of the comparisons `mode` covers (before the unseen filter),
        `candidates` how many there are, `unjudged` how many `annotator` has not labelled, and `free` how many of
        those no human holds or has labelled."""
        count = select(func.count()).select_from(Comparison)
        q = self._candidates(count, mode, calibration_share)
        unjudged = q.where(~self._judged_by(annotator))
        with self.store.read() as s:
            return {"candidates": s.exec(q).one(), "unjudged": s.exec(unjudged).one(),
                    "free": s.exec(unjudged.where(*self._unseen())).one()}

    def _candidates(self, q, mode: str, calibration_share: float):
        if mode not in self.MODES:
            raise ValueError(f"judge mode must be one of {', '.join(self.MODES)}, not {mode!r}")
        q = q.where(live_comparison(), Comparison.kind == "pair")
        if mode != "calibration":
            return q.where(Comparison.status == "open")
        buckets = 10_000
        # Knuth's multiplicative hash spreads consecutive ids; the same ids are picked on every run.
        return q.where(col(Comparison.status).in_(("open", "done")),
                       (col(Comparison.id) * literal(2654435761)) % buckets < int(calibration_share * buckets))

    @staticmethod
    def _judged_by(annotator: str):
        return exists().where(Label.comparison_id == Comparison.id, Label.annotator == annotator)

    @staticmethod
    def _unseen():
        seen = exists().where(Label.comparison_id == Comparison.id, Label.source != "judge")
        held = exists().where(Lease.comparison_id == Comparison.id, col(Lease.expires_at) > utcnow())
        return ~seen, ~held

    def count_split(self, comparison_ids: Sequence[int]) -> None:
        """One more judge_split on each comparison whose verdicts flipped with the order or that the judge abstained
        on (labelling.priority = judge_disagreement hands those out first); one statement for the batch."""
        if not comparison_ids:
            return
        with self.store.write() as s:
            s.exec(update(Comparison).where(col(Comparison.id).in_(list(comparison_ids)))
                   .values(judge_split=Comparison.judge_split + 1))

    def start(self, judge: str, kind: str, mode: str, record: dict[str, Any] | None = None) -> int:
        """A running run, outside the lock (a watching worker's drain); `record`: the run's own (RUN_KEY)."""
        with self.store.write() as s:
            run = JudgeRun(judge=judge, kind=kind, mode=mode, choices={RUN_KEY: record} if record else {})
            s.add(run)
            s.flush()
            return run.id

    def claim(self, judge: str, kind: str, mode: str, record: dict[str, Any], is_stale=None) -> int:
        """Start a run under the lock that keeps one judge run at a time, across processes: in one write
        transaction, running runs for which `is_stale(run)` is true are marked failed; if a running one is left,
        JudgeBusy is raised; else a running run is created (with `record` as its own record)."""
        with self.store.write() as s:
            for run in s.exec(select(JudgeRun).where(JudgeRun.status == "running")).all():
                if is_stale is None or not is_stale(run):
                    _counts, meta = split_choices(run.choices)
                    of = f" of {meta['limit']}" if meta.get("limit") else ""
                    raise JudgeBusy(f"judge run {run.id} ({run.judge}) is still running ({run.judged}{of} "
                                    f"judged); one judge run at a time")
                self._fail_stale(s, run)
            run = JudgeRun(judge=judge, kind=kind, mode=mode, choices={RUN_KEY: record})
            s.add(run)
            s.flush()
            return run.id

    STALE = "the judge process died or stopped reporting"

    def _fail_stale(self, s, run: JudgeRun) -> None:
        counts, meta = split_choices(run.choices)
        run.status, run.finished_at, run.error = "failed", utcnow(), self.STALE
        run.choices = {**counts, RUN_KEY: {**meta, "reason": f"{self.STALE} (after judging {run.judged})"}}
        s.add(run)

    def recover_stale(self, is_stale) -> list[int]:
        """Mark failed every running run for which `is_stale(run)` is true (its process died); returns their ids."""
        with self.store.write() as s:
            stale = [run for run in s.exec(select(JudgeRun).where(JudgeRun.status == "running")).all()
                     if is_stale(run)]
            for run in stale:
                self._fail_stale(s, run)
            return [run.id for run in stale]

    def get(self, run_id: int) -> JudgeRun | None:
        with self.store.read() as s:
            return s.get(JudgeRun, run_id)

    def update(self, run_id: int, choices: dict[str, Any] | None = None, **values: Any) -> None:
        """Set a run's columns (and refresh its updated_at, the heartbeat). `choices`: the label counts, kept
        beside the run's own record."""
        with self.store.write() as s:
            if choices is not None:
                _counts, meta = split_choices(s.exec(select(JudgeRun.choices).where(JudgeRun.id == run_id)).first())
                values["choices"] = {**choices, RUN_KEY: meta} if meta else dict(choices)
            s.exec(update(JudgeRun).where(JudgeRun.id == run_id).values(updated_at=utcnow(), **values))

    def record(self, run_id: int, **values: Any) -> None:
        """Merge `values` into the run's own record (its pid, why it labelled nothing, ...)."""
        with self.store.write() as s:
            run = s.get(JudgeRun, run_id)
            if run is None:
                return
            counts, meta = split_choices(run.choices)
            run.choices = {**counts, RUN_KEY: {**meta, **values}}
            run.updated_at = utcnow()
            s.add(run)

    def finish(self, run_id: int, status: str, **values: Any) -> bool:
        """Set a final status unless the run already has one (e.g. it was marked failed as stale)."""
        with self.store.write() as s:
            result = s.exec(update(JudgeRun).where(JudgeRun.id == run_id, JudgeRun.status == "running")
                            .values(status=status, finished_at=utcnow(), updated_at=utcnow(), **values))
            return result.rowcount == 1

    def all(self, judge: str | None = None, limit: int | None = None) -> list:
        """JudgeRun rows (of one judge annotator, when given), newest first."""
        q = select(JudgeRun).order_by(col(JudgeRun.id).desc())
        if judge is not None:
            q = q.where(JudgeRun.judge == judge)
        if limit is not None:
            q = q.limit(limit)
        with self.store.read() as s:
            return list(s.exec(q).all())

    def totals(self) -> dict[str, dict[str, int]]:
        """Per judge annotator, summed over its runs: judged, labelled, consistent, flipped, abstained."""
        fields = ("judged", "labelled", "consistent", "flipped", "abstained")
        q = select(JudgeRun.judge, *(func.coalesce(func.sum(getattr(JudgeRun, f)), 0) for f in fields)) \
            .group_by(JudgeRun.judge)
        with self.store.read() as s:
            return {row[0]: dict(zip(fields, map(int, row[1:]), strict=True)) for row in s.exec(q).all()}
