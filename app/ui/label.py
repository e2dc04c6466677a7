"""The annotator's label view: the prompt, the responses in cards as the comparison's kind asks (a pair's A and B;
a ranking's k to rank, a rating's k to rate on each criterion, a thumbs item's one), the choice bar fixed to the
bottom of the screen, undo and my recent labels, an edit. Each event is one request calling one service
(app.services.labelling); a refusal shows once, as a notice beside the control that caused it."""

import functools
import time
from typing import NamedTuple

import gradio as gr

from app.render import render_markdown, render_messages, render_notice
from app.services import labelling
from app.services.errors import BadInput, ServiceError
from app.ui import label_parts as parts
from app.ui.common import EVENT, SERVER_FAILED, active_user, bind, log

# (side, button text, keyboard key, element id)
CHOICE_BUTTONS = (
    ("left", "A better", "a", "pf-btn-left"),
    ("right", "B better", "b", "pf-btn-right"),
    ("tie", "Tie", "t", "pf-btn-tie"),
    ("both_bad", "Both bad", "x", "pf-btn-both-bad"),
    ("skip", "Skip", "s", "pf-btn-skip"),
)
# The bar's buttons for the other kinds (choice, button text, key, element id); each shows only beside its kind's
# cards (assets.CSS), and Submit ranking/ratings only once every response has its rank or scores (KEYBOARD_JS).
KIND_BUTTONS = (
    ("ranked", "Submit ranking", "Enter", "pf-btn-rank"),
    ("rated", "Submit ratings", "Enter", "pf-btn-rate"),
    ("up", "Good", "g", "pf-btn-up"),
    ("down", "Bad", "d", "pf-btn-down"),
)
# What Submit ranking/ratings sends: the page's script reads the ranks or scores given in the cards into the
# hidden `given` input (the last of the click's inputs).
GIVEN_JS = "(...inputs) => [...inputs.slice(0, -1), window.pfGiven ? window.pfGiven() : '']"
UNDO_KEY, RAW_KEY = "u", "r"
EMPTY_QUEUE = "Nothing left to label right now. Thank you! New comparisons appear here as they are generated."
# A click is tens of milliseconds: Gradio's loading overlay would only flash over the cards.
QUIET = {**EVENT, "show_progress": "hidden"}
# A click straight to the handler (one POST), not through Gradio's queue (a POST and an event stream per click):
# the event is short, and the database, not a queue, is what coordinates annotators.
DIRECT = {**QUIET, "queue": False}
REFRESH_S = 5.0  # how often an empty label view looks for new comparisons


class View(NamedTuple):
    """The components every label-view event updates, in the order its handler returns them."""
    state: gr.State
    prompt: gr.HTML
    cards: gr.HTML
    progress: gr.HTML
    rationale: gr.Textbox
    edit_side: gr.Radio
    edited: gr.Textbox
    history: gr.State
    recent: gr.HTML
    bar_notice: gr.HTML
    edit_notice: gr.HTML
    timer: gr.Timer


NOTICE_SLOTS = ("bar", "edit")


# -- handlers: read the inputs, call one service, return the view ------------------------------------------------
def shown(slot: str):
    """A handler's refusal (a ServiceError) or failure becomes one notice in `slot`, next to the control that
    caused it; nothing else on the page changes, so no error badge covers the prompt, the cards or the editor."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ServiceError as e:
                message = str(e)
            except Exception:
                log.exception("label view event failed")
                message = SERVER_FAILED
            skipped = [gr.skip()] * (len(View._fields) - len(NOTICE_SLOTS) - 1)
            return (*skipped, *notices(slot, "warn", message), gr.skip())
        return wrapper
    return decorate


@shown("bar")
def load_view(app, worker, request: gr.Request):
    """The page opens (or reloads): the comparison I hold or the next, my progress and my recent labels."""
    view = labelling.open_view(app, active_user(app, request))
    return updates(view, parts.recalled(view.recent), note=_note(worker))


@shown("bar")
def refresh_empty(app, worker, state: dict | None, history: list | None, request: gr.Request):
    """While nothing is left to label, the timer looks again: comparisons arrive as the worker samples them."""
    if state:
        return tuple(gr.skip() for _ in View._fields)
    return updates(labelling.label_view(app, active_user(app, request)), history, note=_note(worker))


def _note(worker) -> str:
    return worker.sampling_note() if worker is not None else ""


@shown("bar")
def label_click(app, worker, side: str, state: dict | None, rationale: str, history: list | None, request: gr.Request):
    """A choice button (or its key): the label, the next comparison and my progress, in one transaction."""
    user = active_user(app, request)
    if not state:
        return updates(labelling.label_view(app, user, "Nothing to label right now."), history, "warn",
                       note=_note(worker))
    view = labelling.label_and_next(app, user, state["comparison_id"], side, state["shown_order"],
                                    (rationale or "").strip() or None, time.time() - state["shown_at"])
    return _clicked(view, history, side, state, worker)


@shown("bar")
def give_click(app, worker, choice: str, state: dict | None, rationale: str, history: list | None, given: str,
               request: gr.Request):
    """Submit ranking, Submit ratings, Good or Bad (or their keys): as label_click, with the ranks or scores the
    page's script read from the cards (`given`, JSON: label_parts.read_given)."""
    user = active_user(app, request)
    if not state:
        return updates(labelling.label_view(app, user, "Nothing to label right now."), history, "warn",
                       note=_note(worker))
    view = labelling.give_and_next(app, user, state["comparison_id"], state["shown_order"], choice,
                                   **parts.read_given(given), rationale=(rationale or "").strip() or None,
                                   time_spent_s=time.time() - state["shown_at"])
    return _clicked(view, history, choice, state, worker)


def _clicked(view: labelling.LabelView, history: list | None, clicked: str, state: dict, worker) -> tuple:
    if view.labelled is not None:
        history = parts.remember(history, view.labelled.label_id, clicked, state.get("snippet", ""))
    return updates(view, history, "warn", note=_note(worker))  # a notice here is a refusal: taken meanwhile, ...


@shown("bar")
def undo_label(app, worker, history: list | None, request: gr.Request):
    """Undo my last label: its comparison comes back to label again."""
    view = labelling.undo_and_view(app, active_user(app, request))
    if view.undone is None:
        return updates(view, history, "warn", note=_note(worker))
    undone = next((h for h in history or [] if h["label_id"] == view.undone), None)
    if undone:
        view.notice = f"Undone: your “{undone['choice']}” on the comparison now shown; label it again."
    return updates(view, parts.forget(history, view.undone), "info", note=_note(worker))


@shown("edit")
def submit_edit(app, worker, state: dict | None, edit_side: str, edited: str, rationale: str, history: list | None,
                request: gr.Request):
    """The annotator's correction of response A or B becomes the preferred response of a new pair."""
    user = active_user(app, request)
    if not state:
        raise BadInput("There is no comparison to edit right now.")
    view = labelling.edit_and_next(app, user, state["comparison_id"], edited, "left" if edit_side == "A" else "right",
                                   state["shown_order"], (rationale or "").strip() or None,
                                   time.time() - state["shown_at"])
    # Saved: said in the bar, like every outcome that brings the next comparison (the page scrolls up to it).
    history = parts.remember(history, None, f"edited {edit_side}", state.get("snippet", ""))
    return updates(view, history, "info", note=_note(worker))


def edit_source(state: dict | None, edit_side: str):
    # Prefills the editor with the response being corrected; reads the session state only.
    if not state:
        return ""
    return state["left"] if edit_side == "A" else state["right"]


# -- the view as updates ----------------------------------------------------------------------------------------------
def updates(view: labelling.LabelView, history: list | None, kind: str = "info", slot: str = "bar",
            note: str = "") -> tuple:
    """Every View component's new value for `view`, its notice (if any) shown in `slot`; `note` is what the
    sampling worker is doing, shown beside my progress. The timer looks again only while nothing is shown."""
    history = history or []
    item = view.item
    progress = parts.progress_html(view.progress, note)
    tail = (history, parts.history_html(history), *notices(slot, kind, view.notice),
            gr.Timer(active=item is None))
    if item is None:
        return None, render_notice(EMPTY_QUEUE), "", progress, "", "A", "", *tail
    state = {"comparison_id": item.comparison_id, "shown_order": item.shown_order, "kind": item.kind,
             "left": item.left_text, "right": item.right_text, "shown_at": time.time(),
             "snippet": parts.snippet(item.messages)}
    cards = parts.item_cards(item, view.rating)
    return state, render_messages(item.messages), cards, progress, "", "A", item.left_text, *tail


def notices(slot: str, kind: str, message: str) -> tuple[str, ...]:
    """The notice slots' HTML: `message` in `slot`, the others cleared (a notice shows once)."""
    return tuple(parts.notice_html(message, kind) if name == slot else "" for name in NOTICE_SLOTS)


# -- layout and wiring ------------------------------------------------------------------------------------------
def build(blocks: gr.Blocks, app, worker=None) -> None:
    """The label tab's contents and events (inside the tab's context); `worker`, the in-server sampling worker,
    says what it samples beside my progress."""
    view, (buttons, kind_buttons, given), undo, raw, edit_button = _layout(app)
    blocks.load(bind(load_view, app, worker), None, view, **QUIET)
    view.timer.tick(bind(refresh_empty, app, worker), [view.state, view.history], view, **QUIET)
    for button, (side, *_rest) in zip(buttons, CHOICE_BUTTONS, strict=True):
        button.click(bind(label_click, app, worker, side), [view.state, view.rationale, view.history], view,
                     **DIRECT)
    for button, (choice, *_rest) in zip(kind_buttons, KIND_BUTTONS, strict=True):
        button.click(bind(give_click, app, worker, choice), [view.state, view.rationale, view.history, given], view,
                     js=GIVEN_JS if choice in ("ranked", "rated") else None, **DIRECT)
    undo.click(bind(undo_label, app, worker), view.history, view, **DIRECT)
    edit_button.click(bind(submit_edit, app, worker), [view.state, view.edit_side, view.edited, view.rationale,
                                               view.history], view, **QUIET)
    # .input, not .change: a new comparison resets the radio without a second request.
    view.edit_side.input(edit_source, [view.state, view.edit_side], view.edited, **QUIET)
    # Raw text or rendered: both are in the page already, so the toggle is a class on <body>, with no request.
    raw.change(None, raw, None, js="(raw) => { document.body.classList.toggle('pf-show-raw', raw); return []; }",
               **EVENT)


def _layout(app):
    state, history = gr.State(None), gr.State([])
    with gr.Row(elem_id="pf-toolbar", equal_height=True):
        progress = gr.HTML(elem_id="pf-progress", js_on_load=None)
        raw = gr.Checkbox(label=f"Raw text [{RAW_KEY.upper()}]", elem_id="pf-raw", container=False, scale=0,
                          min_width=130)
    prompt = gr.HTML(elem_id="pf-prompt", js_on_load=None)
    cards = gr.HTML(elem_id="pf-cards", js_on_load=None)
    bar_notice, rationale, buttons, undo = _choice_bar()
    recent = gr.HTML(elem_id="pf-recent", js_on_load=None)
    with gr.Accordion("Edit a response (your correction becomes a new preferred response)", open=False,
                      elem_id="pf-edit"):
        edit_side = gr.Radio(["A", "B"], value="A", label="Response to correct", elem_id="pf-edit-side")
        edited = gr.Textbox(label="Corrected text (starts as the response chosen above)", lines=8,
                            elem_id="pf-edit-text")
        with gr.Row(elem_id="pf-edit-row"):
            edit_button = gr.Button("Save edit as preferred", elem_id="pf-btn-edit")
            edit_notice = gr.HTML(elem_id="pf-edit-notice", js_on_load=None)
    with gr.Accordion("Guidelines", open=False, elem_id="pf-guidelines"):
        gr.HTML(render_markdown(labelling.guidelines(app)), js_on_load=None)
    timer = gr.Timer(REFRESH_S, active=False)
    view = View(state, prompt, cards, progress, rationale, edit_side, edited, history, recent, bar_notice,
                edit_notice, timer)
    return view, buttons, undo, raw, edit_button


def key_name(key: str) -> str:
    """A shortcut as its button names it: a letter in capitals, a named key (Enter) as it is."""
    return key.upper() if len(key) == 1 else key


def _choice_bar():
    """The bar fixed to the bottom of the screen: notices, the rationale, the choice buttons of every kind (those
    of the kind shown show), Undo; and the hidden input Submit ranking/ratings fill (GIVEN_JS)."""
    with gr.Column(elem_id="pf-bar"):
        bar_notice = gr.HTML(elem_id="pf-bar-notice", js_on_load=None)
        with gr.Row(elem_id="pf-bar-row"):
            rationale = gr.Textbox(show_label=False, placeholder="Rationale (optional)", lines=1, max_lines=3,
                                   container=False, elem_id="pf-rationale")
            buttons = [gr.Button(f"{text} [{key_name(key)}]", elem_id=elem, size="md",
                                 variant="secondary" if side in ("tie", "both_bad", "skip") else "primary")
                       for side, text, key, elem in (*KIND_BUTTONS, *CHOICE_BUTTONS)]
            undo = gr.Button(f"Undo [{UNDO_KEY.upper()}]", elem_id="pf-btn-undo", size="md", variant="secondary")
        given = gr.Textbox(visible=False, elem_id="pf-given")
    kinds = len(KIND_BUTTONS)
    return bar_notice, rationale, (buttons[kinds:], buttons[:kinds], given), undo
