"""A person's recent labels as they gave them (what they clicked, when, on which prompt): what their label view
lists, after a reload too."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import col, select

from data.models import Comparison, Label, Prompt
from data.store import Store


@dataclass(frozen=True)
class RecentLabel:
    """One of a person's labels as they gave it: `side` is what they clicked (left is response A as shown) or
    'edit' for the pair their rewrite made; `discarded` when an operator discarded it since."""
    label_id: int
    comparison_id: int
    side: str
    created_at: datetime
    prompt: str  # the prompt's last user turn, shortened
    discarded: bool


PREVIEW_CHARS = 90


def recent_labels(store: Store, annotator: str, limit: int = 5) -> list[RecentLabel]:
    """`annotator`'s last `limit` human labels, newest first, discarded ones included (and marked)."""
    q = (select(Label, Comparison.source, Prompt.messages)
         .join(Comparison, col(Comparison.id) == Label.comparison_id)
         .join(Prompt, col(Prompt.id) == Comparison.prompt_id)
         .where(Label.annotator == annotator, Label.source == "human")
         .order_by(col(Label.created_at).desc(), col(Label.id).desc()).limit(limit))
    with store.read() as s:
        rows = s.exec(q).all()
    return [RecentLabel(label.id, label.comparison_id, "edit" if source == "edit" else _side(label),
                        _aware(label.created_at), prompt_preview(messages), label.discarded_at is not None)
            for label, source, messages in rows]


def _side(label: Label) -> str:
    if label.choice not in ("a", "b"):
        return label.choice
    return "left" if (label.choice == "a") == (label.shown_order == "ab") else "right"


def prompt_preview(messages: list[dict[str, Any]], chars: int = PREVIEW_CHARS) -> str:
    """A prompt's last user turn on one line, shortened: enough to recognise it."""
    users = [m for m in messages or [] if m.get("role") == "user"] or messages or []
    text_ = " ".join(str(users[-1].get("content", "")).split()) if users else ""
    return text_ if len(text_) <= chars else text_[:chars - 1] + "…"


def _aware(t: datetime) -> datetime:
    # SQLite hands datetimes back naive; every stored time is UTC.
    return t if t.tzinfo else t.replace(tzinfo=UTC)
