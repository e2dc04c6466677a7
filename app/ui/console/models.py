"""The console's models: the in-server sampling worker (start, stop, status) and the model versions, to deploy
or roll back."""

import gradio as gr

from app.services import versions as model_versions
from app.ui.common import EVENT, bind, operator_only, section


def build_generation(app, worker) -> gr.Markdown:
    """The generation panel; returns its status line (the overview's refresh updates it)."""
    with section("Generation"):
        status = gr.Markdown(worker.status())
        with gr.Row():
            start = gr.Button("Start generation", elem_id="pf-btn-gen-start")
            stop = gr.Button("Stop generation", elem_id="pf-btn-gen-stop")
    start.click(bind(start_generation, app, worker), None, status, **EVENT)
    stop.click(bind(stop_generation, app, worker), None, status, **EVENT)
    return status


def build_versions(app):
    """The versions panel; returns its (table, dropdown), which the overview's refresh fills, and the deploy
    event, after which it refreshes."""
    with section("Model versions"):
        versions = gr.Dataframe(label="Versions", interactive=False)
        version = gr.Dropdown(label="Version to deploy (or roll back to)", choices=[], allow_custom_value=True)
        deploy_button = gr.Button("Deploy", elem_id="pf-btn-deploy")
        deploy_result = gr.Markdown()
    deployed = deploy_button.click(bind(deploy, app), version, deploy_result, **EVENT)
    return (versions, version), deployed


@operator_only
def start_generation(app, worker, request: gr.Request):
    return worker.start()


@operator_only
def stop_generation(app, worker, request: gr.Request):
    return worker.stop()


@operator_only
def deploy(app, name: str | None, request: gr.Request):
    if not name:
        raise gr.Error("Choose a version to deploy.", print_exception=False)
    retired = model_versions.deploy(app, name)
    return f"Deployed {name}; {retired} open comparison(s) of other versions retired."
