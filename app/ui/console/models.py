"""The console's models: the in-server sampling worker (start, stop, status) and the model versions, to deploy
or roll back."""

import html

import gradio as gr

from app.services import versions as model_versions
from app.services.errors import ServiceError
from app.ui.common import EVENT, bind, operator_only, section


def build_generation(app, worker) -> gr.Markdown:
    """The generation panel; returns its status line (the overview's refresh updates it)."""
    with section("Generation"):
        status = gr.Markdown(elem_id="pf-generation-status")  # filled by the console refresh, operators only
        with gr.Row():
            start = gr.Button("Start generation", elem_id="pf-btn-gen-start")
            stop = gr.Button("Stop generation", elem_id="pf-btn-gen-stop")
    start.click(bind(start_generation, app, worker), None, status, **EVENT)
    stop.click(bind(stop_generation, app, worker), None, status, **EVENT)
    return status


def build_versions(app):
    """The versions panel; returns its (table, dropdown), which the overview's refresh fills, and the event that
    deploys (after the confirmation), after which it refreshes."""
    with section("Model versions"):
        versions = gr.Dataframe(label="Versions", interactive=False, elem_id="pf-versions",
                                headers=["", "name", "parent", "round", "status", "kind", "created"])
        version = gr.Dropdown(label="Version to deploy (or roll back to)", choices=[], allow_custom_value=True,
                              elem_id="pf-deploy-version")
        deploy_button = gr.Button("Deploy", elem_id="pf-btn-deploy")
        with gr.Column(visible=False, elem_id="pf-deploy-confirm") as confirm_box:
            question = gr.HTML(elem_id="pf-deploy-question")
            with gr.Row():
                confirm = gr.Button("Confirm", variant="primary", elem_id="pf-btn-deploy-confirm")
                cancel = gr.Button("Cancel", elem_id="pf-btn-deploy-cancel")
        pending = gr.State(None)  # the version the question is about: Confirm deploys that one, whatever is chosen
        deploy_result = gr.Markdown(elem_id="pf-deploy-result")
    asked = [question, confirm_box, pending, deploy_result]
    deploy_button.click(bind(preview_deploy, app), version, asked, **EVENT)
    version.input(forget_deploy, None, [confirm_box, pending], **EVENT)  # a new choice needs a new question
    cancel.click(cancel_deploy, None, [confirm_box, pending, deploy_result], **EVENT)
    deployed = confirm.click(bind(deploy, app), pending, [confirm_box, pending, deploy_result], **EVENT)
    return (versions, version), deployed


@operator_only
def start_generation(app, worker, request: gr.Request):
    return worker.start()


@operator_only
def stop_generation(app, worker, request: gr.Request):
    return worker.stop()


@operator_only
def preview_deploy(app, name: str | None, request: gr.Request):
    """The confirmation question; a refusal (unknown, not ready, deployed already) is a plain line instead."""
    if not name:
        return "", gr.update(visible=False), None, "Choose a version to deploy."
    try:
        preview = model_versions.deploy_preview(app, name)
    except ServiceError as e:
        return "", gr.update(visible=False), None, str(e)
    return question_html(deploy_question(preview)), gr.update(visible=True), preview.name, ""


def deploy_question(p: model_versions.DeployPreview) -> str:
    change = (f"rolling back from {p.deployed}" if p.is_rollback else f"replacing {p.deployed}") if p.deployed \
        else "nothing is deployed now"
    if not p.retires:
        retired = "Open comparisons of other versions stay open; none will be retired (generation.on_deploy = keep)."
    elif p.would_retire:
        retired = f"{p.would_retire} open comparison(s) of other versions will be retired."
    else:
        retired = "No open comparisons will be retired."
    return f"Deploy {p.name} ({change})? {retired}"


def question_html(question: str) -> str:
    """The question as safe HTML (a version's name is not ours)."""
    return f'<div class="pf-inline pf-inline-warn" role="alert">{html.escape(question)}</div>'



def forget_deploy():
    return gr.update(visible=False), None


def cancel_deploy():
    return gr.update(visible=False), None, "Deploy cancelled; nothing changed."


@operator_only
def deploy(app, name: str | None, request: gr.Request):
    if not name:
        raise gr.Error("Choose a version to deploy.", print_exception=False)
    retired = model_versions.deploy(app, name)
    return gr.update(visible=False), None, f"Deployed {name}; {retired} open comparison(s) of other versions retired."
