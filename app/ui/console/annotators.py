"""The console's annotators tab: accounts (add, reset a password, disable, change role, revoke tokens) and how
each person labels (counts, agreement, time per label)."""

import gradio as gr

from app.ui.common import section


def build(app, triggers) -> None:
    with section("Accounts", elem_id="pf-accounts"):
        gr.Markdown("Coming in this change.")
