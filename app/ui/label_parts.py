"""The label view's pieces as HTML: the response cards, my progress, my recent labels, a notice. Plain functions of
plain data, no Gradio; every untrusted text goes through app.render or html.escape."""

import html
from typing import Any

from app.render import render_response

HISTORY_SIZE = 5
SIDE_TEXT = {"left": "A better", "right": "B better", "tie": "Tie", "both_bad": "Both bad", "skip": "Skip"}
SNIPPET_CHARS = 90
DISCARDED = ' <span class="pf-recent-discarded">(discarded by an operator)</span>'


def cards_html(comparison_id: int, left: str, right: str) -> str:
    """Responses A (shown left) and B (shown right) as two cards: side by side, stacked on a narrow screen. The
    comparison's id tells the page a new comparison arrived (assets.KEYBOARD_JS scrolls back to its top)."""
    return (f'<div class="pf-cards" data-comparison="{int(comparison_id)}">{render_response("A", left, "pf-left")}'
            f'{render_response("B", right, "pf-right")}</div>')


def progress_html(progress: dict[str, int], note: str = "") -> str:
    """My labels today against what is left for me, as text and a bar; `note`, what the sampling worker is doing
    ('sampling 8 of 46 prompts from v0'), beside them."""
    done, left, open_ = (int(progress[k]) for k in ("labelled_today", "left", "open"))
    sampling = (f'<span class="pf-sampling"><span class="pf-sep"> &nbsp;·&nbsp; </span>New: {html.escape(note)}'
                f'</span>' if note else "")
    return (f'<div class="pf-progress-text">My labels today: <strong>{done}</strong> &nbsp;·&nbsp; '
            f'Left for me: <strong>{left}</strong> &nbsp;·&nbsp; Open: <strong>{open_}</strong>{sampling}</div>'
            f'<progress class="pf-progress-bar" value="{done}" max="{max(done + left, 1)}" '
            f'aria-label="My labels today against those left for me"></progress>')


def notice_html(message: str, kind: str = "info") -> str:
    """A notice beside a control; `kind` is info or warn. Empty when there is nothing to say."""
    if not message:
        return ""
    role = "alert" if kind == "warn" else "status"
    sentence = message[:1].upper() + message[1:]  # the layers below word their refusals mid-sentence
    return f'<div class="pf-inline pf-inline-{kind}" role="{role}">{html.escape(sentence)}</div>'


def snippet(messages: list[dict[str, Any]]) -> str:
    """The prompt's last user turn, shortened: enough to recognise it in my recent labels."""
    users = [m for m in messages if m.get("role") == "user"] or messages
    text = " ".join(str(users[-1].get("content", "")).split()) if users else ""
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS - 1] + "…"


def remember(history: list | None, label_id: int | None, side: str, prompt: str) -> list[dict[str, Any]]:
    """My recent labels with `label_id` first (a repeated click is one label), at most HISTORY_SIZE. `side` is
    what was clicked (left, right, tie, ...) or, for an edit, 'edited A' or 'edited B'."""
    entry = {"label_id": label_id, "choice": SIDE_TEXT.get(side, side[:1].upper() + side[1:]), "prompt": prompt}
    return [entry, *forget(history, label_id)][:HISTORY_SIZE]


def recalled(recent: list | None) -> list[dict[str, Any]]:
    """My recent labels as stored (data.queue.RecentLabel), as the history entries `remember` keeps."""
    return [{"label_id": r.label_id, "choice": "Edited" if r.side == "edit" else SIDE_TEXT.get(r.side, r.side),
             "prompt": r.prompt, "discarded": r.discarded} for r in recent or []]


def forget(history: list | None, label_id: int | None) -> list[dict[str, Any]]:
    return [h for h in history or [] if label_id is None or h["label_id"] != label_id]


def history_html(history: list[dict[str, Any]]) -> str:
    """My recent labels, newest first; the newest is the one Undo takes back."""
    if not history:
        return ""
    items = "".join(f'<li><span class="pf-recent-choice">{html.escape(h["choice"])}</span> '
                    f'<span class="pf-recent-prompt">{html.escape(h["prompt"])}</span>'
                    f'{DISCARDED if h.get("discarded") else ""}</li>' for h in history)
    return f'<div class="pf-recent"><div class="pf-recent-head">My recent labels</div><ol>{items}</ol></div>'
