"""Label quality: gold questions (comparisons with a known answer), each annotator's gold accuracy, and the hold-back
of the labels of annotators whose recent gold accuracy is too low (held labels stay stored, out of pairs, until an
operator releases or discards them). Each change and its AuditEvent are written in one transaction."""

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from data.models import AuditEvent, Comparison, Label, utcnow
from data.rules import COUNTED_CHOICES, LIVE_COMPARISON_SQL, PERSONS_LABEL_SQL, not_gold, persons_label

ID_MAX = 2**63 - 1
REASON_MAX = 2000


class QualityRefused(ValueError):
    """The change does not fit the state: releasing or discarding the labels of an annotator with none held,
    unmarking a comparison that is no gold question."""


@dataclass(frozen=True)
class GoldPolicy:
    """When an annotator is held back (labelling.gold_window, gold_min_answers, gold_threshold; same defaults):
    at least `min_answers` of their latest `window` gold answers given, and fewer than `threshold` of those right.
    A threshold of 0 holds nobody back."""
    window: int = 20
    min_answers: int = 5
    threshold: float = 0.6

    def holds(self, recent_answered: int, recent_correct: int) -> bool:
        return (self.threshold > 0 and recent_answered >= self.min_answers
                and recent_correct < self.threshold * recent_answered)


DEFAULT_POLICY = GoldPolicy()


@dataclass(frozen=True)
class GoldScore:
    """One annotator's gold record: all their gold answers, the latest `window` of them, and the hold-back."""
    answered: int
    correct: int
    accuracy: float | None  # None before any answer
    recent_answered: int
    recent_accuracy: float | None
    held: bool
    held_labels: int  # their labels held back now (0 unless held)


# -- gold questions --------------------------------------------------------------------------------------------
def mark_gold(store, comparison_id: int, choice: str, actor: str, reason: str | None = None) -> None:
    """Make a comparison a gold question whose known answer is `choice` (a|b|tie|both_bad), or change its answer.
    From now on it resolves from that answer alone; people's labels on it only measure them."""
    if choice not in COUNTED_CHOICES:
        raise ValueError(f"a gold answer is one of {', '.join(COUNTED_CHOICES)}, not {choice!r}")
    reason = _reason(reason)
    with store.write() as s:
        comparison = _comparison(s, comparison_id)
        if comparison.kind != "pair":
            raise QualityRefused(f"comparison {comparison_id} is a {comparison.kind} comparison; a gold question "
                                 "is a pair with a known answer")
        previous = comparison.gold_choice
        comparison.gold_choice = choice
        s.add(comparison)
        s.add(AuditEvent(actor=actor, action="mark_gold", target="comparison", target_id=comparison.id,
                         reason=reason, detail={"choice": choice, "previous": previous}))


def unmark_gold(store, comparison_id: int, actor: str, reason: str | None = None) -> None:
    """Make a gold question an ordinary comparison again: its labels resolve it as any comparison's do."""
    reason = _reason(reason)
    with store.write() as s:
        comparison = _comparison(s, comparison_id)
        if comparison.gold_choice is None:
            raise QualityRefused(f"comparison {comparison_id} is not a gold question")
        previous, comparison.gold_choice = comparison.gold_choice, None
        s.add(comparison)
        s.add(AuditEvent(actor=actor, action="unmark_gold", target="comparison", target_id=comparison.id,
                         reason=reason, detail={"previous": previous}))


def gold_questions(store) -> list[dict[str, Any]]:
    """Every gold question in id order: id, known answer, status, whether it is discarded, and its people's
    answers (how many, how many right)."""
    with store.read() as s:
        rows = s.exec(select(Comparison.id, Comparison.gold_choice, Comparison.status, Comparison.discarded_at)
                      .where(col(Comparison.gold_choice).is_not(None)).order_by(Comparison.id)).all()
        answers = s.exec(select(Label.comparison_id, Label.choice, Comparison.gold_choice)
                         .join(Comparison, Comparison.id == Label.comparison_id)
                         .where(col(Comparison.gold_choice).is_not(None), persons_label())).all()
    counts: dict[int, list[int]] = {}
    for cid, given, known in answers:
        count = counts.setdefault(cid, [0, 0])
        count[0] += 1
        count[1] += given == known
    return [{"id": cid, "gold": gold, "status": status, "discarded": discarded is not None,
             "answered": counts.get(cid, [0, 0])[0], "correct": counts.get(cid, [0, 0])[1]}
            for cid, gold, status, discarded in rows]


# -- accuracy and the hold-back ----------------------------------------------------------------------------------
def gold_scores(store, window: int, min_answers: int, threshold: float) -> dict[str, GoldScore]:
    """Per annotator who answered a live gold question: their GoldScore under this policy."""
    policy = GoldPolicy(window, min_answers, threshold)
    with store.read() as s:
        answers = _gold_answers(s)
        held = _policy_held(answers, policy)
        held_counts = _held_label_counts(s, held)
    return {name: _score(results, policy, held_counts.get(name, 0) if name in held else 0)
            for name, results in answers.items()}


def not_held_sql(held: set[str]) -> str:
    """An SQL condition (to follow a WHERE clause, unqualified over `label`, ending in a space) that leaves out the
    labels of the `held` annotators that an operator has not released; '' when nobody is held. The names are
    quoted, with braces doubled for SQL that str.format fills in later."""
    if not held:
        return ""
    names = ", ".join("'" + n.replace("'", "''").replace("{", "{{").replace("}", "}}") + "'" for n in sorted(held))
    return f"AND NOT (source = 'human' AND released_at IS NULL AND annotator IN ({names})) "


def held_annotators_from_cursor(cursor, policy: GoldPolicy) -> set[str]:
    """Who is held back now under `policy`, read through a raw DBAPI cursor (data.pairs reads through one, inside
    its own snapshot)."""
    if policy.threshold <= 0:
        return set()
    cursor.execute(GOLD_ANSWERS_SQL)
    return _policy_held(answers_by_annotator(cursor.fetchall()), policy)


def release_held(store, annotator: str, policy: GoldPolicy, actor: str, reason: str | None = None) -> int:
    """Let `annotator`'s held labels count (released_at is set); labels they give later are held again while their
    accuracy stays low. Returns how many were released."""
    reason = _reason(reason)
    with store.write() as s:
        labels = _held_labels_of(s, annotator, policy)
        now = utcnow()
        for label in labels:
            label.released_at = now
            s.add(label)
        s.add(AuditEvent(actor=actor, action="release_held", target="annotator", reason=reason,
                         detail={"annotator": annotator, "labels": [x.id for x in labels]}))
        return len(labels)


def discard_held(store, annotator: str, policy: GoldPolicy, actor: str, reason: str,
                 overlap_default: int | None = None) -> dict[int, str | None]:
    """Discard `annotator`'s held labels (as discarding a label does: kept, counted for nothing); the comparisons
    they filled are settled again, a done one reopening. Returns comparison id -> status now."""
    from data.queue import settle_status

    reason = _reason(reason)
    if not reason:
        raise ValueError("give a reason: it is kept in the audit trail")
    with store.write() as s:
        labels = _held_labels_of(s, annotator, policy)
        now = utcnow()
        for label in labels:
            label.discarded_at, label.discard_reason = now, reason
            s.add(label)
        s.flush()
        statuses = {cid: settle_status(s.connection(), cid, overlap_default)
                    for cid in sorted({x.comparison_id for x in labels})}
        s.add(AuditEvent(actor=actor, action="discard_held", target="annotator", reason=reason,
                         detail={"annotator": annotator, "labels": [x.id for x in labels],
                                 "statuses": {str(k): v for k, v in statuses.items()}}))
        return statuses


# -- the parts ---------------------------------------------------------------------------------------------------
# Each person's answers to live gold questions, oldest first: (annotator, 1 when it was the known answer, else 0).
# Plain SQL, so data.pairs runs the same rule on its raw cursor inside its own snapshot.
GOLD_ANSWERS_SQL = (
    "SELECT l.annotator, CASE WHEN l.choice = c.gold_choice THEN 1 ELSE 0 END "
    f"FROM (SELECT * FROM label WHERE {PERSONS_LABEL_SQL}) l JOIN comparison c ON c.id = l.comparison_id "
    f"WHERE c.gold_choice IS NOT NULL AND {LIVE_COMPARISON_SQL} ORDER BY l.annotator, l.created_at, l.id")


def answers_by_annotator(rows) -> dict[str, list[bool]]:
    """GOLD_ANSWERS_SQL's rows as annotator -> right or wrong, oldest first."""
    answers: dict[str, list[bool]] = {}
    for annotator, right in rows:
        answers.setdefault(annotator, []).append(bool(right))
    return answers


def _gold_answers(s: Session) -> dict[str, list[bool]]:
    return answers_by_annotator(s.connection().exec_driver_sql(GOLD_ANSWERS_SQL).all())


def _policy_held(answers: dict[str, list[bool]], policy: GoldPolicy) -> set[str]:
    return {name for name, results in answers.items()
            if policy.holds(len(recent := results[-policy.window:]), sum(recent))}


def _score(results: list[bool], policy: GoldPolicy, held_labels: int) -> GoldScore:
    recent = results[-policy.window:]
    return GoldScore(answered=len(results), correct=sum(results), accuracy=_share(sum(results), len(results)),
                     recent_answered=len(recent), recent_accuracy=_share(sum(recent), len(recent)),
                     held=policy.holds(len(recent), sum(recent)), held_labels=held_labels)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _held_where(annotators):
    """Labels held back for these annotators: their counted human labels, not released, not on gold questions."""
    return (persons_label(), col(Label.annotator).in_(annotators), col(Label.released_at).is_(None), not_gold())


def _held_label_counts(s: Session, annotators: set[str]) -> dict[str, int]:
    if not annotators:
        return {}
    rows = s.exec(select(Label.annotator, func.count()).where(*_held_where(sorted(annotators)))
                  .group_by(Label.annotator)).all()
    return dict(rows)


def _held_labels_of(s: Session, annotator: str, policy: GoldPolicy) -> list[Label]:
    if annotator not in _policy_held(_gold_answers(s), policy):
        raise QualityRefused(f"{annotator!r} is not held back (their recent gold accuracy is not below the threshold)")
    labels = list(s.exec(select(Label).where(*_held_where([annotator])).order_by(Label.id)).all())
    if not labels:
        raise QualityRefused(f"{annotator!r} is held back but has no held labels")
    return labels


def _comparison(s: Session, comparison_id: int) -> Comparison:
    # An id past the database's integer range names nothing (and would overflow the driver).
    row = s.get(Comparison, int(comparison_id)) if 0 < int(comparison_id) <= ID_MAX else None
    if row is None:
        raise LookupError(f"no comparison with id {comparison_id}")
    return row


def _reason(reason: str | None) -> str | None:
    reason = (reason or "").strip()
    if len(reason) > REASON_MAX:
        raise ValueError(f"the reason is longer than {REASON_MAX} characters")
    return reason or None
