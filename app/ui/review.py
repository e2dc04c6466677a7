"""The review tab, for reviewers and operators: the adjudication queue (how many wait and why, and a table), one
comparison in full (the prompt, both responses, every label with its rationale) and the decision buttons. Every event
checks the caller's role on the server; every untrusted text goes through app.render or html.escape."""

import html
from typing import Any, NamedTuple

import gradio as gr

from app.render import render_messages, render_response
from app.services import adjudication
from app.services.errors import ServiceError
from app.ui.common import EVENT, bind, reviewer_only, section, user_name

# (choice, button text, element id)
DECISIONS = (
    ("a", "A better", "pf-review-a"),
    ("b", "B better", "pf-review-b"),
    ("tie", "Tie", "pf-review-tie"),
    ("both_bad", "Both bad", "pf-review-both-bad"),
)
# "people": their counted labels per choice, A / B / tie / both bad.
QUEUE_COLUMNS = ["id", "why", "people", "last label (UTC)", "prompt"]
NOTHING = "Nothing to adjudicate right now: no comparison's labels disagree."
QUIET = {**EVENT, "show_progress": "hidden"}


class Screen(NamedTuple):
    """The components every review event updates, in the order its handler returns them."""
    current: gr.State  # the comparison id shown, or None
    summary: gr.HTML
    table: gr.Dataframe
    head: gr.HTML
    prompt: gr.HTML
    cards: gr.HTML
    labels: gr.HTML
    rationale: gr.Textbox
    gold: gr.Checkbox
    result: gr.HTML


# -- handlers: each reads its inputs, calls the adjudication service and returns the whole screen -------------------
@reviewer_only
def open_review(app, current: int | None, request: gr.Request):
    """The tab opens, or Refresh: the queue, and the comparison shown (the queue's first when none is)."""
    return screen(app, current)


@reviewer_only
def show_next(app, request: gr.Request):
    """Next in queue: the queue's first comparison (a decided one has left it)."""
    return screen(app, None)


@reviewer_only
def show_selected(app, evt: gr.SelectData, request: gr.Request):
    """A row of the queue's table picked: that comparison."""
    row = evt.row_value or []
    return screen(app, int(row[0])) if row and str(row[0]).isdigit() else tuple(gr.skip() for _ in Screen._fields)


@reviewer_only
def show_id(app, comparison_id: float | None, request: gr.Request):
    """Any comparison by id, decided ones too (to decide again)."""
    if comparison_id is None or comparison_id < 1 or comparison_id != int(comparison_id):
        return _refused("Give the comparison's id (a whole number, 1 or more).")
    try:
        return screen(app, int(comparison_id), strict=True)
    except ServiceError as e:
        return _refused(str(e))


@reviewer_only
def decide_click(app, choice: str, current: int | None, rationale: str, make_gold: bool, request: gr.Request):
    """A decision button: the decision stored, the queue refreshed, the comparison shown again with its decision."""
    if current is None:
        return _refused("No comparison is shown: pick one from the queue first.")
    try:
        done = adjudication.decide(app, user_name(request), int(current), choice, (rationale or "").strip() or None,
                                   bool(make_gold))
    except ServiceError as e:
        return _refused(str(e))
    return screen(app, int(current), result=notice(done["message"], "info"))


def _refused(message: str) -> tuple:
    """Only the result slot changes: the refusal, beside the buttons."""
    return (*(gr.skip() for _ in Screen._fields[:-1]), notice(message, "warn"))


# -- the screen as updates ------------------------------------------------------------------------------------------
def screen(app, comparison_id: int | None, result: str = "", strict: bool = False) -> tuple:
    """Every Screen component's new value: the queue and comparison `comparison_id` (the queue's first when None or
    gone, unless `strict`); the rationale and the gold box start empty for each comparison shown."""
    listed = adjudication.queue(app)
    shown = None
    if comparison_id is not None:
        try:
            shown = adjudication.item(app, comparison_id)
        except ServiceError:  # gone meanwhile (a bad id typed in is said, `strict`)
            if strict:
                raise
    if shown is None and listed["items"]:
        shown = adjudication.item(app, listed["items"][0]["comparison_id"])
    summary = f'<div class="pf-review-summary">{html.escape(listed["message"])}</div>'
    table = queue_frame(listed["items"])
    if shown is None:
        return None, summary, table, f'<div class="pf-notice">{html.escape(NOTHING)}</div>', "", "", "", "", False, \
            result
    return (shown["comparison_id"], summary, table, head_html(shown), render_messages(shown["messages"]),
            cards_html(shown), labels_html(shown["labels"]), "", False, result)


def queue_frame(items: list[dict[str, Any]]):
    import pandas as pd

    rows = [[e["comparison_id"], e["why"], " / ".join(str(e["counts"][c]) for c, _, _ in DECISIONS),
             (e["last_label_at"] or "")[:19].replace("T", " "), e["prompt"]] for e in items]
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)


def head_html(item: dict[str, Any]) -> str:
    """What the comparison is and why it is here: its state, people's counts and majority, the judges' choices,
    the decision so far."""
    text = adjudication.CHOICE_TEXT
    counts = ", ".join(f"{text[c]} {n}" for c, n in item["counts"].items() if n) or "none"
    facts = [f"<b>Comparison {int(item['comparison_id'])}</b> ({html.escape(item['status'])})",
             f"why: {html.escape(item['why'])}", f"people: {html.escape(counts)}",
             f"majority: {html.escape(text.get(item['majority'], 'none'))}"]
    facts += [f"{html.escape(judge)} chose <b>{html.escape(text.get(choice, choice))}</b>"
              for judge, choice in item["judge_choices"].items()]
    if item["gold_choice"]:
        facts.append(f"gold question, answer <b>{html.escape(text.get(item['gold_choice'], ''))}</b>")
    decision = item["decision"]
    again = "" if item["gold_choice"] else "; choose again to change it"
    decided = (f'<div class="pf-review-decided">Decided <b>{html.escape(decision["choice_text"])}</b> by '
               f'{html.escape(decision["annotator"].removeprefix("adjudication:"))}{again}.</div>'
               if decision else "")
    return f'<div class="pf-review-head">{" &middot; ".join(facts)}</div>{decided}'


def cards_html(item: dict[str, Any]) -> str:
    """Responses A and B as the label view shows them: side by side, stacked on a narrow screen."""
    return (f'<div class="pf-cards">{render_response("A", item["response_a"])}'
            f'{render_response("B", item["response_b"])}</div>')


def labels_html(labels: list[dict[str, Any]]) -> str:
    """Every label, oldest first: choice, who, source, when, rationale; skips and discarded labels dimmed."""
    if not labels:
        return '<div class="pf-review-labels"><div class="pf-recent-head">No labels</div></div>'
    rows = "".join(_label_html(x) for x in labels)
    return (f'<div class="pf-review-labels"><div class="pf-recent-head">Labels ({len(labels)})</div>'
            f'<ul class="pf-labels">{rows}</ul></div>')


def _label_html(x: dict[str, Any]) -> str:
    out = x["discarded"] is not None or x["choice"] == "skip"
    note = f' &middot; discarded: {html.escape(x["discarded"])}' if x["discarded"] is not None else ""
    rationale = (f'<div class="pf-label-rationale">{html.escape(x["rationale"])}</div>' if x["rationale"]
                 else '<div class="pf-label-rationale pf-label-none">no rationale</div>')
    return (f'<li class="pf-label pf-label-{html.escape(x["source"])}{" pf-label-out" if out else ""}">'
            f'<span class="pf-label-choice">{html.escape(x["choice_text"])}</span> by '
            f'<span class="pf-label-who">{html.escape(x["annotator"])}</span> '
            f'<span class="pf-label-meta">{html.escape(x["source"])} &middot; '
            f'{html.escape(x["created_at"][:19].replace("T", " "))} UTC{note}</span>{rationale}</li>')


def notice(message: str, kind: str) -> str:
    role = "alert" if kind == "warn" else "status"
    return f'<div class="pf-inline pf-inline-{kind}" role="{role}">{html.escape(message)}</div>' if message else ""


# -- layout and wiring ----------------------------------------------------------------------------------------------
def build(app, tab: gr.Tab) -> None:
    """The review tab's contents and events (inside the tab's context)."""
    view, refresh, next_button, open_id, open_button, buttons = _layout()
    tab.select(bind(open_review, app), view.current, view, **EVENT)
    refresh.click(bind(open_review, app), view.current, view, **EVENT)
    next_button.click(bind(show_next, app), None, view, **EVENT)
    open_button.click(bind(show_id, app), open_id, view, **EVENT)
    view.table.select(bind(show_selected, app), None, view, **EVENT)
    for button, (choice, _text, _elem) in zip(buttons, DECISIONS, strict=True):
        button.click(bind(decide_click, app, choice), [view.current, view.rationale, view.gold], view, **QUIET)


def _layout():
    current = gr.State(None)
    with section("Adjudication queue", elem_id="pf-review-queue"):
        summary = gr.HTML(elem_id="pf-review-summary", js_on_load=None)
        with gr.Row(elem_id="pf-review-nav", equal_height=True):
            refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90, elem_id="pf-review-refresh")
            next_button = gr.Button("Next in queue", size="sm", scale=0, min_width=130, elem_id="pf-review-next")
            open_id = gr.Number(label="Comparison id", value=None, precision=0, scale=0, min_width=140,
                                elem_id="pf-review-id")
            open_button = gr.Button("Open", size="sm", scale=0, min_width=80, elem_id="pf-review-open")
        table = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, elem_id="pf-review-table", show_label=False,
                             wrap=True, max_height=320)
        gr.Markdown("**people**: their labels A / B / tie / both bad. Pick a row to open that comparison.",
                    elem_id="pf-review-table-help")
    with section("Comparison", elem_id="pf-review-item"):
        head = gr.HTML(elem_id="pf-review-head", js_on_load=None)
        prompt = gr.HTML(elem_id="pf-review-prompt", js_on_load=None)
        cards = gr.HTML(elem_id="pf-review-cards", js_on_load=None)
        labels = gr.HTML(elem_id="pf-review-labels", js_on_load=None)
        with gr.Column(elem_id="pf-review-decide"):
            rationale = gr.Textbox(label="Your rationale (optional)", lines=2, max_lines=6,
                                   elem_id="pf-review-rationale")
            gold = gr.Checkbox(label="Also make it a gold question with this answer", elem_id="pf-review-gold")
            with gr.Row(elem_id="pf-review-buttons"):
                buttons = [gr.Button(text, elem_id=elem, variant="primary" if choice in ("a", "b") else "secondary")
                           for choice, text, elem in DECISIONS]
            result = gr.HTML(elem_id="pf-review-result", js_on_load=None)
    view = Screen(current, summary, table, head, prompt, cards, labels, rationale, gold, result)
    return view, refresh, next_button, open_id, open_button, buttons
