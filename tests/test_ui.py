"""The web UI without a browser: how it is built (one module per tab, handlers at module level bound to the App,
Gradio only when serving), the label view's handlers (one service call each, for every kind of comparison; a refusal
is a notice beside its control, never an error over the page), and the safe HTML of cards of every kind, raw text,
tables, progress and history."""

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_queue import labels_of, make_kind_comparison
from test_render import LIVE_ATTRS, LIVE_TAGS, PAYLOADS

from app.render import render_both, render_markdown, render_raw, render_response
from app.services import labelling
from app.ui import label_parts

UI = Path(__file__).resolve().parents[1] / "app" / "ui"


# -- structure -----------------------------------------------------------------------------------------------------
def test_importing_the_cli_does_not_import_gradio():
    code = "import app.cli, sys; assert 'gradio' not in sys.modules and 'app.ui' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=UI.parents[1])


def test_every_event_handler_is_a_module_level_function_of_app_ui(web_app):
    from app.services.workers import GenerationWorker
    from app.ui import build_blocks

    blocks = build_blocks(web_app, GenerationWorker(web_app))
    handlers = [inspect.unwrap(fn.fn) for fn in blocks.fns.values() if fn.fn is not None]
    assert len(handlers) > 20
    for handler in handlers:
        assert handler.__module__.startswith("app.ui"), handler
        assert "<locals>" not in handler.__qualname__, handler.__qualname__  # not a closure over the App
    assert all(fn.api_visibility == "private" for fn in blocks.fns.values())


def test_ui_modules_say_what_they_own_and_keep_functions_short():
    for path in [*UI.rglob("*.py"), UI.parent / "render.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{path} has no docstring"
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 40, f"{path}:{node.lineno} {node.name} is long"


# -- the label view's handlers, called as Gradio calls them ----------------------------------------------------------
def request(name: str = "alice"):
    return SimpleNamespace(username=name)


@pytest.fixture
def counted(monkeypatch):
    """Calls of the labelling service's functions, by name, in order."""
    calls: list[str] = []
    for name in ("label_and_next", "give_and_next", "label_view", "undo_and_view", "edit_and_next", "label",
                 "next_for", "my_progress"):
        real = getattr(labelling, name)
        monkeypatch.setattr(labelling, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or
                            _real(*a, **k))
    return calls


def view_of(result: tuple) -> dict:
    from app.ui.label import View

    assert len(result) == len(View._fields)
    return dict(zip(View._fields, result, strict=True))


@pytest.fixture
def alice(web_app, password_hash):
    """An annotator's account: the label view refuses a name with no enabled account behind it."""
    web_app.store.accounts.add_user("alice", "annotator", password_hash)


@pytest.fixture
def worker(web_app):
    """The server's sampling worker, never started: the label view asks it only whether it is sampling."""
    from app.services.workers import GenerationWorker

    return GenerationWorker(web_app)


def test_a_click_is_one_service_call_and_returns_the_next_comparison(web_app, seed, counted, worker, alice):
    from app.ui.label import label_click, load_view

    seed(web_app.store, 2, texts=lambda i: (f"prompt {i}", f"a{i}", f"b{i}"))
    shown = view_of(load_view(web_app, worker, request()))
    assert shown["state"]["comparison_id"] and "pf-left" in shown["cards"] and "pf-right" in shown["cards"]
    counted.clear()
    after = view_of(label_click(web_app, worker, "left", shown["state"], "  because  ", shown["history"], request()))
    assert counted[0] == "label_and_next" and counted.count("label_and_next") == 1
    assert not {"label_view", "my_progress", "next_for"} & set(counted)  # all inside the one transaction
    assert after["state"]["comparison_id"] != shown["state"]["comparison_id"]
    assert after["history"][0]["choice"] == "A better" and "prompt" in after["history"][0]["prompt"]
    assert "My labels today: <strong>1</strong>" in after["progress"]
    assert after["bar_notice"] == after["edit_notice"] == ""


def test_a_refusal_is_one_notice_beside_its_control_and_nothing_else_changes(web_app, seed, worker, alice):
    import gradio as gr

    from app.ui.label import submit_edit

    seed(web_app.store, 1)
    refused = view_of(submit_edit(web_app, worker, None, "A", "better text", "", [], request()))
    assert "no comparison to edit" in refused["edit_notice"] and refused["bar_notice"] == ""
    skipped = [k for k, v in refused.items() if isinstance(v, dict) and v.get("__type__") == "update"]
    assert set(skipped) == set(refused) - {"edit_notice", "bar_notice"}, refused
    assert all(refused[k] == gr.skip() for k in skipped)


def test_a_bug_in_a_handler_is_a_plain_sentence_not_a_traceback(web_app, monkeypatch, worker, alice):
    from app.ui.label import load_view

    def broken(*_a, **_k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(labelling, "open_view", broken)
    shown = view_of(load_view(web_app, worker, request()))
    assert "Something went wrong" in shown["bar_notice"] and "secret" not in shown["bar_notice"]


def test_undo_names_the_choice_as_shown_and_forgets_it(web_app, seed, counted, worker, alice):
    from app.ui.label import label_click, load_view, undo_label

    seed(web_app.store, 2)
    shown = view_of(load_view(web_app, worker, request()))
    after = view_of(label_click(web_app, worker, "right", shown["state"], "", [], request()))
    counted.clear()
    undone = view_of(undo_label(web_app, worker, after["history"], request()))
    assert counted[0] == "undo_and_view" and counted.count("undo_and_view") == 1
    assert "B better" in undone["bar_notice"] and undone["history"] == []
    assert undone["state"]["comparison_id"] == shown["state"]["comparison_id"]
    again = view_of(undo_label(web_app, worker, [], request()))
    assert "Nothing undone" in again["bar_notice"] and "pf-inline-warn" in again["bar_notice"]


# -- the HTML of the view ----------------------------------------------------------------------------------------
def test_tables_render_with_alignment_as_a_class():
    out = render_markdown("| a | b | c |\n|:-|:-:|--:|\n| 1 | <b>2</b> | [x](javascript:alert(1)) |")
    assert "<table>" in out and "style" not in out
    assert out.count('class="pf-align-left"') == 2 and out.count('class="pf-align-right"') == 2
    assert "&lt;b&gt;2&lt;/b&gt;" in out and "<a " not in out  # a cell is as safe as a paragraph


@pytest.mark.parametrize("payload", PAYLOADS)
def test_raw_and_both_are_inert(payload):
    for out in (render_raw(payload), render_both(payload), render_response("A", payload, "pf-left"),
                render_markdown(f"| x |\n|--|\n| {payload} |")):
        assert not LIVE_TAGS.search(out), out
        assert not LIVE_ATTRS.search(out), out


def test_raw_text_is_exactly_the_text_escaped():
    text = "(2+2)*3 = 12, because 4*3 = 12\n  <b>&amp;</b>"
    out = render_raw(text)
    assert out == '<pre class="pf-raw">(2+2)*3 = 12, because 4*3 = 12\n  &lt;b&gt;&amp;amp;&lt;/b&gt;</pre>'
    both = render_both(text)
    assert both.index('class="pf-md"') < both.index('class="pf-raw"') and "<em>" in both


def test_a_card_is_headed_by_its_letter():
    card = render_response("B", "hello", "pf-right")
    assert 'id="pf-right"' in card and ">B</span>" in card and "Response B" in card


def test_history_keeps_five_newest_first_and_one_entry_per_label():
    history: list = []
    for i in range(7):
        history = label_parts.remember(history, i, "left" if i % 2 else "tie", f"prompt {i}")
    history = label_parts.remember(history, 6, "tie", "prompt 6")  # a repeated click is the same label
    assert [h["label_id"] for h in history] == [6, 5, 4, 3, 2]
    assert label_parts.forget(history, 6)[0]["label_id"] == 5
    html_out = label_parts.history_html(label_parts.remember([], 1, "both_bad", "<script>x</script>"))
    assert "Both bad" in html_out and "<script>" not in html_out and "&lt;script&gt;" in html_out


def test_progress_notice_and_snippet_are_plain_and_escaped():
    progress = label_parts.progress_html({"labelled_today": 3, "left": 1, "open": 9})
    assert re.search(r'<progress [^>]*value="3" max="4"', progress) and "style" not in progress
    assert label_parts.notice_html("") == ""
    assert "&lt;img" in label_parts.notice_html("<img src=x onerror=1>", "warn")
    long_prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "word " * 100}]
    snippet = label_parts.snippet(long_prompt)
    assert snippet.startswith("word word") and snippet.endswith("…") and len(snippet) == label_parts.SNIPPET_CHARS


# -- rankings, ratings and thumbs ------------------------------------------------------------------------------------
def test_a_submitted_ranking_is_one_service_call_and_stored_by_position(web_app, counted, worker, alice):
    from app.ui.label import give_click, load_view

    cid = make_kind_comparison(web_app.store, "ranking", 3)
    shown = view_of(load_view(web_app, worker, request()))
    assert shown["state"]["kind"] == "ranking" and shown["state"]["comparison_id"] == cid
    positions = [int(p) for p in re.findall(r'class="pf-response pf-card pf-rank-card" data-slot data-position="(\d)"',
                                            shown["cards"])]
    assert sorted(positions) == [0, 1, 2] and 'data-kind="ranking"' in shown["cards"]
    counted.clear()
    given = json.dumps({"ranking": [3, 1, 1]})
    after = view_of(give_click(web_app, worker, "ranked", shown["state"], " close call ", shown["history"], given,
                               request()))
    assert counted[0] == "give_and_next" and counted.count("give_and_next") == 1
    assert not {"label_view", "my_progress", "next_for"} & set(counted)
    assert after["state"] is None and after["history"][0]["choice"] == "Ranked" and after["bar_notice"] == ""
    [label] = labels_of(web_app.store, cid)
    assert (label.choice, label.ranking, label.rationale) == ("ranked", [3, 1, 1], "close call")


@pytest.mark.parametrize("given, message", [
    ("{not json", "cannot read"),
    (json.dumps(["ranking"]), "cannot read"),
    (json.dumps({"ranking": [1, None, 2]}), "whole number from 1 to 3"),
])
def test_an_unreadable_or_incomplete_ranking_is_a_notice_and_nothing_is_stored(web_app, worker, alice, given,
                                                                             message):
    from app.ui.label import give_click, load_view

    cid = make_kind_comparison(web_app.store, "ranking", 3)
    shown = view_of(load_view(web_app, worker, request()))
    refused = view_of(give_click(web_app, worker, "ranked", shown["state"], "", [], given, request()))
    assert message in refused["bar_notice"] and "pf-inline-warn" in refused["bar_notice"]
    assert labels_of(web_app.store, cid) == []


def test_good_and_bad_send_nothing_but_the_thumb(web_app, worker, alice):
    from app.ui.label import give_click, load_view

    cid = make_kind_comparison(web_app.store, "thumbs", 1)
    shown = view_of(load_view(web_app, worker, request()))
    assert shown["state"]["kind"] == "thumbs" and 'data-kind="thumbs"' in shown["cards"]
    after = view_of(give_click(web_app, worker, "down", shown["state"], "", [], "", request()))
    assert after["history"][0]["choice"] == "Bad" and labels_of(web_app.store, cid)[0].choice == "down"


def test_a_rating_view_asks_every_criterion_of_every_response_with_its_help(web_app, worker, alice):
    from app.ui.label import load_view

    web_app.settings.labelling.rating_scale = 7
    web_app.settings.labelling.rating_criteria = {"clarity": "Easy <b>to</b> follow?", "tone": "Polite?"}
    make_kind_comparison(web_app.store, "rating", 3)
    cards = view_of(load_view(web_app, worker, request()))["cards"]
    assert cards.count('class="pf-rate-row"') == 6 and cards.count('data-criterion="clarity"') == 3
    assert cards.count('<span class="pf-help">Easy &lt;b&gt;to&lt;/b&gt; follow?</span>') == 3
    assert cards.count('title="Polite?"') == 3 and cards.count('data-top="7"') == 6
    assert re.findall(r'data-pick="(\d)"', cards)[:7] == [str(n) for n in range(1, 8)]


def live_markup(out: str) -> list[str]:
    """The elements of `out` that could run, load or restyle something, and every attribute that could: what a
    browser would parse, so an escaped 'onerror=' inside an attribute's value is text, as it is there."""
    from html.parser import HTMLParser

    live_tags = {"script", "style", "iframe", "img", "svg", "object", "embed", "link", "meta", "form", "input",
                 "base", "video", "audio", "source"}
    found = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend([tag] if tag in live_tags else [])
            found.extend(f"{tag} {name}" for name, _ in attrs
                         if name.startswith("on") or name in ("style", "src", "srcset", "href", "formaction"))

    Parser().feed(out)
    return found


@pytest.mark.parametrize("payload", PAYLOADS)
def test_cards_of_every_kind_are_inert(payload):
    from data.queue import Shown

    shown = (Shown(1, 11, payload), Shown(0, 10, f"{payload} again"))
    outs = [label_parts.ranking_html(1, shown), label_parts.thumbs_html(1, payload)]
    for out in outs:  # the responses' text: as render_response's
        assert not LIVE_TAGS.search(out) and not LIVE_ATTRS.search(out), out
    # The criteria and their help come from the settings, shown as text in elements and attributes alike.
    outs.append(label_parts.rating_html(1, shown, 5, {payload: payload, "plain": f"help {payload}"}))
    for out in outs:
        assert [x for x in live_markup(out) if not x.startswith("a href")] == [], out


def test_no_two_buttons_of_one_kinds_bar_share_a_key():
    from app.ui.assets import _KEYS
    from app.ui.label import CHOICE_BUTTONS, KIND_BUTTONS, RAW_KEY, UNDO_KEY

    pair = {key for *_, key, _elem in CHOICE_BUTTONS}
    kinds = {choice: key.lower() for choice, _text, key, _elem in KIND_BUTTONS}
    bars = [pair, {kinds["ranked"], "s"}, {kinds["rated"], "s"}, {kinds["up"], kinds["down"], "s"}]
    for bar in bars:
        assert len(bar | {UNDO_KEY, RAW_KEY}) == len(bar) + 2, bar
        assert not any(key.isdigit() for key in bar)  # number keys give ranks and scores
    assert _KEYS["enter"] == ["pf-btn-rank", "pf-btn-rate"] and _KEYS["s"] == ["pf-btn-skip"]
