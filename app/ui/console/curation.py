"""The console's curation panel: look up a prompt, comparison or label by id, discard or restore it with a reason,
make a comparison a gold question (or an ordinary one again), and the audit trail. Every text shown from the
database is untrusted and escaped or rendered safely."""

import html
from typing import Any

import gradio as gr

from app.render import render_messages, render_response
from app.services import curation, quality
from app.services.errors import BadInput
from app.ui.common import EVENT, bind, operator_only, section, user_name


def build(app, triggers) -> None:
    with section("Discard, restore, or mark gold", elem_id="pf-curation"):
        gr.Markdown("Discarded prompts, comparisons and labels are never shown to annotators, trained on "
                    "or exported; a discarded label stops counting, so its comparison may reopen.")
        with gr.Row():
            kind = gr.Radio(list(curation.KINDS), value="label", label="What", elem_id="pf-curate-kind")
            # No minimum here: Gradio draws 0 as invalid before anyone types; the handler says what an id must be.
            target = gr.Number(label="Id", value=None, precision=0, elem_id="pf-curate-id")
            reason = gr.Textbox(label="Reason (required to discard)", elem_id="pf-curate-reason")
        with gr.Row():
            show_button = gr.Button("Show", elem_id="pf-btn-show")
            discard_button = gr.Button("Discard", variant="stop", elem_id="pf-btn-discard")
            restore_button = gr.Button("Restore", elem_id="pf-btn-restore")
        with gr.Row():
            gold = gr.Dropdown(list(quality.CHOICES), value="a", label="Known answer of a gold question",
                               info="Gold questions are handed to annotators now and then to measure them; one "
                                    "resolves from this answer alone.", elem_id="pf-gold-choice")
            gold_button = gr.Button("Mark gold", elem_id="pf-btn-gold")
            ungold_button = gr.Button("Unmark gold", elem_id="pf-btn-ungold")
        result = gr.Markdown(elem_id="pf-curate-result")
        shown = gr.HTML(elem_id="pf-curate-show", js_on_load=None)
        audit = gr.Dataframe(label="Audit trail (newest first)", interactive=False, elem_id="pf-audit")
    show = {"fn": bind(show_data, app), "inputs": [kind, target], "outputs": shown, **EVENT}
    show_button.click(**show)
    for button, change in ((discard_button, discard_data), (restore_button, restore_data)):
        # The trail and the looked-up item show the change at once.
        button.click(bind(change, app), [kind, target, reason], result, **EVENT).then(
            bind(refresh_audit, app), None, audit, **EVENT).then(**show)
    for button, change in ((gold_button, mark_gold), (ungold_button, unmark_gold)):
        button.click(bind(change, app), [kind, target, gold, reason], result, **EVENT).then(
            bind(refresh_audit, app), None, audit, **EVENT).then(**show)
    gr.on(triggers, bind(refresh_audit, app), None, audit, **EVENT)


@operator_only
def discard_data(app, kind: str, target_id: float | None, reason: str, request: gr.Request):
    return curation.discard(app, kind, _target_id(target_id), reason, user_name(request))["message"]


@operator_only
def restore_data(app, kind: str, target_id: float | None, reason: str, request: gr.Request):
    return curation.restore(app, kind, _target_id(target_id), user_name(request), reason)["message"]


@operator_only
def mark_gold(app, kind: str, target_id: float | None, choice: str, reason: str, request: gr.Request):
    return quality.mark_gold(app, _comparison_id(kind, target_id), choice, user_name(request), reason)["message"]


@operator_only
def unmark_gold(app, kind: str, target_id: float | None, _choice: str, reason: str, request: gr.Request):
    return quality.unmark_gold(app, _comparison_id(kind, target_id), user_name(request), reason)["message"]


def _comparison_id(kind: str, target_id: float | None) -> int:
    if kind != "comparison":
        raise BadInput("a gold question is a comparison: choose 'comparison' and give its id")
    return _target_id(target_id)


@operator_only
def show_data(app, kind: str, target_id: float | None, request: gr.Request):
    return item_html(curation.show(app, kind, _target_id(target_id)))


@operator_only
def refresh_audit(app, request: gr.Request):
    return _audit_frame(curation.audit_trail(app, 50))


def _target_id(value: float | None) -> int:
    if value is None or value < 1 or value != int(value):
        raise BadInput("give the id (a whole number, 1 or more)")
    return int(value)


def item_html(item: dict[str, Any]) -> str:
    """A looked-up prompt, comparison or label as safe HTML: every text in it is untrusted."""
    if item["kind"] == "label":
        rationale = f" &middot; rationale: {html.escape(item['rationale'])}" if item["rationale"] else ""
        head = (f"<p><b>label {item['id']}</b>: {html.escape(item['annotator'])} ({html.escape(item['source'])}) "
                f"{html.escape(curation.label_verb(item))}{_discarded_note(item)}{rationale}</p>")
        return head + item_html(item["comparison"])
    if "status" not in item:
        return (f"<p><b>prompt {item['id']}</b> from {html.escape(item['source'])}, "
                f"{len(item['comparisons'])} comparison(s){_discarded_note(item)}</p>"
                + render_messages(item["messages"]))
    labels = "".join(f"<li>label {x['id']}: {html.escape(x['annotator'])} ({html.escape(x['source'])}) "
                     f"{html.escape(curation.label_says(x))}{_discarded_note(x)}</li>" for x in item["labels"])
    prompt_note = (f" &middot; its prompt {item['prompt_id']} is discarded: {html.escape(item['prompt_discarded'])}"
                   if item["prompt_discarded"] else "")
    gold = f" &middot; <b>gold question</b>, known answer {html.escape(item['gold'])}" if item.get("gold") else ""
    return (f"<p><b>comparison {item['id']}</b>: {html.escape(item['status'])}, from "
            f"{html.escape(item['origin'] or item['source'])}{gold}{_discarded_note(item)}{prompt_note}</p>"
            + render_messages(item["messages"])
            + "".join(render_response(name, text) for name, text in curation.response_names(item))
            + f"<ul>{labels or '<li>no labels</li>'}</ul>")


def _discarded_note(item: dict[str, Any]) -> str:
    return f" &middot; <b>discarded</b>: {html.escape(item['discarded'])}" if item["discarded"] else ""


def _audit_frame(events: list[dict[str, Any]]):
    import pandas as pd

    columns = ["when", "who", "action", "target", "id", "reason"]
    return pd.DataFrame([{"when": e["when"][:19].replace("T", " "), "who": e["actor"], "action": e["action"],
                          "target": e["target"], "id": "" if e["id"] is None else e["id"], "reason": e["reason"]}
                         for e in events], columns=columns)
