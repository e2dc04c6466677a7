"""The operator console tab: a Refresh button over one tab per job (the loop at a glance, data in and out, models
and rounds, judges, annotators), each a module of its own. Every console event checks the caller's role on the
server."""

import gradio as gr

from app.ui.common import EVENT, bind
from app.ui.console import annotators, curation, data, judges, models, overview, training


def build(app, worker, tab: gr.Tab) -> gr.Timer:
    """The console's contents and events (inside the tab's context); returns the training panel's refresh timer,
    which runs only while the console is open."""
    refresh = gr.Button("Refresh", elem_id="pf-btn-refresh", size="sm")
    shown = [refresh.click, tab.select]  # what refreshes every panel
    with gr.Tabs(elem_id="pf-console-tabs"):
        with gr.Tab("Overview", id="overview", elem_id="pf-tab-overview"):
            top = overview.layout()
        with gr.Tab("Data", id="data", elem_id="pf-tab-data"):
            data.build_import(app)
            data.build_export(app)
            curation.build(app, shown)
        with gr.Tab("Models and rounds", id="models", elem_id="pf-tab-models"):
            generation_status = models.build_generation(app, worker)
            versions, deployed = models.build_versions(app)
            timer = training.build(app, shown)
        with gr.Tab("Judges", id="judges", elem_id="pf-tab-judges"):
            judges.build(app, shown)
        with gr.Tab("Annotators", id="annotators", elem_id="pf-tab-annotators"):
            annotators.build(app, shown)
    tab.select(bind(training.resume_timer, app), None, timer, **EVENT)
    overview.wire(app, worker, top, versions, generation_status, shown, after=[deployed])
    return timer
