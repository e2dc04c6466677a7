"""Curation of stored data: operators discard and restore prompts, comparisons and labels; an annotator undoes
their own last label. Each change and its AuditEvent are written in one transaction, so the trail is the history."""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from data.models import (
    AuditEvent,
    Comparison,
    ComparisonResponse,
    Label,
    Lease,
    Prompt,
    Response,
    TrainingRun,
    utcnow,
)
from data.queue import has_room, settle_status
from data.store import Store

KINDS = {"prompt": Prompt, "comparison": Comparison, "label": Label}
# A label is trained on once a round has taken its comparison: queued, running, being cancelled or finished.
TRAINED_RUN_STATUSES = ("queued", "running", "cancelling", "done")
REASON_MAX = 2000
ID_MAX = 2**63 - 1


class NothingToUndo(LookupError):
    """The annotator has no label that can be undone."""


class CurationConflict(ValueError):
    """The change does not fit the row's state (discarding what is discarded, restoring what is not)."""


class UndoRefused(CurationConflict):
    """The label exists but cannot be undone (trained on, discarded, not the last one)."""


class NotYourLabel(PermissionError):
    """An annotator asked to undo someone else's label."""


@dataclass(frozen=True)
class Change:
    """What one discard, restore or undo did."""
    action: str  # discard|restore|undo
    kind: str  # prompt|comparison|label
    target_id: int
    statuses: dict[int, str] = field(default_factory=dict)  # comparisons settled: id -> status now
    detail: dict[str, Any] = field(default_factory=dict)


def discard(store: Store, kind: str, target_id: int, reason: str, actor: str,
            overlap_default: int | None = None) -> Change:
    """Take a prompt (and with it all its comparisons), a comparison or a label out of the queue, training and
    export. A discarded label stops counting toward its comparison's overlap (a done comparison reopens)."""
    reason = _reason(reason, required=True)
    with store.write() as s:
        row = _target(s, kind, target_id)
        if row.discarded_at is not None:
            raise CurationConflict(f"{kind} {target_id} is already discarded ({row.discard_reason})")
        row.discarded_at, row.discard_reason = utcnow(), reason
        s.add(row)
        return _record(s, "discard", kind, row, reason, actor, overlap_default)


def restore(store: Store, kind: str, target_id: int, actor: str, reason: str | None = None,
            overlap_default: int | None = None) -> Change:
    """Undo a discard: the row counts, trains and exports again (a label may close its comparison again)."""
    reason = _reason(reason, required=False)
    with store.write() as s:
        row = _target(s, kind, target_id)
        if row.discarded_at is None:
            raise CurationConflict(f"{kind} {target_id} is not discarded")
        detail = {"discarded_at": row.discarded_at.isoformat(), "discard_reason": row.discard_reason}
        row.discarded_at, row.discard_reason = None, None
        s.add(row)
        return _record(s, "restore", kind, row, reason, actor, overlap_default, detail)


def _record(s: Session, action: str, kind: str, row, reason: str | None, actor: str,
            overlap_default: int | None, detail: dict[str, Any] | None = None) -> Change:
    s.flush()
    detail = dict(detail or {})
    if action == "discard" and kind != "label":
        # Nobody keeps holding (or gets shown again) what was just taken out of the queue.
        detail["leases_dropped"] = _drop_leases(s, kind, row.id)
    statuses = {}
    if kind == "label":
        statuses[row.comparison_id] = settle_status(s.connection(), row.comparison_id, overlap_default)
        detail["comparison_id"] = row.comparison_id
    elif kind == "comparison":
        statuses[row.id] = settle_status(s.connection(), row.id, overlap_default)
    s.add(AuditEvent(actor=actor, action=action, target=kind, target_id=row.id, reason=reason,
                     detail={**detail, "statuses": {str(k): v for k, v in statuses.items()}}))
    return Change(action, kind, row.id, statuses, detail)


def _drop_leases(s: Session, kind: str, target_id: int) -> int:
    where = (Lease.comparison_id == target_id if kind == "comparison" else
             col(Lease.comparison_id).in_(select(Comparison.id).where(Comparison.prompt_id == target_id)))
    return s.exec(delete(Lease).where(where)).rowcount


def audit_events(store: Store, limit: int = 50) -> list[AuditEvent]:
    """The newest `limit` audit events, newest first."""
    with store.read() as s:
        return list(s.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(max(1, limit))).all())


def describe(store: Store, kind: str, target_id: int) -> dict[str, Any]:
    """What a prompt, comparison or label id stands for, so an operator sees what they discard: texts, state,
    labels. A label comes with its comparison."""
    with store.read() as s:
        row = _target(s, kind, target_id)
        if kind == "prompt":
            comparisons = s.exec(select(Comparison.id).where(Comparison.prompt_id == row.id)).all()
            return {"kind": kind, "id": row.id, "messages": row.messages, "source": row.source,
                    "discarded": row.discard_reason if row.discarded_at else None, "comparisons": list(comparisons)}
        if kind == "label":
            return {"kind": kind, **_label_row(row), "rationale": row.rationale,
                    "comparison": _describe_comparison(s, s.get(Comparison, row.comparison_id))}
        return _describe_comparison(s, row)


def _describe_comparison(s: Session, c: Comparison) -> dict[str, Any]:
    prompt = s.get(Prompt, c.prompt_id)
    labels = s.exec(select(Label).where(Label.comparison_id == c.id).order_by(Label.id)).all()
    return {"kind": "comparison", "id": c.id, "status": c.status, "source": c.source, "origin": c.origin,
            "discarded": c.discard_reason if c.discarded_at else None, "gold": c.gold_choice, "prompt_id": prompt.id,
            "prompt_discarded": prompt.discard_reason if prompt.discarded_at else None,
            "messages": prompt.messages, "response_a": s.get(Response, c.response_a_id).text,
            "response_b": s.get(Response, c.response_b_id).text, "labels": [_label_row(x) for x in labels],
            "comparison_kind": c.kind, "responses": _response_texts(s, c)}


def _response_texts(s: Session, c: Comparison) -> list[str]:
    """A comparison's responses by position: a pair's A and B, else its ComparisonResponse rows."""
    if c.kind == "pair":
        return [s.get(Response, c.response_a_id).text, s.get(Response, c.response_b_id).text]
    q = (select(Response.text).join(ComparisonResponse, col(ComparisonResponse.response_id) == Response.id)
         .where(ComparisonResponse.comparison_id == c.id).order_by(col(ComparisonResponse.position)))
    return list(s.exec(q).all())


def _label_row(label: Label) -> dict[str, Any]:
    return {"id": label.id, "annotator": label.annotator, "source": label.source, "choice": label.choice,
            "discarded": label.discard_reason if label.discarded_at else None, "ranking": label.ranking,
            "ratings": label.ratings}


def record_event(store: Store, actor: str, action: str, target: str, target_id: int | None = None,
                 reason: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """An audit event that changes no row of its own (an operator resuming automatic rounds, say)."""
    with store.write() as s:
        s.add(AuditEvent(actor=actor, action=action, target=target, target_id=target_id, reason=reason,
                         detail=detail or {}))


def last_event_at(store: Store, action: str):
    """When an event of `action` was last recorded, or None."""
    with store.read() as s:
        return s.exec(select(AuditEvent.created_at).where(AuditEvent.action == action)
                      .order_by(col(AuditEvent.id).desc()).limit(1)).first()


def last_label(store: Store, annotator: str) -> Label | None:
    """The annotator's newest label, or None."""
    with store.read() as s:
        return _last_label(s, annotator)


def undo_last_label(store: Store, annotator: str, label_id: int | None = None, lease_seconds: float | None = None,
                    overlap_default: int | None = None) -> Change:
    """Delete the annotator's own last label, so they may label that comparison again, unless a round has taken
    it. The comparison is settled (a done one reopens); with `lease_seconds` it is leased back to them when it
    has room, so their label view shows it again. `label_id`, when given, must be that last label."""
    with store.write() as s:
        label = _undoable(s, annotator, label_id)
        detail = {"comparison_id": label.comparison_id, "choice": label.choice, "shown_order": label.shown_order,
                  "source": label.source, "created_at": label.created_at.isoformat()}
        s.delete(label)
        s.flush()
        status = settle_status(s.connection(), label.comparison_id, overlap_default)
        if lease_seconds and has_room(s.connection(), label.comparison_id, annotator, overlap_default):
            s.exec(delete(Lease).where(Lease.annotator == annotator))
            s.add(Lease(comparison_id=label.comparison_id, annotator=annotator, shown_order=label.shown_order,
                        expires_at=utcnow() + timedelta(seconds=lease_seconds)))
            detail["leased_back"] = True
        s.add(AuditEvent(actor=annotator, action="undo", target="label", target_id=label.id,
                         detail={**detail, "statuses": {str(label.comparison_id): status}}))
        return Change("undo", "label", label.id, {label.comparison_id: status}, detail)


def _undoable(s: Session, annotator: str, label_id: int | None) -> Label:
    if label_id is not None:
        asked = s.get(Label, label_id)
        if asked is None:
            raise LookupError(f"no label with id {label_id}")
        if asked.annotator != annotator:
            raise NotYourLabel(f"label {label_id} is not yours; you can undo only your own last label")
    label = _last_label(s, annotator)
    if label is None:
        raise NothingToUndo("you have no label to undo")
    if label_id is not None and label.id != label_id:
        raise UndoRefused(f"label {label_id} is not your last label; only the last one can be undone")
    if label.discarded_at is not None:
        raise UndoRefused(f"your last label (on comparison {label.comparison_id}) was discarded by an operator")
    if _trained(s, label.comparison_id):
        raise UndoRefused(f"your last label (on comparison {label.comparison_id}) is already in a training round "
                          "and can no longer be undone")
    comparison = s.get(Comparison, label.comparison_id)
    if comparison.status == "retired":
        raise UndoRefused(f"comparison {label.comparison_id} was retired; its labels stay as they are")
    return label


def _last_label(s: Session, annotator: str) -> Label | None:
    return s.exec(select(Label).where(Label.annotator == annotator).order_by(col(Label.id).desc()).limit(1)).first()


def _trained(s: Session, comparison_id: int) -> bool:
    # comparison_ids is a JSON list per run, and runs are few: read them rather than query inside JSON per dialect.
    runs = s.exec(select(TrainingRun.comparison_ids).where(col(TrainingRun.status).in_(TRAINED_RUN_STATUSES)))
    return any(comparison_id in (ids or ()) for ids in runs.all())


def _target(s: Session, kind: str, target_id: int):
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    # An id past the database's integer range names nothing (and would overflow the driver).
    row = s.get(KINDS[kind], int(target_id)) if 0 < int(target_id) <= ID_MAX else None
    if row is None:
        raise LookupError(f"no {kind} with id {target_id}")
    return row


def _reason(reason: str | None, required: bool) -> str | None:
    reason = (reason or "").strip()
    if required and not reason:
        raise ValueError("give a reason: it is kept in the audit trail")
    if len(reason) > REASON_MAX:
        raise ValueError(f"the reason is longer than {REASON_MAX} characters")
    return reason or None
