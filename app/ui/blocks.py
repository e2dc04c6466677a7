"""The whole page: a header with who is logged in, the label tab, the review tab and the operator console tab."""

import gradio as gr

from app.ui import console, label, review
from app.ui.common import EVENT, bind, whoami


def build_blocks(app, worker) -> gr.Blocks:
    """The whole UI for `app`; `worker` is the in-server sampling worker (start/stop/status)."""
    with gr.Blocks(title="prefloop", analytics_enabled=False) as blocks:
        with gr.Row(elem_id="pf-header"):
            who = gr.Markdown()
            gr.Button("Log out", link="/logout", size="sm", scale=0)
        with gr.Tab("Label", id="label", elem_id="pf-label-tab") as label_tab:
            label.build(blocks, app, worker)
        with gr.Tab("Review", id="review", visible=False, elem_id="pf-review") as review_tab:
            review.build(app, review_tab)
        with gr.Tab("Console", id="console", visible=False, elem_id="pf-console") as console_tab:
            timer = console.build(app, worker, console_tab)
        blocks.load(bind(whoami, app), None, [who, console_tab, review_tab], **EVENT)
        for tab in (label_tab, review_tab):  # the console's refresh timer runs only while the console is open
            tab.select(console.training.pause_timer, None, timer, **EVENT)
    blocks.queue(default_concurrency_limit=None)
    return blocks
