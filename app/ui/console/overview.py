"""The console's overview, the loop at a glance: the queue and counts, each round's headline metrics across model
versions, labels per day, today's top annotators. Its refresh also fills the versions table and the generation
status (one snapshot of the console, one service call)."""

import math
from typing import Any, NamedTuple

import gradio as gr

from app.services import console as console_views
from app.ui.common import EVENT, bind, operator_only

BEFORE, AFTER, NEW = "before (parent)", "after (new version)", "new version"
STAGE_COLORS = {BEFORE: "#9ca3af", AFTER: "#2563eb", NEW: "#2563eb"}
NO_ROUNDS = "No rounds yet: each finished round adds its new version here."
LABELS_ABOUT = "Labels by source (people, judges, imports) and the day (UTC) they were made."


class RoundPlot(NamedTuple):
    """One per-round plot: its element id, title, y axis, y limits, and its series as (name, RoundMetrics field)."""
    elem_id: str
    title: str
    y_title: str
    y_lim: list[float] | None  # None: from 0 to a little over the highest point
    series: tuple[tuple[str, str], ...]
    missing: str  # the caption when rounds exist but none has this metric
    about: str  # the caption when it has points


ROUND_PLOTS = (
    RoundPlot("pf-plot-accuracy", "Held-out reward accuracy", "accuracy", [0, 1.05],
              ((BEFORE, "accuracy_before"), (AFTER, "accuracy_after")),
              "No held-out accuracy yet: a round measures it only when it keeps pairs out of training.",
              "Implicit-reward accuracy on each round's held-out pairs, of the parent and of the new version."),
    RoundPlot("pf-plot-win-rate", "Win-rate against the parent", "win-rate", [0, 1.05], ((NEW, "win_rate"),),
              "No win-rate yet: rounds judge their new version against the parent only with "
              "training.win_rate_judge on.",
              "The judge's verdicts on the round's probe prompts; ties count half, 0.5 is no better."),
    RoundPlot("pf-plot-length", "Mean response length", "tokens", None,
              ((BEFORE, "tokens_before"), (AFTER, "tokens_after")),
              "No response lengths yet: a round probes them on its held-out prompts.",
              "Mean tokens per sampled response on the round's held-out prompts."),
    RoundPlot("pf-plot-eos", "EOS rate", "EOS rate", [0, 1.05],
              ((BEFORE, "eos_before"), (AFTER, "eos_after")),
              "No EOS rates yet: a round probes them on its held-out prompts.",
              "Share of sampled responses that stopped on their own rather than at the length limit."),
)
TOP_ANNOTATORS = 5


class Overview(NamedTuple):
    summary: gr.Markdown
    accuracy: gr.ScatterPlot
    win_rate: gr.ScatterPlot
    length: gr.ScatterPlot
    eos: gr.ScatterPlot
    plot: gr.BarPlot
    annotators: gr.Dataframe
    looks: gr.State  # what the plots' redraw sets: see redraw_plots


def layout() -> Overview:
    summary = gr.Markdown(elem_id="pf-summary", line_breaks=True)
    plots = []
    for pair in (ROUND_PLOTS[:2], ROUND_PLOTS[2:]):
        with gr.Row():  # two side by side; they wrap one under the other on a narrow screen
            plots += [_round_plot(spec) for spec in pair]
    with gr.Row():
        plot = gr.BarPlot(x="day", y="labels", color="source", title="Labels per day (last 30 days)",
                          x_title="day", y_title="labels", caption=LABELS_ABOUT, elem_id="pf-labels-plot",
                          scale=2, min_width=300)
        annotators = gr.Dataframe(label="Top annotators today (UTC)", interactive=False,
                                  elem_id="pf-top-annotators", min_width=220)
    return Overview(summary, *plots, plot, annotators, gr.State())


def _round_plot(spec: RoundPlot) -> gr.ScatterPlot:
    # Points, not lines: a line through a single round would draw nothing.
    return gr.ScatterPlot(x="version", y="value", color="series", title=spec.title, x_title="version (oldest first)",
                          y_title=spec.y_title, color_title="model", y_lim=spec.y_lim, color_map=STAGE_COLORS,
                          tooltip=["round", "parent"], caption=NO_ROUNDS, elem_id=spec.elem_id, min_width=300)


def wire(app, worker, top: Overview, versions, generation_status, triggers, after=()) -> None:
    """`versions` is the models panel's (table, dropdown); `after`: events (a deploy) that change what the
    overview shows, so it refreshes when they finish rather than on the next Refresh."""
    refreshed = {"fn": bind(refresh_console, app, worker), "inputs": None,
                 "outputs": [*top, *versions, generation_status], **EVENT}
    redrawn = {"fn": bind(redraw_plots, app), "inputs": top.looks, "outputs": [*top[1:6]], **EVENT}
    gr.on(triggers, **refreshed).then(**redrawn)
    for event in after:
        event.then(**refreshed).then(**redrawn)


@operator_only
def refresh_console(app, worker, request: gr.Request):
    """The overview's outputs in Overview's order, then the versions table and dropdown, the generation status."""
    snap = console_views.console_snapshot(app)
    frames = [round_frame(snap.rounds, spec.series) for spec in ROUND_PLOTS]
    looks = plot_looks(snap.rounds, frames, snap.labels_per_day)
    return (summary_text(snap.overview, snap.rounds), *frames, labels_frame(snap.labels_per_day),
            top_annotators_frame(snap.overview), looks, *versions_outputs(snap.versions), worker.status())


@operator_only
def redraw_plots(app, looks: dict[str, Any] | None, request: gr.Request):
    """The plots' order, captions and limits, a step after their data: Gradio 6 draws a plot whose data and
    looks change in one update with the data it had before, and one whose data alone changes keeps its old
    legend and scales."""
    if not looks:
        return (gr.update(),) * 5
    rounds = [gr.update(sort=list(looks["versions"]), caption=caption, y_lim=y_lim)
              for caption, y_lim in zip(looks["captions"], looks["y_lims"], strict=True)]
    return (*rounds, gr.update(sort=list(looks["days"])))


def plot_looks(rounds: list[console_views.RoundMetrics], frames: list, days: list[console_views.DayCount]):
    """What redraw_plots sets, as plain data: the versions in round order, each round plot's caption (why it is
    empty, else what it shows) and y limits (headroom over the top point, which the limit would cut in half)."""
    captions = [NO_ROUNDS if not rounds else spec.missing if frame.empty else spec.about
                for spec, frame in zip(ROUND_PLOTS, frames, strict=True)]
    y_lims = [spec.y_lim or [0, float(frame["value"].max()) * 1.1 if not frame.empty else 1]
              for spec, frame in zip(ROUND_PLOTS, frames, strict=True)]
    return {"versions": [r.version for r in rounds], "captions": captions, "y_lims": y_lims,
            "days": sorted({d.day for d in days})}


def versions_outputs(versions: list[dict[str, Any]]):
    """The models panel's versions table and the deploy dropdown (choices, the deployed one chosen)."""
    import pandas as pd

    names = [v["name"] for v in versions]
    deployed = next((v["name"] for v in versions if v["deployed"]), None)
    table = pd.DataFrame([{"": "*" if v["deployed"] else "", "name": v["name"], "parent": v["parent"] or "",
                           "round": v["round"], "status": v["status"], "kind": v["kind"],
                           "created": v["created_at"][:19]} for v in versions])
    return table, gr.update(choices=names, value=deployed)


def summary_text(overview: dict[str, Any], rounds: list[console_views.RoundMetrics] = ()) -> str:
    """Short lines, one per subject, so that they read as a list on a phone as on a wide screen."""
    comparisons, queue, labels = overview["comparisons"], overview["queue"], overview["labels_by_source"]
    lines = [f"**Queue:** {queue['left']} still want labels · {queue.get('leased', 0)} being labelled now · "
             f"{comparisons.get('open', 0)} open · "
             f"{comparisons.get('done', 0)} done · {comparisons.get('retired', 0)} retired",
             f"**Labels:** {queue['labelled_today']} today · human {labels.get('human', 0)} · "
             f"judge {labels.get('judge', 0)} · import {labels.get('import', 0)}",
             f"**Data:** {overview['prompts']} prompts · {overview['responses']} responses",
             f"**Model:** {overview['deployed_version'] or 'none'} deployed · "
             f"{_count(len(rounds), 'finished round')}"]
    kinds = overview.get("comparisons_by_kind") or {}
    if set(kinds) - {"pair"}:  # only once anything but pairs is asked for
        lines.append("**Kinds:** " + " · ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())))
    discarded = ", ".join(f"{kind} {n}" for kind, n in (overview.get("discarded") or {}).items() if n)
    if discarded:
        lines.append(f"**Discarded:** {discarded}")
    return "\n".join(lines + _agreement_line(overview.get("people") or {}))


def _agreement_line(people: dict[str, Any]) -> list[str]:
    """Krippendorff's alpha between people and who is held back, once there is either (the Annotators tab has
    the detail)."""
    held = sum(bool((a.get("gold") or {}).get("held")) for a in (people.get("annotators") or {}).values())
    if not people.get("units") and not held:
        return []
    alpha = "n/a" if people.get("alpha") is None else f"{people['alpha']:.2f}"
    return [f"**Agreement:** alpha {alpha} over {_count(people.get('units', 0), 'comparison')} labelled by 2+ "
            f"people" + (f" · {held} held back" if held else "")]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def round_frame(rounds: list[console_views.RoundMetrics], series: tuple[tuple[str, str], ...]):
    """One row per round and series that has a number (a missing or NaN metric is no point, not a broken plot);
    typed columns when there are none."""
    import pandas as pd

    rows = [{"version": r.version, "value": getattr(r, field), "series": name, "round": r.round,
             "parent": r.parent or ""}
            for r in rounds for name, field in series if _finite(getattr(r, field))]
    columns = {"version": "str", "value": "float64", "series": "str", "round": "int64", "parent": "str"}
    if not rows:
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})
    return pd.DataFrame(rows).astype(columns)


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def top_annotators_frame(overview: dict[str, Any]):
    """Today's busiest annotators (people's labels since 00:00 UTC); the Annotators tab has everyone."""
    import pandas as pd

    today = overview.get("labels_today_by_annotator") or {}
    top = sorted(today.items(), key=lambda item: (-item[1], item[0]))[:TOP_ANNOTATORS]
    return pd.DataFrame(top, columns=["annotator", "labels today"])


def labels_frame(days: list[console_views.DayCount]):
    """Labels per day and source as the bar plot's frame (typed columns when there are none yet)."""
    import pandas as pd

    if not days:
        return pd.DataFrame({"day": pd.Series(dtype="str"), "source": pd.Series(dtype="str"),
                             "labels": pd.Series(dtype="int64")})
    return pd.DataFrame([(d.day, d.source, d.labels) for d in days], columns=["day", "source", "labels"])
