"""The LLM-judge worker's rows: which comparisons a judge has yet to label, and its runs with their counts."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import exists, func, literal, update
from sqlmodel import col, select

from data.models import Comparison, JudgeRun, Label, Lease, Prompt, Response, utcnow
from data.rules import live_comparison


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
        if mode not in self.MODES:
            raise ValueError(f"judge mode must be one of {', '.join(self.MODES)}, not {mode!r}")
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
        with self.store.read() as s:
            return [(cid, messages, a, b) for cid, messages, a, b in s.exec(q).all()]

    def start(self, judge: str, kind: str, mode: str) -> int:
        with self.store.write() as s:
            run = JudgeRun(judge=judge, kind=kind, mode=mode)
            s.add(run)
            s.flush()
            return run.id

    def update(self, run_id: int, **values: Any) -> None:
        with self.store.write() as s:
            s.exec(update(JudgeRun).where(JudgeRun.id == run_id).values(updated_at=utcnow(), **values))

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
