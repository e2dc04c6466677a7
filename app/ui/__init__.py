"""The Gradio web UI, one module per tab: the annotator's label view (label.py) and the operator console
(console/), laid out by build_blocks (blocks.py). Handlers live at module level and are bound to the App, never
closed over it; importing this package imports Gradio, which only the server does."""

from app.ui.assets import CSS, KEYBOARD_JS
from app.ui.blocks import build_blocks

__all__ = ["CSS", "KEYBOARD_JS", "build_blocks"]
