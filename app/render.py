"""Untrusted text (prompts, responses) to safe HTML, on the server: Gradio sanitises Markdown only in the browser.

Markdown is rendered by markdown-it-py with raw HTML off (so `<script>`, `<style>`, `<iframe>`, `onerror=` come out
as visible text), GitHub tables on (column alignment as a class, never a style attribute), images shown as their alt
text (nothing is fetched), and links kept only for http, https and mailto, opening in a new tab with
rel="noopener noreferrer nofollow". Everything else is escaped by markdown-it; raw text is escaped whole."""

import html
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt

SAFE_SCHEMES = ("http://", "https://", "mailto:")
LINK_REL = "noopener noreferrer nofollow"
ALIGNMENTS = ("left", "center", "right")


def _safe_link(url: str) -> bool:
    """Only absolute http(s) and mailto links survive; anything else renders as plain text."""
    lowered = url.strip().lower()
    return lowered.startswith(SAFE_SCHEMES)


def _image_as_text(renderer, tokens, idx, options, env) -> str:
    token = tokens[idx]
    alt = "".join(child.content for child in token.children or []) or token.content
    return f'<span class="pf-image">[image: {html.escape(alt)}]</span>'


def _link_open(renderer, tokens, idx, options, env) -> str:
    token = tokens[idx]
    token.attrs = {"href": token.attrs.get("href", ""), "rel": LINK_REL, "target": "_blank"}
    return renderer.renderToken(tokens, idx, options, env)


def _cell_open(renderer, tokens, idx, options, env) -> str:
    # markdown-it writes a column's alignment as style="text-align:…"; no style attribute ever leaves this module.
    token = tokens[idx]
    align = str(token.attrs.get("style", "")).removeprefix("text-align:")
    token.attrs = {"class": f"pf-align-{align}"} if align in ALIGNMENTS else {}
    return renderer.renderToken(tokens, idx, options, env)


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
    md.validateLink = _safe_link
    md.add_render_rule("image", _image_as_text)
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("th_open", _cell_open)
    md.add_render_rule("td_open", _cell_open)
    return md


def render_markdown(text: str | None) -> str:
    """Safe HTML for untrusted Markdown `text`."""
    return _markdown().render(text or "")


def render_raw(text: str | None) -> str:
    """Untrusted `text` exactly as written: escaped, whitespace kept."""
    return f'<pre class="pf-raw">{html.escape(text or "")}</pre>'


def render_both(text: str | None) -> str:
    """`text` rendered and raw, side by side in the page; the view's raw-text toggle (CSS) shows one of them."""
    return f'<div class="pf-md">{render_markdown(text)}</div>{render_raw(text)}'


def render_messages(messages: list[dict[str, Any]]) -> str:
    """A chat prompt (every turn) as safe HTML: the role as a heading, the content rendered and raw."""
    parts = []
    for m in messages:
        role = html.escape(str(m.get("role", "")))
        parts.append(f'<div class="pf-turn pf-{role}"><div class="pf-role">{role}</div>'
                     f'{render_both(str(m.get("content", "")))}</div>')
    return '<div class="pf-prompt">' + "".join(parts) + "</div>"


def render_response(label: str, text: str, elem_id: str | None = None) -> str:
    """One response card: a header naming it (trusted, escaped anyway) over the response, rendered and raw."""
    ident = f' id="{html.escape(elem_id)}"' if elem_id else ""
    name = html.escape(label)
    return (f'<section class="pf-response pf-card"{ident} aria-label="Response {name}">'
            f'<header class="pf-card-head"><span class="pf-badge">{name}</span>'
            f'<span class="pf-pane-label">Response {name}</span></header>'
            f'<div class="pf-pane-body">{render_both(text)}</div></section>')


def render_notice(text: str) -> str:
    return f'<div class="pf-notice">{html.escape(text)}</div>'
