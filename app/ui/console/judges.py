"""The console's judges panel: each judge's agreement with the humans (overall and per round), its runs, and
running a judge on N comparisons in its own process, followed live while it runs."""

from typing import Any

import gradio as gr

from app.services import console as console_views
from app.services import judging
from app.services.errors import Conflict
from app.ui.common import EVENT, bind, operator_only, section
from app.ui.console.training_parts import num


def build(app, triggers) -> None:
    """The panel and its events. Its timer refreshes the panel every second while a judge run is running, and
    stops itself when none is."""
    with section("Judges", elem_id="pf-judges"):
        status = gr.Markdown(elem_id="pf-judge-status")
        judges = gr.Dataframe(label="Judge-human agreement", interactive=False, elem_id="pf-judges-table")
        per_round = gr.Dataframe(label="Cohen's kappa per round", interactive=False)
        with gr.Row():
            limit = gr.Number(label="Comparisons", value=16, precision=0, minimum=1, elem_id="pf-judge-limit")
            run_button = gr.Button("Run judge on N", variant="primary", elem_id="pf-btn-judge-run")
        result = gr.Markdown(elem_id="pf-judge-result")
        progress = gr.Markdown(elem_id="pf-judge-progress")
        timer = gr.Timer(1.0, active=False)
    refreshed = {"fn": bind(refresh_judges, app), "inputs": None,
                 "outputs": [judges, per_round, status, progress, timer], **EVENT}
    gr.on(triggers, **refreshed)
    timer.tick(**{**refreshed, "show_progress": "hidden"})
    run_button.click(bind(run_judge_now, app), limit, result, **EVENT).then(**refreshed)


@operator_only
def refresh_judges(app, request: gr.Request):
    panel = console_views.judge_panel(app)
    latest = latest_run(panel.status)
    running = latest is not None and latest["status"] == "running"
    return (*_judge_frames(panel.agreement), _judge_status(panel.status), run_text(latest),
            gr.Timer(active=running))


@operator_only
def run_judge_now(app, limit: float | None, request: gr.Request):
    n = int(limit or 0)
    if n < 1:
        raise gr.Error("Give how many comparisons the judge should label (1 or more).", print_exception=False)
    try:
        run = judging.start_judge_run(app, limit=n)  # its own process: returns at once
    except Conflict as e:  # a judge run is running already
        return f"Judge not started: {e}."
    if run["status"] == "failed":
        return f"Judge run {run['id']} could not start. {run['reason'] or run['error']}"
    return f"Judge run {run['id']} started in its own process: up to {n} comparison(s), each in both orders."


def latest_run(status: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The newest judge run of any judge (a running one is always the newest: one judge run at a time)."""
    runs = [s["runs"][0] for s in status.values() if s["runs"]]
    return max(runs, key=lambda r: r["id"]) if runs else None


def run_text(run: dict[str, Any] | None) -> str:
    """The latest run in words: its progress while it runs, then what it did and why it labelled nothing."""
    if run is None:
        return ""
    head = f"**Judge run {run['id']}** ({run['judge']}, mode {run['mode']})"
    of = f" of {run['limit']}" if run["limit"] else ""
    counts = (f"labelled {run['labelled']}, both orders agreed {run['consistent']}, flipped to tie "
              f"{run['flipped']}, abstained {run['abstained']}")
    if run["status"] == "running":
        return f"{head} is running: judged {run['judged']}{of}{_bar(run)}; {counts}."
    choices = ", ".join(f"{k} {v}" for k, v in sorted(run["choices"].items()))
    text = f"{head} {'finished' if run['status'] == 'done' else run['status']}: judged {run['judged']}{of}; " \
           f"{counts}{f' ({choices})' if choices else ''}."
    why = run["reason"] or (f"Error: {run['error']}" if run["error"] else None)
    return f"{text}\n\n{why}" if why else text


def _bar(run: dict[str, Any]) -> str:
    if not run["limit"]:
        return ""
    done = min(10, round(10 * run["judged"] / run["limit"]))
    return f" `{'█' * done}{'░' * (10 - done)}`"


def _judge_frames(agreement: dict[str, dict[str, Any]]):
    import pandas as pd

    judges = pd.DataFrame([{"judge": name, "compared": a["compared"], "agreement": num(a["agreement"]),
                            "kappa": num(a["kappa"]), "consistency rate": num(a["consistency_rate"]),
                            "abstain rate": num(a["abstain_rate"]), "labels": a["labels"]}
                           for name, a in agreement.items()],
                          columns=["judge", "compared", "agreement", "kappa", "consistency rate", "abstain rate",
                                   "labels"])
    per_round = pd.DataFrame([{"judge": name, "round": r, "compared": x["compared"], "agreement": num(x["agreement"]),
                               "kappa": num(x["kappa"])}
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
