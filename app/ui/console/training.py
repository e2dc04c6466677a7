"""The console's training panel: rounds with their reports and errors, the live per-step plot of the round
followed, start, cancel, and resuming paused automatic rounds."""

from typing import NamedTuple

import gradio as gr

from app.services import console as console_views
from app.services import rounds as training_rounds
from app.services.errors import Conflict
from app.ui.common import EVENT, bind, operator_only, section, user_name
from app.ui.console import training_parts as parts

LATEST_ROUND = "running or latest"


class Panel(NamedTuple):
    """The components refresh_training updates, in its order."""
    progress: gr.Markdown
    rounds: gr.Dataframe
    plot: gr.LinePlot
    round_choice: gr.Dropdown
    shown_round: gr.State
    auto_notice: gr.HTML
    resume_auto: gr.Button


def build(app, triggers) -> gr.Timer:
    """The panel and its events; returns its timer (refreshes a running round every 2 s while it is active)."""
    with section("Training", elem_id="pf-training"):
        panel, controls, result, timer = _layout()
    deploy_when_done, start, cancel = controls
    refreshed = {"fn": bind(refresh_training, app), "inputs": panel.round_choice, "outputs": list(panel), **EVENT}
    gr.on([*triggers, panel.round_choice.input], **refreshed)
    timer.tick(**{**refreshed, "show_progress": "hidden"})
    start.click(bind(start_training, app), deploy_when_done, result, **EVENT).then(**refreshed)
    cancel.click(bind(cancel_training, app), [panel.round_choice, panel.shown_round], result, **EVENT).then(**refreshed)
    panel.resume_auto.click(bind(resume_auto_rounds, app), None, result, **EVENT).then(**refreshed)
    return timer


def _layout():
    progress = gr.Markdown(elem_id="pf-training-progress")
    with gr.Row():
        deploy_when_done = gr.Checkbox(label="Deploy when done", elem_id="pf-round-deploy")
        start = gr.Button("Start round", variant="primary", elem_id="pf-btn-round-start")
        round_choice = gr.Dropdown(label="Round (plot, cancel)", choices=[(LATEST_ROUND, 0)], value=0,
                                   min_width=240, elem_id="pf-round-choice")
        shown_round = gr.State(None)
        cancel = gr.Button("Cancel round", variant="stop", elem_id="pf-btn-round-cancel")
    auto_notice = gr.HTML(elem_id="pf-auto-notice", js_on_load=None)
    resume_auto = gr.Button("Resume automatic rounds", visible=False, elem_id="pf-btn-auto-resume")
    result = gr.Markdown(elem_id="pf-training-result")
    rounds = gr.Dataframe(label="Rounds", interactive=False, wrap=True, elem_id="pf-rounds",
                          column_widths=parts.ROUNDS_COLUMN_WIDTHS)
    plot = gr.LinePlot(x="step", y="value", color="metric", title="Training metrics per step", x_title="step",
                       y_title="value", elem_id="pf-round-plot")
    timer = gr.Timer(2.0, active=False)
    panel = Panel(progress, rounds, plot, round_choice, shown_round, auto_notice, resume_auto)
    return panel, (deploy_when_done, start, cancel), result, timer


@operator_only
def refresh_training(app, run_choice: int | None, request: gr.Request):
    panel = console_views.training_panel(app, run_choice or None)  # 0/None: the running round, else the latest
    selected = panel.selected
    choices = [(LATEST_ROUND, 0)] + [(f"round {r['id']} ({r['status']})", r["id"]) for r in reversed(panel.rounds)]
    return (parts.progress_text(panel), parts.rounds_frame(panel.rounds),
            parts.metrics_frame(selected["metrics"] if selected else []), gr.update(choices=choices),
            selected["id"] if selected else None, parts.auto_notice_html(panel.auto_notice),
            gr.update(visible=bool(panel.auto_notice)))


@operator_only
def start_training(app, deploy_when_done: bool, request: gr.Request):
    try:
        run_id = training_rounds.start_round(app, deploy=bool(deploy_when_done))  # its own process: returns at once
    except Conflict as e:  # a round runs already, or too few new pairs
        gr.Warning(str(e))
        return f"Round not started: {e}"
    then = "deployed when done" if deploy_when_done else "not deployed unless training.auto_deploy passes"
    return f"Round {run_id} started in its own process ({then})."


@operator_only
def cancel_training(app, run_choice: int | None, shown: int | None, request: gr.Request):
    run_id = run_choice or shown  # the chosen round, else the one shown (the running one, if any)
    if not run_id:
        raise gr.Error("Choose a round to cancel.", print_exception=False)
    status = training_rounds.cancel_round(app, int(run_id))
    return f"Round {run_id}: {status}."


@operator_only
def resume_auto_rounds(app, request: gr.Request):
    return training_rounds.resume_auto_rounds(app, actor=user_name(request))


@operator_only
def resume_timer(app, request: gr.Request):
    return gr.Timer(active=True)


def pause_timer():
    # Leaving the console stops its refresh timer; touches no data.
    return gr.Timer(active=False)
