"""Curating the data, as an operator does it: discard and restore prompts, comparisons and labels, look up what
an id stands for, and read the audit trail. Each function returns plain data with a sentence to show."""

from typing import Any

from app.services.errors import refusals
from app.services.workdir import App
from data import curation as data_curation

KINDS = tuple(data_curation.KINDS)  # what can be discarded: prompt, comparison, label


def discard(app: App, kind: str, target_id: int, reason: str, actor: str) -> dict[str, Any]:
    """Discard a prompt, comparison or label (reason required): never labelled, trained on or exported again."""
    with refusals(data_curation.CurationConflict):
        change = data_curation.discard(app.store, kind, target_id, reason, actor,
                                  overlap_default=app.settings.labelling.overlap)
    return _result(change, f"Discarded {kind} {change.target_id}")


def restore(app: App, kind: str, target_id: int, actor: str, reason: str | None = None) -> dict[str, Any]:
    """Bring a discarded prompt, comparison or label back."""
    with refusals(data_curation.CurationConflict):
        change = data_curation.restore(app.store, kind, target_id, actor, reason,
                                  overlap_default=app.settings.labelling.overlap)
    return _result(change, f"Restored {kind} {change.target_id}")


def _result(change, head: str) -> dict[str, Any]:
    parts = [head]
    if change.detail.get("leases_dropped"):
        parts.append(f"{change.detail['leases_dropped']} annotator lease(s) released")
    parts += [f"comparison {cid} is now {status}" for cid, status in change.statuses.items() if status]
    return {"action": change.action, "kind": change.kind, "id": change.target_id,
            "statuses": {str(k): v for k, v in change.statuses.items()}, "message": "; ".join(parts) + "."}


@refusals()
def show(app: App, kind: str, target_id: int) -> dict[str, Any]:
    """What a prompt, comparison or label id stands for (texts, state, labels), before discarding it."""
    return data_curation.describe(app.store, kind, target_id)


def show_text(item: dict[str, Any]) -> str:
    """`show`'s result as plain lines for a terminal."""
    head = f"{item['kind']} {item['id']}" + (f" (discarded: {item['discarded']})" if item["discarded"] else "")
    if item["kind"] == "label":
        lines = [f"{head}: {item['annotator']} ({item['source']}) {label_verb(item)}"]
        if item["rationale"]:
            lines.append(f"  rationale: {item['rationale']}")
        return "\n".join(lines + [""] + show_text(item["comparison"]).splitlines())
    lines = [head + (f", {item['status']}, from {item['origin'] or item['source']}" if "status" in item else
                     f", from {item['source']}, {len(item['comparisons'])} comparison(s)")]
    lines += [f"  {m['role']}: {m['content']}" for m in item["messages"]]
    if "status" in item:
        lines += [f"  {name}: {text}" for name, text in response_names(item)]
        lines += [f"  label {x['id']}: {x['annotator']} ({x['source']}) {label_says(x)}"
                  + (f" (discarded: {x['discarded']})" if x["discarded"] else "") for x in item["labels"]]
    return "\n".join(lines)


def response_names(item: dict[str, Any]) -> list[tuple[str, str]]:
    """A described comparison's responses with the names its labels use: a pair's A and B, else #1 .. #k by
    position (what a ranking's ranks and a rating's scores are listed by)."""
    if item.get("comparison_kind", "pair") == "pair":
        return [("A", item["response_a"]), ("B", item["response_b"])]
    return [(f"#{i}", text) for i, text in enumerate(item["responses"], 1)]


def label_verb(label: dict[str, Any]) -> str:
    """label_says as a sentence's verb: 'chose b', 'ranked #1 2, ...', 'rated ...'."""
    said = label_says(label)
    return f"chose {said}" if said == label["choice"] else said


def label_says(label: dict[str, Any]) -> str:
    """What a described label says, in words: a choice, or a ranking's ranks and a rating's scores by position."""
    if label.get("ranking"):
        return "ranked " + ", ".join(f"#{i} {rank}" for i, rank in enumerate(label["ranking"], 1))
    if label.get("ratings"):
        return "rated " + "; ".join(f"{criterion} " + ", ".join(map(str, scores))
                                    for criterion, scores in label["ratings"].items())
    return label["choice"]


def audit_trail(app: App, limit: int = 50) -> list[dict[str, Any]]:
    """The newest audit events as plain rows: when, who, action, target, id, reason, detail."""
    return [{"when": e.created_at.isoformat(timespec="seconds"), "actor": e.actor, "action": e.action,
             "target": e.target, "id": e.target_id, "reason": e.reason or "", "detail": e.detail}
            for e in data_curation.audit_events(app.store, limit)]
