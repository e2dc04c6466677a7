"""Untrusted text (prompts, responses) to safe HTML, on the server: Gradio sanitises Markdown only in the browser.

Markdown is rendered by markdown-it-py with raw HTML off (so `<script>`, `<style>`, `<iframe>`, `onerror=` come out
as visible text), images shown as their alt text (nothing is fetched), and links kept only for http, https and
mailto, opening in a new tab with rel="noopener noreferrer nofollow". Everything else is escaped by markdown-it."""

import html
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt

SAFE_SCHEMES = ("http://", "https://", "mailto:")
LINK_REL = "noopener noreferrer nofollow"


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


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.validateLink = _safe_link
    md.add_render_rule("image", _image_as_text)
    md.add_render_rule("link_open", _link_open)
    return md


def render_markdown(text: str | None) -> str:
    """Safe HTML for untrusted Markdown `text`."""
    return _markdown().render(text or "")


def render_messages(messages: list[dict[str, Any]]) -> str:
    """A chat prompt (every turn) as safe HTML: the role as a heading, the content as Markdown."""
    parts = []
    for m in messages:
        role = html.escape(str(m.get("role", "")))
        parts.append(f'<div class="pf-turn pf-{role}"><div class="pf-role">{role}</div>'
                     f'{render_markdown(str(m.get("content", "")))}</div>')
    return '<div class="pf-prompt">' + "".join(parts) + "</div>"


def render_response(label: str, text: str) -> str:
    """One response pane: a heading (trusted, escaped anyway) over the response as safe Markdown."""
    return (f'<div class="pf-response"><div class="pf-pane-label">{html.escape(label)}</div>'
            f'<div class="pf-pane-body">{render_markdown(text)}</div></div>')


def render_notice(text: str) -> str:
    return f'<div class="pf-notice">{html.escape(text)}</div>'
