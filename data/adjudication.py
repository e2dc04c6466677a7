"""The adjudication queue and its decisions: live comparisons whose people disagree, or whose judge contradicts the
people's majority, and a reviewer's decision on one, stored as a label of source 'adjudication' that resolves it.
A decision is a pair's choice: rankings, ratings and thumbs are never adjudicated."""

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, literal, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from data.models import AuditEvent, Comparison, Label, Lease, Prompt, Response, utcnow
from data.rules import COUNTED_CHOICES, live_comparison, persons_label
from data.store import Store

SOURCE = "adjudication"
PREFIX = "adjudication:"  # a decision's Label.annotator is 'adjudication:<reviewer>'
DISAGREEMENT = "disagreement"  # people's counted labels hold two or more different choices
JUDGE_CONTRADICTS = "judge_contradicts_majority"  # a judge chose other than the people's strict majority
REASONS = (DISAGREEMENT, JUDGE_CONTRADICTS)
AUDIT_REASON_CHARS = 500  # how much of a rationale the audit trail's reason column repeats


class AdjudicationRefused(ValueError):
    """The comparison cannot be adjudicated now (retired, discarded, a gold question); the message says why."""


@dataclass(frozen=True)
class QueueEntry:
    """One comparison waiting for a reviewer, and why."""
    comparison_id: int
    reasons: tuple[str, ...]  # of REASONS
    counts: dict[str, int]  # people's counted labels per choice (a|b|tie|both_bad)
    majority: str | None  # the people's strict-majority choice, None when there is none
    last_label_at: datetime  # the newest person's or judge's label on it: the queue's order, newest first
    messages: list[dict[str, Any]] = field(default_factory=list)  # its prompt (filled in by `queue`)


@dataclass(frozen=True)
class LabelShown:
    """Every label on a comparison as an adjudicator reads it (choice about responses A/B as stored)."""
    label_id: int
    annotator: str
    source: str  # human|import|judge|adjudication
    choice: str
    rationale: str | None
    created_at: datetime
    discarded: str | None  # the discard reason when an operator (or a later decision) discarded it


@dataclass(frozen=True)
class Item:
    """One comparison in full: the prompt, both responses, every label, why it is (or was) in the queue."""
    comparison_id: int
    status: str
    messages: list[dict[str, Any]]
    response_a: str
    response_b: str
    labels: list[LabelShown]
    reasons: tuple[str, ...]
    counts: dict[str, int]
    majority: str | None
    gold_choice: str | None
    decision: LabelShown | None  # the live adjudication label, if decided

    @property
    def judge_choices(self) -> dict[str, str]:
        """Each judge's counted choice, by judge name ('judge:<name>')."""
        return {x.annotator: x.choice for x in self.labels
                if x.source == "judge" and x.discarded is None and x.choice in COUNTED_CHOICES}


@dataclass(frozen=True)
class Decision:
    """What one decision stored."""
    label_id: int
    comparison_id: int
    choice: str
    status: str  # the comparison's status now
    replaced: dict[str, Any] | None = None  # the decision it replaced: annotator, choice, rationale
    detail: dict[str, Any] = field(default_factory=dict)


# -- the queue ------------------------------------------------------------------------------------------------------
def _tally():
    """Per comparison: people's counted labels in all and per choice, and the newest person's or judge's label."""
    counted = and_(col(Label.choice).in_(COUNTED_CHOICES), col(Label.discarded_at).is_(None))
    human = persons_label()
    per_choice = [func.count().filter(and_(human, Label.choice == c)).label(f"n_{c}") for c in COUNTED_CHOICES]
    return (select(col(Label.comparison_id).label("cid"), func.count().filter(human).label("n"), *per_choice,
                   func.max(Label.created_at).label("last_at"))
            .where(counted, col(Label.source).in_(("human", "judge")))
            .group_by(Label.comparison_id).subquery("tally"))


def _candidates(comparison_id: int | None = None, decided_too: bool = False):
    """The query of comparisons in the adjudication queue (or, with `comparison_id`, that one when it has people's
    labels, with `decided_too` also when decided already): its columns say why."""
    t = _tally()
    kinds = sum(case((t.c[f"n_{c}"] > 0, 1), else_=0) for c in COUNTED_CHOICES)
    # A strict majority (more than half) is held by at most one choice; both_bad and tie are different choices.
    majority = case(*((2 * t.c[f"n_{c}"] > t.c.n, literal(c)) for c in COUNTED_CHOICES), else_=None)
    judge = aliased(Label)
    contradicts = exists().where(judge.comparison_id == Comparison.id, judge.source == "judge",
                                 col(judge.choice).in_(COUNTED_CHOICES), col(judge.discarded_at).is_(None),
                                 judge.choice != majority)
    disagrees = kinds > 1
    query = (select(Comparison.id, *(t.c[f"n_{c}"] for c in COUNTED_CHOICES), majority.label("majority"),
                    disagrees.label("disagrees"), contradicts.label("contradicts"), t.c.last_at)
             .join(t, t.c.cid == Comparison.id))
    if comparison_id is not None:
        query = query.where(Comparison.id == comparison_id)
    else:
        query = query.where(live_comparison(), col(Comparison.gold_choice).is_(None), Comparison.kind == "pair",
                            col(Comparison.status).in_(("open", "done")), or_(disagrees, contradicts)
                            ).order_by(t.c.last_at.desc(), col(Comparison.id).desc())
    if not decided_too:
        decided = aliased(Label)
        query = query.where(~exists().where(decided.comparison_id == Comparison.id, decided.source == SOURCE,
                                            col(decided.discarded_at).is_(None)))
    return query


def _entry(row) -> QueueEntry:
    cid, *counts, majority, disagrees, contradicts, last_at = row
    reasons = tuple(r for r, on in ((DISAGREEMENT, disagrees), (JUDGE_CONTRADICTS, contradicts)) if on)
    return QueueEntry(cid, reasons, dict(zip(COUNTED_CHOICES, counts, strict=True)), majority, last_at)


def queue(store: Store, limit: int = 100, offset: int = 0) -> list[QueueEntry]:
    """The adjudication queue, the comparison whose newest person's or judge's label is most recent first (a fresh
    disagreement is looked at while it is fresh), then the newest comparison. Live comparisons only, never gold
    questions, retired comparisons or those decided already."""
    query = _candidates().limit(max(1, int(limit))).offset(max(0, int(offset)))
    with store.read() as s:
        entries = [_entry(row) for row in s.exec(query).all()]
        ids = [e.comparison_id for e in entries]
        prompts = dict(s.exec(select(Comparison.id, Prompt.messages).join(Prompt, Prompt.id == Comparison.prompt_id)
                              .where(col(Comparison.id).in_(ids))).all()) if ids else {}
    return [replace(e, messages=prompts.get(e.comparison_id) or []) for e in entries]


def queue_counts(store: Store) -> dict[str, int]:
    """How many comparisons wait for a reviewer: in all, and for each reason (one may have both)."""
    q = _candidates().subquery("waiting")
    query = select(func.count(), func.count().filter(q.c.disagrees), func.count().filter(q.c.contradicts))
    with store.read() as s:
        total, disagreements, contradictions = s.exec(query.select_from(q)).one()
    return {"total": int(total), DISAGREEMENT: int(disagreements or 0), JUDGE_CONTRADICTS: int(contradictions or 0)}


# -- one comparison in full ---------------------------------------------------------------------------------------
def item(store: Store, comparison_id: int) -> Item:
    """Comparison `comparison_id` as an adjudicator sees it: prompt, responses, every label (skips, discarded ones
    and decisions too, oldest first), why it is in the queue and the decision, if any."""
    with store.read() as s:
        c = _comparison(s, comparison_id)
        prompt = s.get(Prompt, c.prompt_id)
        rows = s.exec(select(Label).where(Label.comparison_id == c.id).order_by(col(Label.id))).all()
        tally = s.exec(_candidates(c.id, decided_too=True)).first()
        a, b = s.get(Response, c.response_a_id), s.get(Response, c.response_b_id)
    labels = [_shown(x) for x in rows]
    entry = _entry(tally) if tally is not None else None
    decision = next((x for x in labels if x.source == SOURCE and x.discarded is None), None)
    return Item(c.id, c.status, prompt.messages, a.text, b.text, labels, entry.reasons if entry else (),
                entry.counts if entry else dict.fromkeys(COUNTED_CHOICES, 0), entry.majority if entry else None,
                c.gold_choice, decision)


def _shown(label: Label) -> LabelShown:
    return LabelShown(label.id, label.annotator, label.source, label.choice, label.rationale, label.created_at,
                      (label.discard_reason or "discarded") if label.discarded_at is not None else None)


def _comparison(s: Session, comparison_id: int, lock: bool = False) -> Comparison:
    # `lock`: the row lock label-queue transactions take on PostgreSQL (data/db.py), so no label lands meanwhile.
    c = (s.get(Comparison, int(comparison_id), with_for_update=lock) if 0 < int(comparison_id) <= 2**63 - 1
         else None)
    if c is None:
        raise LookupError(f"no comparison with id {comparison_id}")
    return c


# -- a decision ---------------------------------------------------------------------------------------------------
def decide(store: Store, comparison_id: int, choice: str, reviewer: str, rationale: str | None = None) -> Decision:
    """Store `reviewer`'s decision on a comparison as Label(source='adjudication', annotator='adjudication:<reviewer>')
    and an AuditEvent, in one transaction. Deciding again replaces the decision: the reviewer's own label is
    updated, another reviewer's earlier one is discarded (labels are never deleted), and the event keeps what was
    replaced. An open comparison is done once decided, and its leases are dropped: nobody labels it further."""
    if choice not in COUNTED_CHOICES:
        raise ValueError(f"a decision is one of {', '.join(COUNTED_CHOICES)}, not {choice!r}")
    if not reviewer:
        raise ValueError("a decision needs the reviewer's name")
    rationale = (rationale or "").strip() or None
    annotator = PREFIX + reviewer
    with store.write() as s:
        c = _decidable(s, comparison_id)
        rows = s.exec(select(Label).where(Label.comparison_id == c.id, Label.source == SOURCE)).all()
        previous = next((x for x in rows if x.discarded_at is None), None)
        replaced = ({"label_id": previous.id, "annotator": previous.annotator, "choice": previous.choice,
                     "rationale": previous.rationale} if previous is not None else None)
        label = _write_decision(s, c.id, rows, annotator, choice, rationale)
        status, leases = _close(s, c)
        detail = {"choice": choice, "label_id": label.id, "replaced": replaced, "status": status,
                  "leases_dropped": leases, "rationale": rationale}
        reason = rationale[:AUDIT_REASON_CHARS] if rationale else None
        s.add(AuditEvent(actor=reviewer, action="adjudicate", target="comparison", target_id=c.id, reason=reason,
                         detail=detail))
        return Decision(label.id, c.id, choice, status, replaced, detail)


def _decidable(s: Session, comparison_id: int) -> Comparison:
    c = _comparison(s, comparison_id, lock=True)
    if c.status == "retired":
        raise AdjudicationRefused(f"comparison {c.id} was retired; its labels stay as they are")
    if c.discarded_at is not None or s.get(Prompt, c.prompt_id).discarded_at is not None:
        raise AdjudicationRefused(f"comparison {c.id} was discarded by an operator")
    if c.kind != "pair":
        raise AdjudicationRefused(f"comparison {c.id} is a {c.kind} comparison; a decision chooses between the two "
                                  "responses of a pair")
    if c.gold_choice is not None:
        raise AdjudicationRefused(f"comparison {c.id} is a gold question (its answer is {c.gold_choice}); "
                                  "it needs no adjudication")
    return c


def _write_decision(s: Session, comparison_id: int, rows: list[Label], annotator: str, choice: str,
                    rationale: str | None) -> Label:
    now = utcnow()
    for other in rows:  # one live decision per comparison: the newest
        if other.annotator != annotator and other.discarded_at is None:
            other.discarded_at, other.discard_reason = now, f"replaced by {annotator}'s decision"
            s.add(other)
    label = next((x for x in rows if x.annotator == annotator), None)
    if label is None:
        label = Label(comparison_id=comparison_id, annotator=annotator, source=SOURCE, choice=choice)
    label.choice, label.rationale, label.created_at = choice, rationale, now
    label.discarded_at, label.discard_reason = None, None
    s.add(label)
    s.flush()
    return label


def _close(s: Session, c: Comparison) -> tuple[str, int]:
    """A decided comparison is resolved: an open one is done, and nobody keeps holding it."""
    if c.status == "open":
        c.status = "done"
        s.add(c)
    dropped = s.exec(delete(Lease).where(Lease.comparison_id == c.id)).rowcount
    return c.status, int(dropped or 0)
