"""Adjudication, as a reviewer or an operator does it: the queue of comparisons whose people disagree or whose judge
contradicts the people's majority, one comparison in full, and a decision that resolves it (and may make it a gold
question). Plain data with a sentence to show; each front end checks the caller's role (accounts.can_adjudicate)."""

from typing import Any

from app.services.errors import refusals
from app.services.workdir import App
from data import adjudication as data_adjudication
from data.adjudication import DISAGREEMENT, JUDGE_CONTRADICTS

CHOICES = ("a", "b", "tie", "both_bad")
CHOICE_TEXT = {"a": "A better", "b": "B better", "tie": "Tie", "both_bad": "Both bad", "skip": "Skip"}
REASON_TEXT = {DISAGREEMENT: "people disagree", JUDGE_CONTRADICTS: "a judge contradicts the majority"}
LIST_MAX = 200  # queue entries one listing shows; the counts cover the whole queue
SNIPPET_CHARS = 90


def queue(app: App, limit: int = 50) -> dict[str, Any]:
    """The adjudication queue, newest disagreement first (see data.adjudication.queue): its counts, the first
    `limit` entries and a sentence saying how many wait and why."""
    counts = data_adjudication.queue_counts(app.store)
    entries = data_adjudication.queue(app.store, min(max(1, int(limit)), LIST_MAX))
    return {"counts": counts, "items": [_entry(e) for e in entries], "message": counts_sentence(counts)}


def counts_sentence(counts: dict[str, int]) -> str:
    total = counts["total"]
    if not total:
        return "Nothing to adjudicate: no comparison's labels disagree."
    parts = [f"{counts[reason]} where {text}" for reason, text in REASON_TEXT.items() if counts[reason]]
    return f"{total} comparison{'s' if total != 1 else ''} to adjudicate ({', '.join(parts)}); newest first."


def _entry(e) -> dict[str, Any]:
    return {"comparison_id": e.comparison_id, "reasons": list(e.reasons), "why": why(e.reasons),
            "counts": e.counts, "labels": sum(e.counts.values()), "majority": e.majority,
            "last_label_at": e.last_label_at.isoformat(timespec="seconds") if e.last_label_at else None,
            "prompt": snippet(e.messages)}


def why(reasons) -> str:
    return "; ".join(REASON_TEXT[r] for r in reasons) or "not in the queue"


def snippet(messages: list[dict[str, Any]]) -> str:
    """The prompt's last user turn, shortened: enough to recognise it in a list."""
    users = [m for m in messages or [] if m.get("role") == "user"] or messages or []
    text = " ".join(str(users[-1].get("content", "")).split()) if users else ""
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS - 1] + "…"


@refusals(data_adjudication.AdjudicationRefused)
def item(app: App, comparison_id: int) -> dict[str, Any]:
    """One comparison in full: prompt, responses, every label (who, choice, source, rationale, when), each
    judge's choice, why it is in the queue, and the decision if there is one."""
    found = data_adjudication.item(app.store, comparison_id)
    return {"comparison_id": found.comparison_id, "status": found.status, "messages": found.messages,
            "response_a": found.response_a, "response_b": found.response_b,
            "labels": [_label(x) for x in found.labels], "reasons": list(found.reasons), "why": why(found.reasons),
            "counts": found.counts, "majority": found.majority, "judge_choices": found.judge_choices,
            "gold_choice": found.gold_choice, "decision": _label(found.decision) if found.decision else None}


def first_item(app: App) -> dict[str, Any] | None:
    """The queue's first comparison in full, or None when the queue is empty."""
    entries = data_adjudication.queue(app.store, 1)
    return item(app, entries[0].comparison_id) if entries else None


def _label(x) -> dict[str, Any]:
    return {"label_id": x.label_id, "annotator": x.annotator, "source": x.source, "choice": x.choice,
            "choice_text": CHOICE_TEXT.get(x.choice, x.choice), "rationale": x.rationale,
            "created_at": x.created_at.isoformat(timespec="seconds"), "discarded": x.discarded}


@refusals(data_adjudication.AdjudicationRefused)
def decide(app: App, reviewer: str, comparison_id: int, choice: str, rationale: str | None = None,
           make_gold: bool = False) -> dict[str, Any]:
    """`reviewer`'s decision on a comparison (a|b|tie|both_bad): stored as its adjudicated label, which resolves
    it; deciding again replaces the decision. With `make_gold` the comparison also becomes a gold question whose
    answer is `choice` (data.quality.mark_gold). Both are in the audit trail."""
    if choice not in CHOICES:
        raise ValueError(f"a decision is one of {', '.join(CHOICES)}, not {choice!r}")
    decision = data_adjudication.decide(app.store, comparison_id, choice, reviewer, rationale)
    if make_gold:
        from data.quality import mark_gold

        mark_gold(app.store, decision.comparison_id, choice, reviewer, reason="decided in adjudication")
    left = data_adjudication.queue_counts(app.store)["total"]
    return {"comparison_id": decision.comparison_id, "label_id": decision.label_id, "choice": choice,
            "status": decision.status, "replaced": decision.replaced, "gold": bool(make_gold), "left": left,
            "message": _decided_sentence(decision, make_gold, left)}


def _decided_sentence(decision, make_gold: bool, left: int) -> str:
    parts = [f"Decided “{CHOICE_TEXT[decision.choice]}” on comparison {decision.comparison_id}: it is resolved"]
    if decision.replaced:
        who = decision.replaced["annotator"].removeprefix(data_adjudication.PREFIX)
        parts.append(f"replacing {who}'s “{CHOICE_TEXT.get(decision.replaced['choice'])}”")
    if make_gold:
        parts.append("and is now a gold question with that answer")
    return " ".join(parts) + f". {left} left in the queue."
