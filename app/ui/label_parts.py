"""The label view's pieces as HTML: the response cards of each kind of comparison (a pair's two; a ranking's,
rating's or thumbs item's with their rank and Likert controls), my progress, my recent labels, a notice; and what
the page's script sends with a ranking or ratings. Plain functions of plain data, no Gradio; every untrusted text
goes through app.render or html.escape."""

import html
import json
import string
from typing import Any

from app.render import render_both, render_response
from app.services.errors import BadInput

HISTORY_SIZE = 5
SIDE_TEXT = {"left": "A better", "right": "B better", "tie": "Tie", "both_bad": "Both bad", "skip": "Skip",
             "ranked": "Ranked", "rated": "Rated", "up": "Good", "down": "Bad"}
SNIPPET_CHARS = 90
DISCARDED = ' <span class="pf-recent-discarded">(discarded by an operator)</span>'


def cards_html(comparison_id: int, left: str, right: str) -> str:
    """Responses A (shown left) and B (shown right) as two cards: side by side, stacked on a narrow screen. The
    comparison's id tells the page a new comparison arrived (assets.KEYBOARD_JS scrolls back to its top), its kind
    which controls the bar offers (assets.CSS)."""
    return (f'<div class="pf-cards pf-kind-pair" data-kind="pair" data-comparison="{int(comparison_id)}">'
            f'{render_response("A", left, "pf-left")}{render_response("B", right, "pf-right")}</div>')


def item_cards(item, rating: tuple[int, dict[str, str]] | None = None) -> str:
    """The cards of a handed-out comparison (data.queue.QueueItem) as its kind asks; `rating` is a rating item's
    form (labelling.rating_form: the top score, criterion: help text)."""
    if item.kind == "ranking":
        return ranking_html(item.comparison_id, item.responses)
    if item.kind == "rating":
        return rating_html(item.comparison_id, item.responses, *rating)
    if item.kind == "thumbs":
        return thumbs_html(item.comparison_id, item.responses[0].text)
    return cards_html(item.comparison_id, item.left_text, item.right_text)


def letter(index: int) -> str:
    """The name of the response shown `index`-th: A, B, ... Z, then 27, 28, ... (numbers are ranks and scores)."""
    return string.ascii_uppercase[index] if index < 26 else str(index + 1)


def _kind_cards(kind: str, comparison_id: int, k: int, guide: str, cards: str) -> str:
    # The guide is trusted text of ours; the status line is the page script's ("2 of 3 ranked").
    return (f'<div class="pf-cards pf-kind-{kind}" data-kind="{kind}" data-comparison="{int(comparison_id)}" '
            f'data-k="{int(k)}"><div class="pf-guide">{guide} '
            f'<span class="pf-given-status" aria-live="polite"></span></div>{cards}</div>')


def _picks(top: int, name: str) -> str:
    """Buttons 1..top that give a rank or a score; out of the Tab order: keyboard users type the number."""
    return "".join(f'<button type="button" class="pf-pick" data-pick="{n}" tabindex="-1" aria-pressed="false" '
                   f'aria-label="{html.escape(name)} {n}">{n}</button>' for n in range(1, top + 1))


def ranking_html(comparison_id: int, responses) -> str:
    """A ranking's k responses (data.queue.Shown, in the order shown) as a list of cards, each with its rank (shown
    large, '–' until given) and buttons 1..k; its header is the handle that drags it into order."""
    k = len(responses)
    cards = []
    for i, shown in enumerate(responses):
        name = letter(i)
        cards.append(
            f'<section class="pf-response pf-card pf-rank-card" data-slot data-position="{int(shown.position)}" '
            f'data-top="{k}" data-given="" tabindex="0" aria-label="Response {name}">'
            f'<header class="pf-card-head" draggable="true" title="Drag to move this response up or down">'
            f'<span class="pf-drag" aria-hidden="true">⠿</span><span class="pf-badge">{name}</span>'
            f'<span class="pf-pane-label">Response {name}</span>'
            f'<span class="pf-rank-shown">Rank <b class="pf-given-shown">–</b></span>'
            f'<span class="pf-picks" role="group" aria-label="Rank of response {name}">'
            f'{_picks(k, f"Rank response {name}")}</span></header>'
            f'<div class="pf-pane-body">{render_both(shown.text)}</div></section>')
    guide = (f"Rank the responses, 1 the best: type the outlined card's rank (1–{k}; click or Tab to choose "
             "another card) or click a card's numbers; the same number twice is a tie. Or drag cards by their "
             "header into order, best first. Enter submits.")
    return _kind_cards("ranking", comparison_id, k, guide, "".join(cards))


def rating_html(comparison_id: int, responses, scale: int, criteria: dict[str, str]) -> str:
    """A rating's k responses as cards, each followed by one 1..scale Likert row per criterion with its help text
    under its name (and as a tooltip)."""
    cards = []
    for i, shown in enumerate(responses):
        name = letter(i)
        rows = "".join(_likert_row(name, int(shown.position), scale, criterion, help_text)
                       for criterion, help_text in criteria.items())
        cards.append(f'<section class="pf-response pf-card pf-rate-card" data-position="{int(shown.position)}" '
                     f'aria-label="Response {name}"><header class="pf-card-head"><span class="pf-badge">{name}'
                     f'</span><span class="pf-pane-label">Response {name}</span></header>'
                     f'<div class="pf-pane-body">{render_both(shown.text)}</div>'
                     f'<div class="pf-rate-rows">{rows}</div></section>')
    guide = (f"Rate each response on every criterion, 1 the worst and {scale} the best: click a score, or type "
             f"the outlined row's (1–{scale}; click or Tab to choose another row). Enter submits.")
    return _kind_cards("rating", comparison_id, len(responses), guide, "".join(cards))


def _likert_row(name: str, position: int, scale: int, criterion: str, help_text: str) -> str:
    label = f"{criterion[:1].upper()}{criterion[1:]} of response {name}"
    title, help_text = html.escape(criterion[:1].upper() + criterion[1:]), html.escape(help_text)
    return (f'<div class="pf-rate-row" data-slot data-position="{position}" data-criterion="{html.escape(criterion)}" '
            f'data-top="{scale}" data-given="" tabindex="0" role="group" aria-label="{html.escape(label)}">'
            f'<div class="pf-rate-name" title="{help_text}"><span class="pf-criterion">{title}</span> '
            f'<span class="pf-help">{help_text}</span></div>'
            f'<div class="pf-picks pf-likert">{_picks(scale, f"{label}:")}</div></div>')


def thumbs_html(comparison_id: int, text: str) -> str:
    """A thumbs item's one response, to judge good or bad with the bar's buttons."""
    card = (f'<section class="pf-response pf-card" id="pf-thumbs-card" aria-label="The response">'
            f'<header class="pf-card-head"><span class="pf-pane-label">The response</span></header>'
            f'<div class="pf-pane-body">{render_both(text)}</div></section>')
    return _kind_cards("thumbs", comparison_id, 1, "Is this response good? Good [G] or Bad [D].", card)


def read_given(text: str | None) -> dict[str, Any]:
    """What the page's script sends with Submit ranking or Submit ratings (assets.KEYBOARD_JS, pfGiven):
    {"ranking": [rank of each position]} or {"ratings": {criterion: [score of each position]}}, as
    labelling.give_and_next's keyword arguments ({} for Good and Bad, which send nothing)."""
    if not text:
        return {}
    try:
        given = json.loads(text)
    except ValueError:
        given = None
    if not isinstance(given, dict) or not set(given) <= {"ranking", "ratings"}:
        raise BadInput("the page sent a ranking or ratings it cannot read: reload the page and give them again")
    return given


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
    """My recent labels as stored (data.recent.RecentLabel), as the history entries `remember` keeps."""
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
