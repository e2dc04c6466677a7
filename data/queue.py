"""The label queue: handing comparisons out under leases, taking each back exactly `overlap` times, edits.

Every operation is one `store.write()` transaction; BEGIN IMMEDIATE makes check-then-write atomic across processes."""

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, exists, func
from sqlmodel import Session, col, select

from data.models import Comparison, Label, Lease, Prompt, Response, utcnow
from data.store import Store

CHOICES = ("a", "b", "tie", "both_bad", "skip")
SIDES = ("left", "right", "tie", "both_bad", "skip")
ORDERS = ("ab", "ba")  # 'ab': response A is shown on the left
SOURCES = ("human", "judge", "import")


class QueueError(ValueError):
    """A label the queue refuses; the message says why."""


class ComparisonUnavailable(QueueError):
    """The comparison is retired, or already holds every label it wants."""


class LabelConflict(QueueError):
    """The annotator already labelled this comparison with another choice: the first label stands."""

    def __init__(self, comparison_id: int, existing_choice: str, label_id: int):
        super().__init__(f"comparison {comparison_id} already has your label {existing_choice!r}; "
                         "the first label stands")
        self.comparison_id = comparison_id
        self.existing_choice = existing_choice
        self.label_id = label_id


@dataclass(frozen=True)
class QueueItem:
    """One comparison handed to one annotator, in the left/right order they see it."""
    comparison_id: int
    lease_id: int
    prompt_id: int
    messages: list[dict[str, Any]]
    left_text: str
    right_text: str
    left_response_id: int
    right_response_id: int
    shown_order: str  # pass back to submit_label / choice_from_side
    expires_at: datetime


@dataclass(frozen=True)
class SubmitResult:
    label_id: int
    comparison_id: int
    choice: str
    created: bool  # False: the same label was already there (a double click or a retry)
    done: bool  # the comparison now holds every label it wants


def choice_from_side(side: str, shown_order: str) -> str:
    """What the annotator clicked (left|right|tie|both_bad|skip) as a choice about responses A/B."""
    _require(shown_order in ORDERS, f"shown_order must be one of {ORDERS}, not {shown_order!r}")
    _require(side in SIDES, f"side must be one of {SIDES}, not {side!r}")
    if side not in ("left", "right"):
        return side
    return "a" if (side == "left") == (shown_order == "ab") else "b"


# -- handing out -----------------------------------------------------------------------------------------------
def next_comparison(store: Store, annotator: str, lease_seconds: float,
                    overlap_default: int | None = None) -> QueueItem | None:
    """Lease the next comparison to `annotator`, or give back the one they already hold (a page reload).

    Highest priority first, then oldest. None when nothing is left for them."""
    now = utcnow()
    with store.write() as s:
        # Expired leases must not hold places; clearing them here keeps the table small too.
        s.exec(delete(Lease).where(col(Lease.expires_at) <= now))
        lease = _held_lease(s, annotator)
        if lease is None:
            # Whatever else they hold is on a comparison retired or labelled meanwhile: one lease per person.
            s.exec(delete(Lease).where(Lease.annotator == annotator))
            comparison = _first_available(s, annotator, now, overlap_default)
            if comparison is None:
                return None
            lease = Lease(comparison_id=comparison.id, annotator=annotator, shown_order=random.choice(ORDERS),
                          expires_at=now + timedelta(seconds=lease_seconds))
            s.add(lease)
            s.flush()
        return _item(s, lease)


def _held_lease(s: Session, annotator: str) -> Lease | None:
    q = (select(Lease).join(Comparison, col(Comparison.id) == Lease.comparison_id)
         .where(Lease.annotator == annotator, Comparison.status == "open", ~_labelled_by(annotator))
         .order_by(Lease.id).limit(1))
    return s.exec(q).first()


def _first_available(s: Session, annotator: str, now: datetime, overlap_default: int | None) -> Comparison | None:
    taken = _label_count(Comparison.id).scalar_subquery() + _lease_count(Comparison.id, now).scalar_subquery()
    q = (select(Comparison)
         .where(Comparison.status == "open", ~_labelled_by(annotator), _wanted_sql(overlap_default) > taken)
         .order_by(col(Comparison.priority).desc(), Comparison.id).limit(1))
    return s.exec(q).first()


def _item(s: Session, lease: Lease) -> QueueItem:
    c = s.get(Comparison, lease.comparison_id)
    a, b = s.get(Response, c.response_a_id), s.get(Response, c.response_b_id)
    left, right = (a, b) if lease.shown_order == "ab" else (b, a)
    return QueueItem(comparison_id=c.id, lease_id=lease.id, prompt_id=c.prompt_id,
                     messages=s.get(Prompt, c.prompt_id).messages, left_text=left.text, right_text=right.text,
                     left_response_id=left.id, right_response_id=right.id, shown_order=lease.shown_order,
                     expires_at=_aware(lease.expires_at))


def release_lease(store: Store, annotator: str, comparison_id: int) -> bool:
    """Give a leased comparison back to the queue now (the annotator moved on); False when none was held."""
    with store.write() as s:
        result = s.exec(delete(Lease).where(Lease.annotator == annotator, Lease.comparison_id == comparison_id))
        return result.rowcount > 0


def expire_leases(store: Store) -> int:
    """Delete expired leases; returns how many. (next_comparison also ignores and clears them.)"""
    with store.write() as s:
        return s.exec(delete(Lease).where(col(Lease.expires_at) <= utcnow())).rowcount


# -- taking labels back ----------------------------------------------------------------------------------------
def submit_label(store: Store, annotator: str, comparison_id: int, choice: str, shown_order: str,
                 rationale: str | None = None, time_spent_s: float | None = None, source: str = "human",
                 overlap_default: int | None = None) -> SubmitResult:
    """Record `annotator`'s choice (a|b|tie|both_bad|skip, about responses A/B) and release their lease.

    One label per (comparison, annotator): the same choice again returns the stored label (created=False);
    another choice raises LabelConflict. A skip never fills the overlap, but the comparison is not handed to
    this annotator again. Refused: unknown (LookupError) or retired comparisons, and labels beyond the overlap."""
    _check_label(choice, shown_order, source)
    with store.write() as s:
        c = _comparison(s, comparison_id)
        return _submit(s, c, annotator, choice, shown_order, rationale, time_spent_s, source, overlap_default)


def _submit(s: Session, c: Comparison, annotator: str, choice: str, shown_order: str, rationale: str | None,
            time_spent_s: float | None, source: str, overlap_default: int | None) -> SubmitResult:
    existing = s.exec(select(Label).where(Label.comparison_id == c.id, Label.annotator == annotator)).first()
    if existing is not None:
        if existing.choice != choice:
            raise LabelConflict(c.id, existing.choice, existing.id)
        return SubmitResult(existing.id, c.id, choice, created=False, done=c.status == "done")
    if c.status == "retired":
        raise ComparisonUnavailable(f"comparison {c.id} was retired and takes no more labels")
    if _fills_overlap(choice, source):
        _check_room(s, c, annotator, overlap_default)
    label = Label(comparison_id=c.id, annotator=annotator, source=source, choice=choice, shown_order=shown_order,
                  rationale=rationale or None, time_spent_s=time_spent_s)
    s.add(label)
    s.exec(delete(Lease).where(Lease.comparison_id == c.id, Lease.annotator == annotator))
    s.flush()
    return SubmitResult(label.id, c.id, choice, created=True, done=_settle(s, c, overlap_default))


def _check_room(s: Session, c: Comparison, annotator: str, overlap_default: int | None) -> None:
    """Labels + other people's live leases never exceed the overlap, so each comparison gets exactly that many.

    A live lease of one's own is a reserved place; without one (it expired) a label still fits if a place is free."""
    now = utcnow()
    wanted = _wanted(c, overlap_default)
    labels = s.exec(_label_count(c.id)).one()
    others = s.exec(_lease_count(c.id, now, other_than=annotator)).one()
    mine = s.exec(_lease_count(c.id, now).where(Lease.annotator == annotator)).one()
    if labels >= wanted or (not mine and labels + others >= wanted):
        raise ComparisonUnavailable(f"comparison {c.id} already has the {wanted} label(s) it wants")


def _settle(s: Session, c: Comparison, overlap_default: int | None) -> bool:
    if c.status == "open" and s.exec(_label_count(c.id)).one() >= _wanted(c, overlap_default):
        c.status = "done"
        s.add(c)
    return c.status == "done"


# -- the edit flow ---------------------------------------------------------------------------------------------
def add_edited_response(store: Store, annotator: str, comparison_id: int, edited_text: str, shown_order: str,
                        rationale: str | None = None, *, edited_from: str, original_choice: str = "skip",
                        time_spent_s: float | None = None) -> int:
    """The annotator rewrote response `edited_from` ('a'|'b') of a comparison; returns the new comparison's id.

    One transaction stores: the edit as a new Response (source 'edit', same prompt, no model version); a new
    Comparison (source 'edit', status 'done', overlap 1) with the edit as A and the response it came from as B,
    labelled 'a' by the annotator; and the annotator's `original_choice` (default 'skip') on the original
    comparison, under submit_label's rules, unless they labelled it already (that label stands)."""
    _require(edited_from in ("a", "b"), f"edited_from must be 'a' or 'b', not {edited_from!r}")
    _check_label(original_choice, shown_order, "human")
    _require(bool(edited_text and edited_text.strip()), "the edited response is empty")
    with store.write() as s:
        c = _comparison(s, comparison_id)
        if c.status == "retired":
            raise ComparisonUnavailable(f"comparison {c.id} was retired and takes no more labels")
        source_response = s.get(Response, c.response_a_id if edited_from == "a" else c.response_b_id)
        _require(edited_text.strip() != source_response.text.strip(), "the edit does not change the response")
        edit_id = _store_edit(s, c, source_response, edited_text, annotator, rationale, time_spent_s)
        if not _has_label(s, c.id, annotator):
            _submit(s, c, annotator, original_choice, shown_order, rationale, time_spent_s, "human", None)
        s.exec(delete(Lease).where(Lease.comparison_id == c.id, Lease.annotator == annotator))
        return edit_id


def _store_edit(s: Session, c: Comparison, rejected: Response, text: str, annotator: str,
                rationale: str | None, time_spent_s: float | None) -> int:
    edited = Response(prompt_id=c.prompt_id, model_version_id=None, text=text, source="edit")
    s.add(edited)
    s.flush()
    # Keeps the original's model version: the rejected side is that version's output (since_round filters by it).
    pair = Comparison(prompt_id=c.prompt_id, response_a_id=edited.id, response_b_id=rejected.id,
                      model_version_id=c.model_version_id, overlap=1, status="done", source="edit",
                      origin=f"edit of comparison {c.id} by {annotator}")
    s.add(pair)
    s.flush()
    s.add(Label(comparison_id=pair.id, annotator=annotator, source="human", choice="a", shown_order="ab",
                rationale=rationale or None, time_spent_s=time_spent_s))
    return pair.id


# -- progress --------------------------------------------------------------------------------------------------
def queue_counts(store: Store, annotator: str | None = None, overlap_default: int | None = None) -> dict[str, int]:
    """open: open comparisons; left: those still wanting a label (and, given an annotator, not yet seen by them);
    labelled_today: non-skip labels since 00:00 UTC (by the annotator, when given)."""
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    open_q = select(func.count()).select_from(Comparison).where(Comparison.status == "open")
    left_q = open_q.where(_wanted_sql(overlap_default) > _label_count(Comparison.id).scalar_subquery())
    today_q = select(func.count()).select_from(Label).where(col(Label.created_at) >= today, Label.choice != "skip")
    if annotator is not None:
        left_q = left_q.where(~_labelled_by(annotator))
        today_q = today_q.where(Label.annotator == annotator)
    with store.read() as s:
        return {"open": s.exec(open_q).one(), "left": s.exec(left_q).one(), "labelled_today": s.exec(today_q).one()}


# -- shared pieces ---------------------------------------------------------------------------------------------
def _label_count(comparison_id):
    """Labels that fill the overlap: not skips, not judges (judge labels are advisory extras)."""
    return select(func.count()).select_from(Label).where(
        Label.comparison_id == comparison_id, Label.choice != "skip", Label.source != "judge")


def _lease_count(comparison_id, now: datetime, other_than: str | None = None):
    q = select(func.count()).select_from(Lease).where(Lease.comparison_id == comparison_id,
                                                      col(Lease.expires_at) > now)
    return q if other_than is None else q.where(Lease.annotator != other_than)


def _labelled_by(annotator: str):
    return exists().where(Label.comparison_id == Comparison.id, Label.annotator == annotator)


def _wanted(c: Comparison, overlap_default: int | None) -> int:
    """A comparison's own overlap rules; `overlap_default` only stands in where none usable is stored."""
    return c.overlap if c.overlap and c.overlap >= 1 else (overlap_default or 1)


def _wanted_sql(overlap_default: int | None):
    return case((col(Comparison.overlap) >= 1, Comparison.overlap), else_=overlap_default or 1)


def _fills_overlap(choice: str, source: str) -> bool:
    return choice != "skip" and source != "judge"


def _has_label(s: Session, comparison_id: int, annotator: str) -> bool:
    q = select(Label.id).where(Label.comparison_id == comparison_id, Label.annotator == annotator)
    return s.exec(q).first() is not None


def _comparison(s: Session, comparison_id: int) -> Comparison:
    c = s.get(Comparison, comparison_id)
    if c is None:
        raise LookupError(f"no comparison with id {comparison_id}")
    return c


def _check_label(choice: str, shown_order: str, source: str) -> None:
    _require(choice in CHOICES, f"choice must be one of {CHOICES}, not {choice!r}")
    _require(shown_order in ORDERS, f"shown_order must be one of {ORDERS}, not {shown_order!r}")
    _require(source in SOURCES, f"source must be one of {SOURCES}, not {source!r}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _aware(t: datetime) -> datetime:
    # SQLite hands datetimes back naive; every stored time is UTC.
    return t if t.tzinfo else t.replace(tzinfo=UTC)
