"""The operator console tab: the overview on top, then one panel per job (data in and out, models, training,
curation, judges), each a module of its own. Every console event checks the caller's role on the server."""

import gradio as gr

from app.ui.common import EVENT, bind
from app.ui.console import curation, data, judges, models, overview, training


def build(app, worker, tab: gr.Tab) -> gr.Timer:
    """The console's contents and events (inside the tab's context); returns the training panel's refresh timer,
    which runs only while the console is open."""
    refresh = gr.Button("Refresh", elem_id="pf-btn-refresh")
    shown = [refresh.click, tab.select]  # what refreshes every panel
    top = overview.layout()
    data.build_import(app)
    generation_status = models.build_generation(app, worker)
    data.build_export(app)
    versions = models.build_versions(app)
    timer = training.build(app, shown)
    tab.select(bind(training.resume_timer, app), None, timer, **EVENT)
    curation.build(app, shown)
    judges.build(app, shown)
    overview.wire(app, worker, top, versions, generation_status, shown)
    return timer
