"""The console's overview: counts at a glance, labels per annotator and per day. Its refresh also fills the
versions table and the generation status (one snapshot of the console, one service call)."""

from typing import Any, NamedTuple

import gradio as gr

from app.services import console as console_views
from app.ui.common import EVENT, bind, operator_only


class Overview(NamedTuple):
    summary: gr.Markdown
    annotators: gr.Dataframe
    plot: gr.BarPlot


def layout() -> Overview:
    summary = gr.Markdown(elem_id="pf-summary")
    with gr.Row():
        annotators = gr.Dataframe(label="Labels per annotator", interactive=False)
        plot = gr.BarPlot(x="day", y="labels", color="source", title="Labels per day (last 30 days)",
                          x_title="day", y_title="labels", elem_id="pf-labels-plot")
    return Overview(summary, annotators, plot)


def wire(app, worker, top: Overview, versions, generation_status, triggers, after=()) -> None:
    """`versions` is the models panel's (table, dropdown); `after`: events (a deploy) that change what the
    overview shows, so it refreshes when they finish rather than on the next Refresh."""
    refreshed = {"fn": bind(refresh_console, app, worker), "inputs": None,
                 "outputs": [*top, *versions, generation_status], **EVENT}
    gr.on(triggers, **refreshed)
    for event in after:
        event.then(**refreshed)


@operator_only
def refresh_console(app, worker, request: gr.Request):
    import pandas as pd

    snap = console_views.console_snapshot(app)
    versions = snap.versions
    names = [v["name"] for v in versions]
    deployed = next((v["name"] for v in versions if v["deployed"]), None)
    table = pd.DataFrame([{"": "*" if v["deployed"] else "", "name": v["name"], "parent": v["parent"] or "",
                           "round": v["round"], "status": v["status"], "kind": v["kind"],
                           "created": v["created_at"][:19]} for v in versions])
    annotators = pd.DataFrame(sorted(snap.overview["labels_by_annotator"].items()), columns=["annotator", "labels"])
    return (summary_text(snap.overview), annotators, labels_frame(snap.labels_per_day), table,
            gr.update(choices=names, value=deployed), worker.status())


def summary_text(overview: dict[str, Any]) -> str:
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


def labels_frame(days: list[console_views.DayCount]):
    """Labels per day and source as the bar plot's frame (typed columns when there are none yet)."""
    import pandas as pd

    if not days:
        return pd.DataFrame({"day": pd.Series(dtype="str"), "source": pd.Series(dtype="str"),
                             "labels": pd.Series(dtype="int64")})
    return pd.DataFrame([(d.day, d.source, d.labels) for d in days], columns=["day", "source", "labels"])
