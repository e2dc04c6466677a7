"""The Gradio UI: the label view for annotators and the operator console.

Thin by rule: a callback reads its inputs, calls one service function and returns updates. Nothing here is a
module global: `build_blocks` closes over one App. Every console event checks the caller's role on the server
(the tab is also hidden from annotators, but hiding is not the check). Untrusted text is rendered to safe HTML
on the server (app.render) and shown in gr.HTML."""

import functools
import html
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gradio as gr

from app import curation, judging, service
from app import rounds as training_rounds
from app.render import render_markdown, render_messages, render_notice, render_response
from app.service import App

log = logging.getLogger("prefloop.ui")

# (side, button text, keyboard key, element id)
CHOICE_BUTTONS = (
    ("left", "A better", "a", "pf-btn-left"),
    ("right", "B better", "b", "pf-btn-right"),
    ("tie", "Tie", "t", "pf-btn-tie"),
    ("both_bad", "Both bad", "x", "pf-btn-both-bad"),
    ("skip", "Skip", "s", "pf-btn-skip"),
)
LATEST_ROUND = "running or latest"
EMPTY_QUEUE = "Nothing left to label right now. Thank you! New comparisons appear here as they are generated."

_KEYS = ",".join(f"{key!r}: {elem!r}" for _, _, key, elem in CHOICE_BUTTONS)
# Keyboard shortcuts for the choice buttons; keys typed into a text field are left alone.
KEYBOARD_JS = """() => {
  const keys = __KEYS__;
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (t && (t.tagName === 'TEXTAREA' || t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.isContentEditable))
      return;
    const id = keys[e.key.toLowerCase()];
    const button = id && document.getElementById(id);
    if (button && !button.disabled) { e.preventDefault(); button.click(); }
  });
}""".replace("__KEYS__", "{" + _KEYS + "}")

CSS = """
.pf-response, .pf-prompt { overflow-wrap: anywhere; }
.pf-pane-label, .pf-role { font-weight: 600; opacity: 0.7; text-transform: uppercase; font-size: 0.8em; }
.pf-turn { margin-bottom: 0.75em; }
.pf-response pre, .pf-prompt pre { white-space: pre-wrap; padding: 0.5em; border-radius: 4px;
  background: var(--background-fill-secondary); }
.pf-notice { padding: 1em; font-size: 1.1em; }
"""

EVENT = {"api_visibility": "private", "concurrency_limit": None}  # the UI's own events only; never serialised


def _user(request: gr.Request | None) -> str:
    name = getattr(request, "username", None)
    if not name:
        raise gr.Error("Please log in again.")
    return name


def _friendly(fn):
    """Errors become a plain message for the person, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, LookupError, FileNotFoundError) as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception:
            log.exception("UI event failed")
            raise gr.Error("Something went wrong on the server; please try again.", print_exception=False) from None
    return wrapper


def build_blocks(app: App, worker) -> gr.Blocks:
    """The whole UI for `app`; `worker` is the in-server sampling worker (start/stop/status)."""

    def operator_only(fn):
        """Refuse every console event unless the logged-in user is an operator now (checked in the database)."""
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            request = kwargs.get("request") or next((a for a in args if isinstance(a, gr.Request)), None)
            if service.role_of(app, getattr(request, "username", None)) != "operator":
                raise gr.Error("Only operators can use the console.", print_exception=False)
            return fn(*args, **kwargs)
        return _friendly(wrapper)

    # -- label view -----------------------------------------------------------------------------------------
    def view_updates(view: service.LabelView):
        progress = view.progress
        progress_md = (f"**My labels today:** {progress['labelled_today']} &nbsp;·&nbsp; "
                       f"**Left for me:** {progress['left']} &nbsp;·&nbsp; **Open:** {progress['open']}")
        if view.notice:
            gr.Info(view.notice)
        item = view.item
        if item is None:
            empty = render_notice(EMPTY_QUEUE)
            return None, empty, "", "", progress_md, "", "A", ""
        state = {"comparison_id": item.comparison_id, "shown_order": item.shown_order, "left": item.left_text,
                 "right": item.right_text, "shown_at": time.time()}
        return (state, render_messages(item.messages), render_response("A", item.left_text),
                render_response("B", item.right_text), progress_md, "", "A", item.left_text)

    @_friendly
    def load_view(request: gr.Request):
        return view_updates(service.label_view(app, _user(request)))

    def labeller(side: str):
        @_friendly
        def handler(state: dict | None, rationale: str, request: gr.Request):
            user = _user(request)
            if not state:
                return view_updates(service.label_view(app, user, "Nothing to label right now."))
            spent = time.time() - state["shown_at"]
            return view_updates(service.label_and_next(app, user, state["comparison_id"], side,
                                                       state["shown_order"], rationale.strip() or None, spent))
        return handler

    @_friendly
    def submit_edit(state: dict | None, edit_side: str, edited: str, rationale: str, request: gr.Request):
        user = _user(request)
        if not state:
            raise gr.Error("There is no comparison to edit right now.", print_exception=False)
        side = "left" if edit_side == "A" else "right"
        spent = time.time() - state["shown_at"]
        return view_updates(service.edit_and_next(app, user, state["comparison_id"], edited, side,
                                                  state["shown_order"], rationale.strip() or None, spent))

    @_friendly
    def undo_label(request: gr.Request):
        return view_updates(curation.undo_and_view(app, _user(request)))

    def edit_source(state: dict | None, edit_side: str):
        # Prefills the editor with the response being corrected; reads the session state only.
        if not state:
            return ""
        return state["left"] if edit_side == "A" else state["right"]

    # -- console ----------------------------------------------------------------------------------------------
    @operator_only
    def discard_data(kind: str, target_id: float | None, reason: str, request: gr.Request):
        return curation.discard(app, kind, _target_id(target_id), reason, _user(request))["message"]

    @operator_only
    def restore_data(kind: str, target_id: float | None, reason: str, request: gr.Request):
        return curation.restore(app, kind, _target_id(target_id), _user(request), reason)["message"]

    @operator_only
    def show_data(kind: str, target_id: float | None, request: gr.Request):
        return _curation_html(curation.show(app, kind, _target_id(target_id)))

    @operator_only
    def refresh_audit(request: gr.Request):
        return _audit_frame(curation.audit_trail(app, 50))

    def whoami(request: gr.Request):
        name = getattr(request, "username", None)
        is_operator = service.role_of(app, name) == "operator"
        return f"Logged in as **{name}**", gr.update(visible=is_operator)

    @operator_only
    def refresh_console(request: gr.Request):
        import pandas as pd

        snap = service.console_snapshot(app)
        versions = snap["versions"]
        names = [v["name"] for v in versions]
        deployed = next((v["name"] for v in versions if v["deployed"]), None)
        table = pd.DataFrame([{"": "*" if v["deployed"] else "", "name": v["name"], "parent": v["parent"] or "",
                               "round": v["round"], "status": v["status"], "kind": v["kind"],
                               "created": v["created_at"][:19]} for v in versions])
        annotators = pd.DataFrame(sorted(snap["overview"]["labels_by_annotator"].items()),
                                  columns=["annotator", "labels"])
        return (_summary(snap["overview"]), annotators, snap["labels_per_day"], table,
                gr.update(choices=names, value=deployed), worker.status())

    @operator_only
    def import_file(path: str | None, fmt: str, request: gr.Request):
        if not path:
            raise gr.Error("Choose a file to import first.", print_exception=False)
        r = service.import_data(app, Path(path), fmt=None if fmt == "auto" else fmt)
        return (f"Imported {Path(path).name} as {r.format}: prompts +{r.prompts_added} "
                f"({r.prompts_duplicate} duplicate), comparisons +{r.comparisons_added} "
                f"({r.comparisons_duplicate} duplicate), labels +{r.labels_added}")

    def generation(action: str):
        @operator_only
        def handler(request: gr.Request):
            return getattr(worker, action)()
        return handler

    @operator_only
    def export(fmt: str, sources: list[str], include_ties: bool, metadata: bool, min_agreement: float | None,
               request: gr.Request):
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        out = Path(tempfile.mkdtemp(prefix="prefloop-export-")) / f"prefloop-{fmt}-{stamp}.jsonl"
        # A path, not an open file: ties and metadata are written as files of their own beside the pairs.
        n = service.export_data(app, out, fmt=fmt, sources=tuple(sources) or ("human", "import"),
                                include_ties=include_ties, metadata=metadata, min_agreement=min_agreement or None)
        from data.export import sidecar_path

        files = [str(p) for p in (out, sidecar_path(out, "ties"), sidecar_path(out, "metadata")) if p.exists()]
        return gr.update(value=files, visible=True), f"Exported {n} record(s)."

    @operator_only
    def deploy(name: str | None, request: gr.Request):
        if not name:
            raise gr.Error("Choose a version to deploy.", print_exception=False)
        retired = service.deploy(app, name)
        return f"Deployed {name}; {retired} open comparison(s) of other versions retired."

    # -- training rounds --------------------------------------------------------------------------------------
    @operator_only
    def refresh_training(run_choice: int | None, request: gr.Request):
        panel = training_rounds.training_panel(app, run_choice or None)  # 0/None: the running round, else the latest
        selected = panel["selected"]
        choices = [(LATEST_ROUND, 0)] + [(f"round {r['id']} ({r['status']})", r["id"])
                                         for r in reversed(panel["rounds"])]
        return (_training_progress(panel), _rounds_frame(panel["rounds"]),
                _metrics_frame(selected["metrics"] if selected else []), gr.update(choices=choices),
                selected["id"] if selected else None, _auto_notice(panel["auto_notice"]),
                gr.update(visible=bool(panel["auto_notice"])))

    @operator_only
    def start_training(deploy_when_done: bool, request: gr.Request):
        from training.scheduler import NotEnoughPairs, RoundBusy

        try:
            run_id = training_rounds.start_round(app, deploy=bool(deploy_when_done))  # its own process: returns at once
        except (RoundBusy, NotEnoughPairs) as e:
            gr.Warning(str(e))
            return f"Round not started: {e}"
        then = "deployed when done" if deploy_when_done else "not deployed unless training.auto_deploy passes"
        return f"Round {run_id} started in its own process ({then})."

    @operator_only
    def cancel_training(run_choice: int | None, shown: int | None, request: gr.Request):
        run_id = run_choice or shown  # the chosen round, else the one shown (the running one, if any)
        if not run_id:
            raise gr.Error("Choose a round to cancel.", print_exception=False)
        status = training_rounds.cancel_round(app, int(run_id))
        return f"Round {run_id}: {status}."

    @operator_only
    def resume_auto_rounds(request: gr.Request):
        return training_rounds.resume_auto_rounds(app, actor=_user(request))

    # -- judges ---------------------------------------------------------------------------------------------------
    @operator_only
    def refresh_judges(request: gr.Request):
        panel = judging.judge_panel(app)
        return (*_judge_frames(panel["agreement"]), _judge_status(panel["status"]))

    @operator_only
    def run_judge_now(limit: float | None, request: gr.Request):
        n = int(limit or 0)
        if n < 1:
            raise gr.Error("Give how many comparisons the judge should label (1 or more).", print_exception=False)
        return judging.run_judge(app, limit=n).summary()

    @operator_only
    def resume_timer(request: gr.Request):
        return gr.Timer(active=True)

    def pause_timer():
        # Leaving the console stops its refresh timer; touches no data.
        return gr.Timer(active=False)

    # -- layout -----------------------------------------------------------------------------------------------
    with gr.Blocks(title="prefloop", analytics_enabled=False) as blocks:
        state = gr.State(None)
        with gr.Row():
            who = gr.Markdown()
            gr.Button("Log out", link="/logout", size="sm", scale=0)
        with gr.Tab("Label", id="label") as label_tab:
            progress = gr.Markdown(elem_id="pf-progress")
            prompt = gr.HTML(elem_id="pf-prompt", js_on_load=None, padding=True)
            with gr.Row(equal_height=False):
                left = gr.HTML(elem_id="pf-left", js_on_load=None, padding=True)
                right = gr.HTML(elem_id="pf-right", js_on_load=None, padding=True)
            with gr.Row():
                buttons = [gr.Button(f"{text} [{key.upper()}]", elem_id=elem, variant="primary" if side in
                                     ("left", "right") else "secondary")
                           for side, text, key, elem in CHOICE_BUTTONS]
            rationale = gr.Textbox(label="Rationale (optional)", lines=2, elem_id="pf-rationale")
            with gr.Accordion("Edit a response (your correction becomes a new preferred response)", open=False):
                edit_side = gr.Radio(["A", "B"], value="A", label="Response to correct", elem_id="pf-edit-side")
                edited = gr.Textbox(label="Corrected text (starts as the response chosen above)", lines=8,
                                    elem_id="pf-edit-text")
                edit_button = gr.Button("Save edit as preferred", elem_id="pf-btn-edit")
            undo = gr.Button("Undo last label", size="sm", elem_id="pf-btn-undo")
            with gr.Accordion("Guidelines", open=False, elem_id="pf-guidelines"):
                gr.HTML(render_markdown(service.guidelines(app)), js_on_load=None)

        with gr.Tab("Console", id="console", visible=False, elem_id="pf-console") as console:
            refresh = gr.Button("Refresh", elem_id="pf-btn-refresh")
            summary = gr.Markdown(elem_id="pf-summary")
            with gr.Row():
                annotators = gr.Dataframe(label="Labels per annotator", interactive=False)
                plot = gr.BarPlot(x="day", y="labels", color="source", title="Labels per day (last 30 days)",
                                  x_title="day", y_title="labels", elem_id="pf-labels-plot")
            with gr.Accordion("Import", open=False):
                upload = gr.File(label="File to import", type="filepath", elem_id="pf-upload")
                import_format = gr.Dropdown(["auto", "prompts-jsonl", "prompts-csv", "responses-jsonl", "trl",
                                             "openai", "hh-rlhf", "llamafactory"], value="auto", label="Format")
                import_button = gr.Button("Import", elem_id="pf-btn-import")
                import_result = gr.Markdown()
            with gr.Accordion("Generation", open=False):
                generation_status = gr.Markdown(worker.status())
                with gr.Row():
                    start = gr.Button("Start generation", elem_id="pf-btn-gen-start")
                    stop = gr.Button("Stop generation", elem_id="pf-btn-gen-stop")
            with gr.Accordion("Export", open=False):
                export_format = gr.Radio(["trl", "openai"], value="trl", label="Format")
                export_sources = gr.CheckboxGroup(["human", "import", "judge"], value=["human", "import"],
                                                  label="Label sources that may resolve a pair")
                include_ties = gr.Checkbox(label="Include ties and both-bad (under a 'label' field)")
                metadata = gr.Checkbox(label="Add metadata")
                min_agreement = gr.Number(label="Minimum agreement (0-1, empty for any)", minimum=0, maximum=1)
                export_button = gr.Button("Export", elem_id="pf-btn-export")
                export_file = gr.File(label="Download", visible=False, elem_id="pf-export-file", file_count="multiple")
                export_result = gr.Markdown()
            with gr.Accordion("Model versions", open=False):
                versions = gr.Dataframe(label="Versions", interactive=False)
                version = gr.Dropdown(label="Version to deploy (or roll back to)", choices=[], allow_custom_value=True)
                deploy_button = gr.Button("Deploy", elem_id="pf-btn-deploy")
                deploy_result = gr.Markdown()
            with gr.Accordion("Training", open=False, elem_id="pf-training"):
                training_progress = gr.Markdown(elem_id="pf-training-progress")
                with gr.Row():
                    deploy_when_done = gr.Checkbox(label="Deploy when done", elem_id="pf-round-deploy")
                    start_round = gr.Button("Start round", variant="primary", elem_id="pf-btn-round-start")
                    round_choice = gr.Dropdown(label="Round (plot, cancel)", choices=[(LATEST_ROUND, 0)], value=0,
                                               elem_id="pf-round-choice")
                    shown_round = gr.State(None)
                    cancel_round = gr.Button("Cancel round", variant="stop", elem_id="pf-btn-round-cancel")
                auto_notice = gr.HTML(elem_id="pf-auto-notice", js_on_load=None)
                resume_auto = gr.Button("Resume automatic rounds", visible=False, elem_id="pf-btn-auto-resume")
                training_result = gr.Markdown(elem_id="pf-training-result")
                rounds = gr.Dataframe(label="Rounds", interactive=False, wrap=True, elem_id="pf-rounds",
                                      column_widths=ROUNDS_COLUMN_WIDTHS)
                metrics_plot = gr.LinePlot(x="step", y="value", color="metric", title="Training metrics per step",
                                           x_title="step", y_title="value", elem_id="pf-round-plot")
                timer = gr.Timer(2.0, active=False)
            with gr.Accordion("Discard or restore data", open=False, elem_id="pf-curation"):
                gr.Markdown("Discarded prompts, comparisons and labels are never shown to annotators, trained on "
                            "or exported; a discarded label stops counting, so its comparison may reopen.")
                with gr.Row():
                    curate_kind = gr.Radio(list(curation.KINDS), value="label", label="What",
                                           elem_id="pf-curate-kind")
                    curate_id = gr.Number(label="Id", precision=0, minimum=1, elem_id="pf-curate-id")
                    curate_reason = gr.Textbox(label="Reason (required to discard)", elem_id="pf-curate-reason")
                with gr.Row():
                    show_button = gr.Button("Show", elem_id="pf-btn-show")
                    discard_button = gr.Button("Discard", variant="stop", elem_id="pf-btn-discard")
                    restore_button = gr.Button("Restore", elem_id="pf-btn-restore")
                curate_result = gr.Markdown(elem_id="pf-curate-result")
                curate_shown = gr.HTML(elem_id="pf-curate-show")
                audit = gr.Dataframe(label="Audit trail (newest first)", interactive=False, elem_id="pf-audit")
            with gr.Accordion("Judges", open=False, elem_id="pf-judges"):
                judge_state = gr.Markdown(elem_id="pf-judge-status")
                judges = gr.Dataframe(label="Judge-human agreement", interactive=False, elem_id="pf-judges-table")
                judge_rounds = gr.Dataframe(label="Cohen's kappa per round", interactive=False)
                with gr.Row():
                    judge_limit = gr.Number(label="Comparisons", value=16, precision=0)
                    judge_button = gr.Button("Run judge on N", elem_id="pf-btn-judge-run")
                judge_result = gr.Markdown(elem_id="pf-judge-result")

        view_outputs = [state, prompt, left, right, progress, rationale, edit_side, edited]
        blocks.load(load_view, None, view_outputs, **EVENT)
        blocks.load(whoami, None, [who, console], **EVENT)
        for button, (side, *_rest) in zip(buttons, CHOICE_BUTTONS, strict=True):
            button.click(labeller(side), [state, rationale], view_outputs, **EVENT)
        edit_side.change(edit_source, [state, edit_side], edited, **EVENT)
        edit_button.click(submit_edit, [state, edit_side, edited, rationale], view_outputs, **EVENT)
        undo.click(undo_label, None, view_outputs, **EVENT)

        console_outputs = [summary, annotators, plot, versions, version, generation_status]
        refresh.click(refresh_console, None, console_outputs, **EVENT)
        console.select(refresh_console, None, console_outputs, **EVENT)
        import_button.click(import_file, [upload, import_format], import_result, **EVENT)
        start.click(generation("start"), None, generation_status, **EVENT)
        stop.click(generation("stop"), None, generation_status, **EVENT)
        export_button.click(export, [export_format, export_sources, include_ties, metadata, min_agreement],
                            [export_file, export_result], **EVENT)
        deploy_button.click(deploy, version, deploy_result, **EVENT)

        training_outputs = [training_progress, rounds, metrics_plot, round_choice, shown_round, auto_notice,
                            resume_auto]
        judge_outputs = [judges, judge_rounds, judge_state]
        refresh.click(refresh_training, round_choice, training_outputs, **EVENT)
        refresh.click(refresh_judges, None, judge_outputs, **EVENT)
        console.select(refresh_training, round_choice, training_outputs, **EVENT)
        console.select(refresh_judges, None, judge_outputs, **EVENT)
        # Progress of a running round: refreshed every 2 s while the console tab is open (a tick is an event too).
        console.select(resume_timer, None, timer, **EVENT)
        label_tab.select(pause_timer, None, timer, **EVENT)
        timer.tick(refresh_training, round_choice, training_outputs, show_progress="hidden", **EVENT)
        round_choice.input(refresh_training, round_choice, training_outputs, **EVENT)
        start_round.click(start_training, deploy_when_done, training_result, **EVENT).then(
            refresh_training, round_choice, training_outputs, **EVENT)
        cancel_round.click(cancel_training, [round_choice, shown_round], training_result, **EVENT).then(
            refresh_training, round_choice, training_outputs, **EVENT)
        resume_auto.click(resume_auto_rounds, None, training_result, **EVENT).then(
            refresh_training, round_choice, training_outputs, **EVENT)
        curate_inputs = [curate_kind, curate_id, curate_reason]
        show_button.click(show_data, [curate_kind, curate_id], curate_shown, **EVENT)
        for button, change in ((discard_button, discard_data), (restore_button, restore_data)):
            # The trail and the looked-up item show the change at once.
            button.click(change, curate_inputs, curate_result, **EVENT).then(
                refresh_audit, None, audit, **EVENT).then(show_data, [curate_kind, curate_id], curate_shown, **EVENT)
        refresh.click(refresh_audit, None, audit, **EVENT)
        console.select(refresh_audit, None, audit, **EVENT)
        judge_button.click(run_judge_now, judge_limit, judge_result, **EVENT).then(
            refresh_judges, None, judge_outputs, **EVENT)
    blocks.queue(default_concurrency_limit=None)
    return blocks


def _summary(overview: dict[str, Any]) -> str:
    comparisons = overview["comparisons"]
    queue = overview["queue"]
    labels = overview["labels_by_source"]
    return (f"**Prompts:** {overview['prompts']} &nbsp;·&nbsp; **Responses:** {overview['responses']} &nbsp;·&nbsp; "
            f"**Comparisons:** open {comparisons.get('open', 0)} (still wanting labels {queue['left']}), "
            f"done {comparisons.get('done', 0)}, retired {comparisons.get('retired', 0)} &nbsp;·&nbsp; "
            f"**Labels:** human {labels.get('human', 0)}, import {labels.get('import', 0)}, "
            f"judge {labels.get('judge', 0)}; today {queue['labelled_today']} &nbsp;·&nbsp; "
            f"**Deployed:** {overview['deployed_version'] or 'none'}{_discarded(overview.get('discarded') or {})}")


def _discarded(counts: dict[str, int]) -> str:
    shown = ", ".join(f"{kind} {n}" for kind, n in counts.items() if n)
    return f" &nbsp;·&nbsp; **Discarded:** {shown}" if shown else ""


def _target_id(value: float | None) -> int:
    if value is None or value < 1 or value != int(value):
        raise ValueError("give the id (a whole number, 1 or more)")
    return int(value)


def _curation_html(item: dict[str, Any]) -> str:
    """A looked-up prompt, comparison or label as safe HTML: every text in it is untrusted."""
    if item["kind"] == "label":
        rationale = f" &middot; rationale: {html.escape(item['rationale'])}" if item["rationale"] else ""
        head = (f"<p><b>label {item['id']}</b>: {html.escape(item['annotator'])} ({html.escape(item['source'])}) "
                f"chose <b>{html.escape(item['choice'])}</b>{_discarded_note(item)}{rationale}</p>")
        return head + _curation_html(item["comparison"])
    if "status" not in item:
        return (f"<p><b>prompt {item['id']}</b> from {html.escape(item['source'])}, "
                f"{len(item['comparisons'])} comparison(s){_discarded_note(item)}</p>"
                + render_messages(item["messages"]))
    labels = "".join(f"<li>label {x['id']}: {html.escape(x['annotator'])} ({html.escape(x['source'])}) "
                     f"{html.escape(x['choice'])}{_discarded_note(x)}</li>" for x in item["labels"])
    prompt_note = (f" &middot; its prompt {item['prompt_id']} is discarded: {html.escape(item['prompt_discarded'])}"
                   if item["prompt_discarded"] else "")
    return (f"<p><b>comparison {item['id']}</b>: {html.escape(item['status'])}, from "
            f"{html.escape(item['origin'] or item['source'])}{_discarded_note(item)}{prompt_note}</p>"
            + render_messages(item["messages"]) + render_response("A", item["response_a"])
            + render_response("B", item["response_b"]) + f"<ul>{labels or '<li>no labels</li>'}</ul>")


def _discarded_note(item: dict[str, Any]) -> str:
    return f" &middot; <b>discarded</b>: {html.escape(item['discarded'])}" if item["discarded"] else ""


def _audit_frame(events: list[dict[str, Any]]):
    import pandas as pd

    columns = ["when", "who", "action", "target", "id", "reason"]
    return pd.DataFrame([{"when": e["when"][:19].replace("T", " "), "who": e["actor"], "action": e["action"],
                          "target": e["target"], "id": "" if e["id"] is None else e["id"], "reason": e["reason"]}
                         for e in events], columns=columns)


# -- the training and judges panels: plain data to tables and text --------------------------------------------------
PLOTTED_METRICS = ("loss", "rewards/margins", "rewards/accuracies")


def _num(value, digits: int = 3) -> str:
    import math

    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _before_after(report: dict[str, Any], section: str, key: str, digits: int = 3) -> str:
    part = report.get(section) or {}
    before, after = (part.get("before") or {}).get(key), (part.get("after") or {}).get(key)
    if before is None and after is None:
        return ""
    return f"{_num(before, digits)} → {_num(after, digits)}"


# Fixed widths: a long error wraps in its own column instead of squeezing the headers of the others.
ROUNDS_COLUMNS = {"id": "50px", "status": "90px", "trigger": "80px", "error": "340px", "versions": "100px",
                  "pairs": "100px", "started": "190px", "finished": "190px", "held-out accuracy": "150px",
                  "held-out margin": "150px", "mean length (tokens)": "160px", "EOS rate": "110px"}
ROUNDS_COLUMN_WIDTHS = list(ROUNDS_COLUMNS.values())


def _rounds_frame(rounds: list[dict[str, Any]]):
    import pandas as pd

    columns = list(ROUNDS_COLUMNS)
    rows = []
    for r in reversed(rounds):  # newest first
        report = r["report"] or {}
        skipped = f" ({r['skipped_pairs']} skipped)" if r["skipped_pairs"] else ""
        rows.append({"id": r["id"], "status": r["status"], "trigger": r["trigger"],
                     "versions": f"{r['parent'] or '?'} → {r['version'] or '…'}",
                     "pairs": f"{r['pairs']}{skipped}", "started": (r["started_at"] or "")[:19],
                     "finished": (r["finished_at"] or "")[:19],
                     "held-out accuracy": _before_after(report, "eval", "accuracy"),
                     "held-out margin": _before_after(report, "eval", "margin"),
                     "mean length (tokens)": _before_after(report, "probe", "mean_tokens", 1),
                     "EOS rate": _before_after(report, "probe", "eos_rate", 2), "error": r["error"] or ""})
    return pd.DataFrame(rows, columns=columns)


def _auto_notice(notice: str | None) -> str:
    """The paused / backing-off notice of automatic rounds as safe HTML (the error text is not ours)."""
    import html
    import re

    if not notice:
        return ""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(notice))  # `x` as code: escaped first, so safe
    return ('<div class="pf-notice" role="alert" style="border-left: 4px solid #d97706; '
            f'background: var(--background-fill-secondary)">{text}</div>')


def _metrics_frame(metrics: list[dict[str, Any]]):
    import pandas as pd

    rows = [{"step": m["step"], "value": m[key], "metric": key} for m in metrics for key in PLOTTED_METRICS
            if isinstance(m.get(key), int | float) and "step" in m]
    if not rows:
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                             "metric": pd.Series(dtype="str")})
    return pd.DataFrame(rows)


def _training_progress(panel: dict[str, Any]) -> str:
    auto = (f"a round starts automatically every {panel['auto_every']} new labelled pairs"
            f"{' and deploys when it passes the gate' if panel['auto_deploy'] else ''}"
            if panel["auto_every"] > 0 else "automatic rounds are off (training.auto_every = 0)")
    head = f"**Rounds:** {len(panel['rounds'])} &nbsp;·&nbsp; {auto}; a round needs {panel['min_pairs']} new pairs."
    selected = panel["selected"]
    if selected is None:
        return head
    line = f"**Round {selected['id']}:** {selected['status']}"
    if selected["phase"] and selected["status"] in ("queued", "running", "cancelling"):
        line += f" ({selected['phase']})"
    if selected["max_steps"]:
        line += f", step {selected['step']} of {selected['max_steps']}"
    if selected["version"]:
        line += f" → {selected['version']}"
    if selected["error"]:
        line += f"; error: {selected['error']}" + (" (the traceback is in the round's log, "
                                                   f"logs/round-{selected['id']}.log)" if selected["log"] else "")
    deploy = (selected["report"] or {}).get("deploy")
    if deploy:
        line += f"; {deploy}"
    return f"{head}\n\n{line}"


def _judge_frames(agreement: dict[str, dict[str, Any]]):
    import pandas as pd

    judges = pd.DataFrame([{"judge": name, "compared": a["compared"], "agreement": _num(a["agreement"]),
                            "kappa": _num(a["kappa"]), "consistency rate": _num(a["consistency_rate"]),
                            "abstain rate": _num(a["abstain_rate"]), "labels": a["labels"]}
                           for name, a in agreement.items()],
                          columns=["judge", "compared", "agreement", "kappa", "consistency rate", "abstain rate",
                                   "labels"])
    per_round = pd.DataFrame([{"judge": name, "round": r, "compared": x["compared"], "agreement": _num(x["agreement"]),
                               "kappa": _num(x["kappa"])}
                              for name, a in agreement.items() for r, x in a["by_round"].items()],
                             columns=["judge", "round", "compared", "agreement", "kappa"])
    return judges, per_round


def _judge_status(status: dict[str, dict[str, Any]]) -> str:
    if not status:
        return "No judge has run yet (`prefloop judge`, or the button below)."
    lines = []
    for name, s in status.items():
        last = s["runs"][0] if s["runs"] else None
        tail = f"; last run {last['id']} {last['status']} ({last['started_at'][:19] if last['started_at'] else ''})" \
            if last else ""
        lines.append(f"**{name}:** judged {s['judged']}, labelled {s['labelled']}, both orders agreed "
                     f"{s['consistent']}, flipped {s['flipped']}, abstained {s['abstained']}{tail}")
    return "\n\n".join(lines)
