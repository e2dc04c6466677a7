"""The console's judges panel: each judge's agreement with the humans (overall and per round), its runs, and
running a judge on N comparisons now."""

from typing import Any

import gradio as gr

from app.services import console as console_views
from app.services import judging
from app.ui.common import EVENT, bind, operator_only, section
from app.ui.console.training_parts import num


def build(app, triggers) -> None:
    with section("Judges", elem_id="pf-judges"):
        status = gr.Markdown(elem_id="pf-judge-status")
        judges = gr.Dataframe(label="Judge-human agreement", interactive=False, elem_id="pf-judges-table")
        per_round = gr.Dataframe(label="Cohen's kappa per round", interactive=False)
        with gr.Row():
            limit = gr.Number(label="Comparisons", value=16, precision=0)
            run_button = gr.Button("Run judge on N", elem_id="pf-btn-judge-run")
        result = gr.Markdown(elem_id="pf-judge-result")
    refreshed = {"fn": bind(refresh_judges, app), "inputs": None, "outputs": [judges, per_round, status], **EVENT}
    gr.on(triggers, **refreshed)
    run_button.click(bind(run_judge_now, app), limit, result, **EVENT).then(**refreshed)


@operator_only
def refresh_judges(app, request: gr.Request):
    panel = console_views.judge_panel(app)
    return (*_judge_frames(panel.agreement), _judge_status(panel.status))


@operator_only
def run_judge_now(app, limit: float | None, request: gr.Request):
    n = int(limit or 0)
    if n < 1:
        raise gr.Error("Give how many comparisons the judge should label (1 or more).", print_exception=False)
    return judging.run_judge(app, limit=n).summary()


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
