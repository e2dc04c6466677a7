"""The web UI in a real headless Chromium (Playwright, sync API): labelling with the keyboard, a rationale and an
edit; rankings by number keys and by drag, ratings with their help text, thumbs; hostile prompts and responses that
must not run, load or restyle anything; the operator's export download; an annotator who cannot see the console.
Skipped only when Chromium is absent and CI is not set."""

import json
import re

import pytest
from browsing import BROWSER, seed_kind
from conftest import seed_comparisons
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlmodel import select

from app.services import console, labelling
from data.models import Comparison, Label
from data.queue import Given, submit_label

pytestmark = BROWSER

# Hostile text for prompts and responses: none of it may run, fetch from elsewhere or restyle the page.
PAYLOADS = [
    "<script>window.__pwned = 'script'; document.title = 'pwned'</script>",
    "<img src=x onerror=\"window.__pwned = 'onerror'; document.title = 'pwned'\">",
    "<svg onload=\"window.__pwned = 'svg'\"><circle r=10 /></svg>",
    "<iframe src=\"https://evil.example/frame\"></iframe>",
    "<style>body { display: none !important }</style>",
    "<div style=\"position:fixed;inset:0;background:red\">overlay</div>",
    "<a href=\"javascript:window.__pwned='link'\" id=evil-link>click me</a>",
    "[click me](javascript:window.__pwned='md-link')",
    "[click me](&#106;avascript:window.__pwned='entity-link')",
    "![tracker](https://evil.example/pixel.png)",
    "![tracker](http://evil.example/pixel.png \"x\")",
    "<link rel=stylesheet href=https://evil.example/x.css>",
    "<meta http-equiv=refresh content=\"0;url=https://evil.example\">",
    "<object data=\"https://evil.example/x.swf\"></object><embed src=\"https://evil.example/y\">",
    "```\n</code></pre><script>window.__pwned = 'fence'</script>\n```",
    "${window.__pwned = 'template'} {{constructor.constructor('window.__pwned=1')()}}",
    "<details open ontoggle=\"window.__pwned='toggle'\">x</details>",
    "<video><source onerror=\"window.__pwned='video'\"></video>",
]


def labels(app) -> list[Label]:
    with app.store.read() as s:
        return list(s.exec(select(Label).order_by(Label.id)).all())


def test_annotator_labels_with_the_keyboard_a_rationale_and_an_edit(site, session, shots):
    url, app = site
    texts = {}
    ids = seed_comparisons(app.store, 4, texts=lambda i: (f"Question {i}", f"first answer {i}", f"second answer {i}"))
    s = session("alice")
    page = s.page
    shown = []
    for n, key in enumerate(["a", "b", "t"]):
        left, right = s.pane_texts()
        shown.append((left, right))
        if n == 2:  # a rationale on the third, typed into its field; keys typed there do not label
            page.fill("#pf-rationale textarea", "both fine, tbh")
            assert s.labels_today() == n
            page.click("#pf-progress")
        page.keyboard.press(key)
        s.wait_labels_today(n + 1)
    got = labels(app)
    assert [x.choice for x in got][2] == "tie" and got[2].rationale == "both fine, tbh"
    with app.store.read() as db:
        for label, (left, _right), expected in zip(got, shown, ["left", "right"], strict=False):
            c = db.get(Comparison, label.comparison_id)
            texts[c.id] = c
            # The recorded choice is the response that was on the clicked side, whatever the shown order.
            a_text = f"first answer {ids.index(c.id)}"
            clicked_a = (left == a_text) == (expected == "left")
            assert label.choice == ("a" if clicked_a else "b")
            assert label.shown_order == ("ab" if left == a_text else "ba")
    # The edit: correct the response shown as B into a new preferred response.
    left, right = s.pane_texts()
    page.get_by_text("Edit a response").click()
    assert page.input_value("#pf-edit-text textarea") == left  # the editor starts with response A
    page.locator("#pf-edit-side").get_by_text("B", exact=True).click()
    page.wait_for_function("(text) => document.querySelector('#pf-edit-text textarea').value === text", arg=right)
    page.fill("#pf-edit-text textarea", right + " (corrected)")
    page.click("#pf-btn-edit")
    page.wait_for_function("() => (document.querySelector('#pf-prompt')?.innerText || '').includes('Nothing left')",
                           timeout=20_000)
    # Nothing to label: the choices rest (Undo still works), and the page is back at its top.
    page.wait_for_function("() => getComputedStyle(document.querySelector('#pf-btn-left')).opacity < 0.5")
    assert page.evaluate("window.scrollY") == 0
    page.screenshot(path=str(shots / "label-done.png"))
    with app.store.read() as db:
        edits = db.exec(select(Comparison).where(Comparison.source == "edit")).all()
    assert len(edits) == 1
    # 3 labels and the edit pair's; whatever the edit leaves on the original is a skip, which counts for nobody.
    assert console.stats(app)["labels_by_annotator"]["alice"] == 4
    assert "Thanks" in page.inner_text("#pf-bar-notice") and "Edited B" in page.inner_text("#pf-recent")
    assert not s.remote and not s.dialogs


def test_hostile_text_does_not_run_load_or_restyle(site, session):
    url, app = site
    n = len(PAYLOADS)
    seed_comparisons(app.store, n, texts=lambda i: (f"{PAYLOADS[i]}\n\nmarker-{i:02d}", f"{PAYLOADS[i]} left {i}",
                                                     f"{PAYLOADS[(i + 1) % n]} right {i}"))
    s = session("alice")
    page = s.page
    title = page.title()
    for i in range(n):
        page.wait_for_function("(m) => (document.querySelector('#pf-prompt')?.innerText || '').includes(m)",
                               arg=f"marker-{i:02d}", timeout=20_000)
        if i == n // 2:  # the second half in raw text: escaped, so just as inert
            page.keyboard.press("r")
            page.wait_for_function("() => document.body.classList.contains('pf-show-raw')")
        page.wait_for_timeout(150)  # give any handler that slipped through time to fire
        found = page.evaluate("""() => {
            // Everything the untrusted texts became: the prompt's turns and the two cards' bodies, rendered and raw.
            const panes = [...document.querySelectorAll('#pf-prompt .pf-turn, #pf-left .pf-pane-body, '
                                                        + '#pf-right .pf-pane-body')];
            const bad = 'script, style, iframe, img, svg, object, embed, link, meta, video, source, details, form, '
                        + 'input, [style], [src], [srcset]';
            return {
                panes: panes.length,
                pwned: window.__pwned === undefined ? null : String(window.__pwned),
                injected: panes.flatMap(p => [...p.querySelectorAll(bad)].map(e => e.outerHTML)),
                handlers: panes.flatMap(p => [...p.querySelectorAll('*')]).flatMap(e => [...e.attributes])
                               .map(a => a.name).filter(name => name.startsWith('on')),
                hrefs: panes.flatMap(p => [...p.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))),
                bodyVisible: getComputedStyle(document.body).display !== 'none',
            };
        }""")
        assert found["panes"] == 3, found
        assert found["pwned"] is None, found
        assert not found["injected"] and not found["handlers"], found
        assert all(h.startswith(("http://", "https://", "mailto:")) for h in found["hrefs"]), found
        assert found["bodyVisible"]
        assert page.title() == title
        if i == 6 and page.locator("#pf-left a").count():
            page.locator("#pf-left a").first.click()
        page.keyboard.press("s")
        page.wait_for_function("(m) => !(document.querySelector('#pf-prompt')?.innerText || '').includes(m)",
                               arg=f"marker-{i:02d}", timeout=20_000)
    assert page.evaluate("window.__pwned") is None
    assert not s.remote, s.remote
    assert not s.dialogs
    assert len(labels(app)) == n  # every comparison was seen (and skipped)


def test_operator_exports_a_download(site, session, tmp_path):
    url, app = site
    ids = seed_comparisons(app.store, 2)
    for cid in ids:
        submit_label(app.store, "olivia", cid, "a", "ab")
    s = session("olivia")
    page = s.page
    page.get_by_role("tab", name="Console").click()
    page.wait_for_function("() => (document.querySelector('#pf-summary')?.innerText || '').includes('Queue:')")
    assert "2 prompts" in page.inner_text("#pf-summary")
    page.get_by_role("tab", name="Data").click()
    page.click("#pf-btn-export")
    link = page.locator("#pf-export-file a").first
    link.wait_for(timeout=20_000)
    with page.expect_download() as info:
        link.click()
    path = tmp_path / "export.jsonl"
    info.value.save_as(path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2 and all(r["chosen"][0]["role"] == "assistant" for r in rows)
    assert not s.remote


def test_annotators_do_not_see_the_console(site, session):
    url, app = site
    seed_comparisons(app.store, 1)
    s = session("alice")
    assert s.page.get_by_role("tab", name="Label").is_visible()
    assert s.page.get_by_role("tab", name="Console").count() == 0
    assert not s.page.locator("#pf-btn-export").is_visible()
    assert not s.remote


def test_operator_follows_rounds_and_a_refused_round_is_a_plain_message(site, session):
    url, app = site
    v0 = app.store.versions.get("v0")
    run = app.store.runs.create(v0.id, [], {})
    for step, loss in ((1, 0.69), (2, 0.61)):
        app.store.runs.log_step(run.id, {"step": step, "max_steps": 2, "loss": loss, "rewards/margins": 0.1 * step,
                                             "rewards/accuracies": 0.5 + 0.2 * step})
    app.store.runs.finish(run.id, "done", report={
        "eval": {"before": {"accuracy": 0.5, "margin": 0.0}, "after": {"accuracy": 0.75, "margin": 0.25}},
        "probe": {"before": {"mean_tokens": 12.0, "eos_rate": 0.5}, "after": {"mean_tokens": 10.0, "eos_rate": 1.0}},
        "deploy": "not deployed: run `prefloop deploy VERSION`", "phases": [["loading", 1.5], ["training", 3.25]]})
    s = session("olivia")
    page = s.page
    page.get_by_role("tab", name="Console").click()
    page.get_by_role("tab", name="Models and rounds").click()
    page.wait_for_function("() => (document.querySelector('#pf-rounds')?.innerText || '').includes('0.500 → 0.750')",
                           timeout=20_000)
    table = page.inner_text("#pf-rounds")
    assert "done" in table and "0.000 → 0.250" in table and "12.0 → 10.0" in table and "0.50 → 1.00" in table
    progress = page.inner_text("#pf-training-progress")
    assert f"Round {run.id}:" in progress and "step 2 of 2" in progress and "automatic rounds are off" in progress
    assert "Time 4.8 s: loading 1.5 s, training 3.2 s" in progress  # where the round's time went
    assert page.locator("#pf-round-plot").is_visible()
    page.click("#pf-btn-round-start")  # no labelled pairs: refused, with a plain message
    page.wait_for_function("() => (document.querySelector('#pf-training-result')?.innerText || '')"
                           ".includes('not started')",
                           timeout=20_000)
    result = page.inner_text("#pf-training-result")
    assert "only 0 new labelled pair(s)" in result and "Traceback" not in page.inner_text("body")
    assert len(app.store.runs.all()) == 1
    # A running round's progress refreshes by itself (the console's timer), and Cancel stops the one shown.
    running = app.store.runs.create(v0.id, [], {})
    app.store.runs.update(running.id, status="running")
    app.store.runs.log_step(running.id, {"step": 1, "max_steps": 4, "loss": 0.7})
    page.wait_for_function("() => (document.querySelector('#pf-training-progress')?.innerText || '')"
                           ".includes('step 1 of 4')",
                           timeout=20_000)
    page.click("#pf-btn-round-cancel")
    page.wait_for_function("() => (document.querySelector('#pf-training-result')?.innerText || '')"
                           ".includes('cancelling')",
                           timeout=20_000)
    assert app.store.runs.get(running.id).status == "cancelling"
    page.get_by_role("tab", name="Judges").click()
    page.wait_for_function("() => (document.querySelector('#pf-judge-status')?.innerText || '').includes('No judge')",
                           timeout=20_000)
    assert not s.remote and not s.dialogs


def test_operator_discards_a_label_in_the_console_and_an_annotator_undoes_theirs(site, session, shots):
    url, app = site
    first, second = seed_comparisons(app.store, 2, texts=lambda i: (f"Question {i}", f"first answer {i}",
                                                                    f"second answer {i}"))
    alice = session("alice")
    page = alice.page
    shown = alice.pane_texts()
    page.keyboard.press("a")
    alice.wait_labels_today(1)
    assert alice.pane_texts() != shown
    page.click("#pf-btn-undo")  # the label is deleted and its comparison comes back, in the same order
    alice.wait_labels_today(0)
    page.wait_for_function(f"() => (document.querySelector('#pf-left')?.innerText || '').includes({shown[0]!r})",
                           timeout=20_000)
    assert alice.pane_texts() == shown and labels(app) == []
    page.screenshot(path=str(shots / "label-undo.png"), full_page=True)
    page.keyboard.press("b")
    alice.wait_labels_today(1)
    [mine] = labels(app)

    olivia = session("olivia")
    page = olivia.page
    page.get_by_role("tab", name="Console").click()
    page.get_by_role("tab", name="Data").click()
    page.fill("#pf-curate-id input", str(mine.id))
    page.click("#pf-btn-show")  # what the id stands for, before discarding it
    page.wait_for_function("() => (document.querySelector('#pf-curate-show')?.innerText || '').includes('chose')",
                           timeout=20_000)
    assert f"alice (human) chose {mine.choice}" in page.inner_text("#pf-curate-show")
    assert "second answer" in page.inner_text("#pf-curate-show")
    hostile = "<img src=x onerror=\"window.__pwned = 'reason'\"> clicked blindly"
    page.fill("#pf-curate-reason textarea", hostile)
    page.click("#pf-btn-discard")
    page.wait_for_function("() => (document.querySelector('#pf-curate-result')?.innerText || '').includes('Discarded')",
                           timeout=20_000)
    assert f"comparison {mine.comparison_id} is now open" in page.inner_text("#pf-curate-result")
    page.wait_for_function("() => (document.querySelector('#pf-audit')?.innerText || '').includes('clicked blindly')",
                           timeout=20_000)
    audit = page.inner_text("#pf-audit")
    assert "olivia" in audit and "discard" in audit and "<img" in audit  # shown as text, never as markup
    assert page.evaluate("() => window.__pwned") is None
    page.wait_for_function("() => (document.querySelector('#pf-curate-show')?.innerText || '').includes('discarded')",
                           timeout=20_000)
    page.wait_for_timeout(500)  # the panel leaves its loading state
    page.screenshot(path=str(shots / "console-discard.png"), full_page=True)
    with app.store.read() as s:
        assert s.get(Comparison, mine.comparison_id).status == "open"
    # A reason is required: refused with a plain message, nothing changes.
    page.fill("#pf-curate-reason textarea", "")
    page.click("#pf-btn-discard")
    page.wait_for_selector("text=give a reason", timeout=20_000)
    assert "Traceback" not in page.inner_text("body")
    assert not olivia.remote and not alice.remote
    assert {first, second} >= {mine.comparison_id}


# -- the annotator's view: cards, the choice bar, raw text, undo and history, errors, one request per click -----------
LONG_RESPONSE = "\n\n".join(f"Paragraph {i}: " + "a long answer that keeps going " * 18 for i in range(110))
MATH = "(2+2)*3 = 12, because 4*3 = 12"
TABLE = "| animal | legs |\n|:--|--:|\n| cat | 4 |\n| bird | 2 |"


def _boxes(page) -> dict:
    return page.evaluate("""() => Object.fromEntries(['#pf-left', '#pf-right', '#pf-bar', '#pf-btn-left',
        '#pf-btn-skip', '#pf-btn-undo', '#pf-guidelines'].map(s => {
            const r = document.querySelector(s).getBoundingClientRect();
            return [s, {x: r.x, y: r.y, w: r.width, h: r.height, bottom: r.bottom}];
        }))""")


def _on_top(page, selector: str) -> bool:
    """Whether a click at the middle of `selector` lands on it (it is on screen and nothing covers it)."""
    return page.evaluate("""(s) => { const e = document.querySelector(s); const r = e.getBoundingClientRect();
        const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
        return r.bottom <= window.innerHeight && r.top >= 0 && !!hit && (hit === e || e.contains(hit)); }""", selector)


@pytest.mark.parametrize("width", [1400, 420])
def test_cards_and_a_choice_bar_that_stays_on_screen(site, session, shots, width):
    url, app = site
    assert len(LONG_RESPONSE) > 60_000
    seed_comparisons(app.store, 2, texts=lambda i: (f"Explain, at length, topic {i}.", LONG_RESPONSE if i == 0 else
                                                    f"A short answer {i}.", f"Another short answer {i}.\n\n{TABLE}"))
    s = session("alice", width=width, height=900)
    page = s.page
    head = page.evaluate("() => [...document.querySelectorAll('.pf-card-head')].map(h => h.innerText)")
    assert [" ".join(h.split()) for h in head] == ["A Response A", "B Response B"]
    page.wait_for_timeout(300)  # fonts and layout settle before the picture
    page.screenshot(path=str(shots / f"label-{width}.png"))
    boxes = _boxes(page)
    left, right = boxes["#pf-left"], boxes["#pf-right"]
    if width >= 1000:  # side by side, the same width
        assert abs(left["y"] - right["y"]) < 2 and left["x"] + left["w"] <= right["x"]
        assert abs(left["w"] - right["w"]) < 2
    else:  # stacked, each the full width
        assert right["y"] >= left["bottom"] - 1 and abs(left["x"] - right["x"]) < 2
        assert left["w"] > width * 0.8
    assert page.evaluate("document.documentElement.scrollHeight") > 8_000  # the long response is all there
    for where in ("top", "middle", "bottom"):
        page.evaluate(f"window.scrollTo(0, {{'top': 0, 'middle': document.documentElement.scrollHeight / 2, "
                      f"'bottom': document.documentElement.scrollHeight}}['{where}'])")
        page.wait_for_timeout(100)
        for button in ("#pf-btn-left", "#pf-btn-right", "#pf-btn-tie", "#pf-btn-both-bad", "#pf-btn-skip",
                       "#pf-btn-undo"):
            assert _on_top(page, button), (where, button)
    # Scrolled to the end, the last part of the view clears the bar.
    boxes = _boxes(page)
    assert boxes["#pf-guidelines"]["bottom"] <= boxes["#pf-bar"]["y"] + 1, boxes
    page.screenshot(path=str(shots / f"label-{width}-scrolled.png"))
    page.click("#pf-btn-right")  # the bar's button labels from wherever the annotator has scrolled to
    s.wait_labels_today(1)
    assert labels(app)[0].choice in ("a", "b")
    # and the next comparison is shown from its top, not from where the long one was scrolled to
    page.wait_for_function("() => document.getElementById('pf-toolbar').getBoundingClientRect().top >= 0")
    assert _on_top(page, "#pf-btn-left")
    assert not s.remote and not s.dialogs


def test_raw_text_is_one_key_away_and_tables_render(site, session, shots):
    url, app = site
    seed_comparisons(app.store, 2, texts=lambda i: (f"Why is {MATH}? ({i})", f"{MATH}\n\n{TABLE}",
                                                    f"<b>not bold</b> {i}"))
    s = session("alice")
    page = s.page
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    card = "#pf-left .pf-pane-body" if "animal" in s.pane_texts()[0] else "#pf-right .pf-pane-body"
    rendered = page.inner_text(card)
    assert MATH not in rendered and "4*3" not in rendered  # Markdown ate the stars: why the toggle exists
    assert page.locator(f"{card} table").count() == 1 and "|" not in rendered
    assert page.locator(f"{card} td.pf-align-right").count() == 2  # alignment as a class, never a style
    page.keyboard.press("r")
    page.wait_for_function("() => document.body.classList.contains('pf-show-raw')")
    raw = page.inner_text(card)
    assert MATH in raw and "| cat | 4 |" in raw
    assert MATH in page.inner_text("#pf-prompt")  # the prompt too
    assert "<b>not bold</b>" in "".join(s.pane_texts())  # escaped text, never markup (so too when rendered)
    assert page.locator("#pf-raw input").is_checked()
    page.screenshot(path=str(shots / "label-raw.png"))
    assert not [r for r in requests if "/gradio_api/" in r]  # the toggle is in the page: no request
    page.keyboard.press("t")  # the next comparison shows raw too: the toggle belongs to the view
    s.wait_labels_today(1)
    assert "<b>not bold</b>" in "".join(s.pane_texts())
    page.click("#pf-raw input")  # and the checkbox turns it off again
    page.wait_for_function("() => !document.body.classList.contains('pf-show-raw')")
    assert "| cat | 4 |" not in "".join(s.pane_texts()) and page.locator("#pf-cards table").count() == 1
    assert not s.remote and not s.dialogs


def test_undo_and_my_recent_labels(site, session, shots):
    url, app = site
    seed_comparisons(app.store, 3, texts=lambda i: (f"Question number {i}", f"first {i}", f"second {i}"))
    s = session("alice")
    page = s.page
    first_prompt = page.inner_text("#pf-prompt")
    page.keyboard.press("a")
    s.wait_labels_today(1)
    page.keyboard.press("t")
    s.wait_labels_today(2)
    recent = page.inner_text("#pf-recent")
    assert recent.index("Tie") < recent.index("A better")  # newest first
    assert recent.count("Question number") == 2
    assert page.locator("#pf-progress progress").get_attribute("value") == "2"
    assert page.locator("#pf-progress progress").get_attribute("max") == "3"  # 2 done, 1 left for me
    page.keyboard.press("u")  # undo the tie: its comparison comes back
    s.wait_labels_today(1)
    assert "Undone" in page.inner_text("#pf-bar-notice") and "Tie" in page.inner_text("#pf-bar-notice")
    assert "Tie" not in page.inner_text("#pf-recent") and "A better" in page.inner_text("#pf-recent")
    assert [x.choice for x in labels(app)] == [labels(app)[0].choice] and len(labels(app)) == 1
    page.screenshot(path=str(shots / "label-undone.png"), full_page=True)
    page.click("#pf-btn-undo")
    s.wait_labels_today(0)
    page.wait_for_function("(p) => document.querySelector('#pf-prompt').innerText === p", arg=first_prompt)
    assert page.inner_text("#pf-recent").strip() == "" and labels(app) == []
    page.click("#pf-btn-undo")  # nothing left to undo: said once, beside the button
    page.wait_for_function("() => (document.querySelector('#pf-bar-notice')?.innerText || '')"
                           ".includes('Nothing undone')")
    assert page.inner_text("body").count("Nothing undone") == 1
    assert not re.search(r"\bError\b", page.inner_text("body"))
    assert not s.remote and not s.dialogs


def test_a_refused_edit_shows_once_beside_its_control(site, session, shots):
    url, app = site
    seed_comparisons(app.store, 1, texts=lambda i: ("Fix this", "first draft", "second draft"))
    s = session("alice", width=420, height=900)
    page = s.page
    before = (page.inner_text("#pf-prompt"), s.pane_texts())
    page.get_by_text("Edit a response").click()
    # The view fills the editor with the chosen response, and a late view update can fill it again over what was
    # typed (the Save then says "does not change"): type and save again until the blank edit itself is refused.
    for _ in range(3):
        page.fill("#pf-edit-text textarea", "   ")
        page.click("#pf-btn-edit")
        try:
            page.wait_for_function("() => (document.querySelector('#pf-edit-notice')?.innerText || '')"
                                   ".includes('empty')", timeout=10_000)
            break
        except PlaywrightTimeout:
            continue
    page.wait_for_timeout(300)
    body = page.inner_text("body")
    assert body.count("The edited response is empty") == 1  # beside the Save button, nowhere else
    assert not re.search(r"\bError\b", body)  # no error badge over the prompt, the cards or the editor
    assert (page.inner_text("#pf-prompt"), s.pane_texts()) == before
    assert page.input_value("#pf-edit-text textarea") == "   "  # what was typed stays, to fix it
    page.locator("#pf-edit-notice").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "label-420-edit-refused.png"))
    assert not page.locator("#pf-bar-notice .pf-inline").count()
    assert labels(app) == []


def test_a_click_is_one_request_one_service_call_and_one_transaction(site, session, monkeypatch):
    from sqlalchemy import event

    url, app = site
    seed_comparisons(app.store, 3)
    s = session("alice")
    page = s.page
    calls: list[str] = []
    for name in ("label_and_next", "label_view", "label", "next_for", "my_progress", "undo_and_view"):
        real = getattr(labelling, name)
        monkeypatch.setattr(labelling, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or
                            _real(*a, **k))
    begins: list[int] = []
    listener = lambda *_args: begins.append(1)  # noqa: E731
    event.listen(app.store.engine, "begin", listener)
    sent: list[str] = []  # every request to Gradio after the key press: no queue join, no event stream
    page.on("request", lambda r: sent.append(f"{r.method} {r.url}") if "/gradio_api/" in r.url else None)
    try:
        page.keyboard.press("a")
        s.wait_labels_today(1)
        page.wait_for_timeout(300)  # anything chained after the click would have run by now
    finally:
        event.remove(app.store.engine, "begin", listener)
    assert len(sent) == 1 and sent[0].startswith("POST ") and "/run/predict" in sent[0], sent
    assert calls[0] == "label_and_next" and "label_view" not in calls and "my_progress" not in calls, calls
    assert len(begins) == 1, begins


def _turns(i: int) -> list[dict]:
    return [{"role": "user", "content": f"First **turn** {i}"}, {"role": "assistant", "content": "An *earlier* answer"},
            {"role": "user", "content": f"Question number {i}, *again*"}]


def test_my_recent_labels_survive_a_reload_and_raw_text_covers_every_turn(site, session, shots):
    url, app = site
    seed_comparisons(app.store, 4, texts=lambda i: (_turns(i), f"**bold** answer {i}", f"*slanted* answer {i}"))
    s = session("alice", width=1400, height=900)
    page = s.page
    page.keyboard.press("a")
    s.wait_labels_today(1)
    page.keyboard.press("t")
    s.wait_labels_today(2)
    page.reload()
    page.wait_for_selector("#pf-progress strong", timeout=30_000)
    s.wait_text("#pf-recent", "Question number")
    recent = page.inner_text("#pf-recent")
    assert recent.index("Tie") < recent.index("A better") and recent.count("Question number") == 2
    assert "*again*" in recent  # the prompt's last user turn, as text
    prompt = page.inner_text("#pf-prompt")
    assert "First turn" in prompt and "**" not in prompt and "*earlier*" not in prompt  # rendered
    page.screenshot(path=str(shots / "label-1400-recent-after-reload.png"), full_page=True)
    page.keyboard.press("r")
    page.wait_for_function("() => document.body.classList.contains('pf-show-raw')")
    prompt = page.inner_text("#pf-prompt")
    assert "First **turn**" in prompt and "An *earlier* answer" in prompt and "*again*" in prompt  # every turn
    assert "**bold** answer" in "".join(s.pane_texts()) and "*slanted* answer" in "".join(s.pane_texts())
    page.screenshot(path=str(shots / "label-1400-raw.png"), full_page=True)
    page.keyboard.press("s")  # the next comparison is raw too: the toggle belongs to the view
    s.wait_text("#pf-recent", "Skip")
    assert "First **turn**" in page.inner_text("#pf-prompt") and "**bold** answer" in "".join(s.pane_texts())
    assert page.locator("#pf-raw input").is_checked()
    narrow = session("alice", width=420, height=900)
    narrow.wait_text("#pf-recent", "Skip")
    narrow.page.screenshot(path=str(shots / "label-420-recent-after-reload.png"), full_page=True)
    narrow.page.keyboard.press("r")
    narrow.page.wait_for_function("() => document.body.classList.contains('pf-show-raw')")
    narrow.page.screenshot(path=str(shots / "label-420-raw.png"), full_page=True)
    assert not s.remote and not s.dialogs and not narrow.remote


def test_the_generation_status_after_stop_promises_no_automatic_rounds(site, session, shots):
    url, app = site
    app.settings.training.auto_every = 16
    s = session("olivia", width=1400)
    s.console("Models and rounds")
    page = s.page
    page.click("#pf-btn-gen-start")
    s.wait_text("body", "generation started")
    page.click("#pf-btn-gen-stop")
    status = page.get_by_text(re.compile(r"^Generation is (stopped|stopping)")).first
    status.wait_for(timeout=20_000)
    text = status.inner_text()
    assert "A round starts every" not in text and "none starts until generation is started again" in text
    page.screenshot(path=str(shots / "console-generation-after-stop.png"), full_page=True)
    assert not s.remote and not s.dialogs


def test_an_empty_label_view_shows_new_comparisons_as_they_arrive(site, session):
    url, app = site
    s = session("alice")
    s.wait_text("#pf-prompt", "Nothing left to label")
    seed_comparisons(app.store, 1, texts=lambda i: ("A prompt sampled meanwhile", "first", "second"))
    s.wait_text("#pf-prompt", "A prompt sampled meanwhile", timeout=30_000)  # no reload: the view looks again
    assert not s.remote and not s.dialogs


# -- rankings, ratings and thumbs --------------------------------------------------------------------------------------
def _shown_positions(page) -> list[int]:
    """The positions of the ranking's or rating's cards in the order the page shows them."""
    return page.evaluate("() => [...document.querySelectorAll('#pf-cards .pf-card[data-position]')]"
                         ".map(c => Number(c.dataset.position))")


def _ranks_shown(page) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('#pf-cards .pf-rank-card .pf-given-shown')]"
                         ".map(b => b.innerText)")


def _enabled(page, selector: str) -> bool:
    return page.evaluate("(s) => { const b = document.querySelector(s); return !!b && !b.disabled "
                         "&& b.offsetParent !== null; }", selector)


def _label_of(app, comparison_id: int) -> Label:
    with app.store.read() as s:
        return s.exec(select(Label).where(Label.comparison_id == comparison_id)).one()


@pytest.mark.parametrize("width", [1400, 420])
def test_a_ranking_is_given_by_number_keys_with_a_tie_and_stored_by_position(site, session, shots, width):
    url, app = site
    skipped = seed_kind(app.store, "ranking", ["skip me 0", "skip me 1"], prompt="A ranking to skip")
    ranked = seed_kind(app.store, "ranking", ["**Paris** is the capital.", "It is Lyon.", "Paris, I think."],
                       prompt="What is the capital of France?")
    s = session("alice", width=width, height=900)
    page = s.page
    s.wait_text("#pf-prompt", "A ranking to skip")
    assert not page.locator("#pf-btn-left").is_visible() and page.locator("#pf-btn-rank").is_visible()
    page.keyboard.press("a")  # a pair's key does nothing here
    page.keyboard.press("s")  # Skip works on every kind
    s.wait_text("#pf-prompt", "capital of France")
    assert _label_of(app, skipped).choice == "skip"
    order = _shown_positions(page)
    assert sorted(order) == [0, 1, 2] and _ranks_shown(page) == ["–", "–", "–"]
    assert not _enabled(page, "#pf-btn-rank")
    page.keyboard.press("2")  # the first card shown, then the next one without a rank, ...
    page.keyboard.press("1")
    assert not _enabled(page, "#pf-btn-rank") and "2 of 3 ranked" in page.inner_text("#pf-cards")
    page.keyboard.press("3")
    assert _ranks_shown(page) == ["2", "1", "3"] and _enabled(page, "#pf-btn-rank")
    page.locator("#pf-cards .pf-rank-card").nth(0).locator(".pf-pane-body").click()  # focus the first card
    page.keyboard.press("1")  # a rank already given: a tie for the best
    assert _ranks_shown(page) == ["1", "1", "3"]
    page.keyboard.press("Enter")
    s.wait_labels_today(1)  # the skip counts for nobody
    label = _label_of(app, ranked)
    assert label.choice == "ranked" and label.annotator == "alice"
    assert label.ranking == [dict(zip(order, [1, 1, 3], strict=True))[p] for p in range(3)]
    assert "Ranked" in page.inner_text("#pf-recent")
    assert not s.remote and not s.dialogs


def test_ranking_screens_at_desk_and_phone_width(site, session, shots):
    url, app = site
    long = "\n\n".join(f"Paragraph {i}: a longer answer that keeps going for a while." for i in range(4))
    seed_kind(app.store, "ranking", ["Short answer.", long, "A *third* answer with `code`.", "Fourth."],
              prompt="Rank these four answers.")
    for width in (1400, 420):
        s = session("alice", width=width, height=900)
        page = s.page
        s.wait_text("#pf-prompt", "Rank these four")
        page.keyboard.press("2")
        page.keyboard.press("1")
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"label-ranking-{width}.png"))
        page.screenshot(path=str(shots / f"label-ranking-{width}-full.png"), full_page=True)
        boxes = page.evaluate("() => [...document.querySelectorAll('#pf-cards .pf-rank-card')].map(c => {"
                              " const r = c.getBoundingClientRect(); return [r.x, r.width]; })")
        assert len(boxes) == 4 and all(w <= width and x >= 0 for x, w in boxes)  # nothing runs off the screen
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width, overflow
        assert not s.remote and not s.dialogs
        s.close()


def test_a_ranking_is_given_by_dragging_cards_into_order(site, session, shots):
    url, app = site
    ranked = seed_kind(app.store, "ranking", ["first text", "second text", "third text"], prompt="Drag them")
    s = session("alice", width=1400, height=900)
    page = s.page
    s.wait_text("#pf-prompt", "Drag them")
    order = _shown_positions(page)
    cards = page.locator("#pf-cards .pf-rank-card")
    # The last card shown, dragged by its header onto the top half of the first: it goes first, and every card is
    # ranked by the new order.
    cards.nth(2).locator(".pf-card-head").drag_to(cards.nth(0), target_position={"x": 40, "y": 8})
    page.wait_for_function("() => document.querySelectorAll('#pf-cards .pf-rank-card.pf-given').length === 3")
    dragged = [order[2], order[0], order[1]]
    assert _shown_positions(page) == dragged and _ranks_shown(page) == ["1", "2", "3"]
    # A tie by number key: the card now last ties with the one above it.
    cards.nth(2).focus()
    page.keyboard.press("2")
    assert _ranks_shown(page) == ["1", "2", "2"]
    page.wait_for_timeout(300)  # the buttons' transitions end before the picture
    page.screenshot(path=str(shots / "label-ranking-dragged.png"))
    sent: list[str] = []  # the ranks travel with the click: one request, as a pair's click
    page.on("request", lambda r: sent.append(f"{r.method} {r.url}") if "/gradio_api/" in r.url else None)
    page.click("#pf-btn-rank")
    s.wait_labels_today(1)
    page.wait_for_timeout(300)
    assert len(sent) == 1 and sent[0].startswith("POST ") and "/run/predict" in sent[0], sent
    ranks = dict(zip(dragged, [1, 2, 2], strict=True))
    assert _label_of(app, ranked).ranking == [ranks[p] for p in range(3)]
    assert not s.remote and not s.dialogs


@pytest.mark.parametrize("width", [1400, 420])
def test_ratings_show_each_criterions_help_and_store_the_scores_clicked(site, session, shots, width):
    url, app = site
    app.settings.labelling.rating_scale = 7
    app.settings.labelling.rating_criteria = {"helpfulness": "Does it do what was asked?",
                                              "honesty": "Is it <b>true</b>, and unsure when it should be?"}
    rated = seed_kind(app.store, "rating", ["One answer.", "Another answer, longer than the first one."],
                      prompt="Rate both answers.")
    s = session("alice", width=width, height=900)
    page = s.page
    s.wait_text("#pf-prompt", "Rate both")
    order = _shown_positions(page)
    help_text = page.locator("#pf-cards .pf-help", has_text="Is it <b>true</b>, and unsure").first
    assert help_text.is_visible()  # the help, as text, beside the control it explains
    assert page.locator("#pf-cards .pf-help", has_text="Does it do what was asked?").count() == 2
    assert not _enabled(page, "#pf-btn-rate") and page.locator("#pf-btn-rate").is_visible()
    clicked = {("helpfulness", 0): 7, ("honesty", 0): 2, ("helpfulness", 1): 3}
    for (criterion, shown), score in clicked.items():
        row = page.locator(f"#pf-cards .pf-rate-card >> nth={shown}").locator(
            f".pf-rate-row[data-criterion='{criterion}']")
        row.locator(f".pf-pick[data-pick='{score}']").click()
    assert not _enabled(page, "#pf-btn-rate")
    page.locator("#pf-cards .pf-rate-card >> nth=1").locator(".pf-rate-row[data-criterion='honesty']").focus()
    page.keyboard.press("5")  # the focused row's score, by key
    page.keyboard.press("9")  # past the scale: nothing
    assert _enabled(page, "#pf-btn-rate")
    page.wait_for_timeout(200)
    page.screenshot(path=str(shots / f"label-rating-{width}.png"))
    page.screenshot(path=str(shots / f"label-rating-{width}-full.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.click("#pf-btn-rate")
    s.wait_labels_today(1)
    scores = {**clicked, ("honesty", 1): 5}
    expected = {c: [scores[(c, order.index(p))] for p in range(2)] for c in ("helpfulness", "honesty")}
    label = _label_of(app, rated)
    assert label.choice == "rated" and label.ratings == expected
    assert not s.remote and not s.dialogs


@pytest.mark.parametrize("width", [1400, 420])
def test_thumbs_by_keyboard_and_undo(site, session, shots, width):
    url, app = site
    good = seed_kind(app.store, "thumbs", ["A helpful, correct answer."], prompt="Thumbs one")
    bad = seed_kind(app.store, "thumbs", ["A wrong answer."], prompt="Thumbs two")
    s = session("alice", width=width, height=900)
    page = s.page
    s.wait_text("#pf-prompt", "Thumbs one")
    assert page.locator("#pf-btn-up").is_visible() and page.locator("#pf-btn-down").is_visible()
    assert not page.locator("#pf-btn-left").is_visible() and not page.locator("#pf-edit").is_visible()
    page.wait_for_timeout(200)
    page.screenshot(path=str(shots / f"label-thumbs-{width}.png"))
    page.keyboard.press("b")  # a pair's key does nothing here
    page.keyboard.press("g")
    s.wait_text("#pf-prompt", "Thumbs two")
    page.keyboard.press("d")
    s.wait_labels_today(2)
    assert (_label_of(app, good).choice, _label_of(app, bad).choice) == ("up", "down")
    recent = page.inner_text("#pf-recent")
    assert recent.index("Bad") < recent.index("Good")
    page.keyboard.press("u")  # undo the thumb down: its comparison comes back
    s.wait_text("#pf-prompt", "Thumbs two")
    s.wait_labels_today(1)
    assert "Undone" in page.inner_text("#pf-bar-notice") and "Bad" in page.inner_text("#pf-bar-notice")
    page.keyboard.press("g")
    s.wait_labels_today(2)
    assert _label_of(app, bad).choice == "up"
    assert not s.remote and not s.dialogs


def test_the_console_shows_a_rankings_responses_and_ranks_by_position(site, session, shots):
    url, app = site
    cid = seed_kind(app.store, "ranking", ["First <b>answer</b>.", "Second answer.", "Third answer."],
                    prompt="Rank three")
    label_id = submit_label(app.store, "alice", cid, "ranked", "ab", given=Given(ranking=[2, 1, 3])).label_id
    olivia = session("olivia")
    page = olivia.page
    page.get_by_role("tab", name="Console").click()
    page.get_by_role("tab", name="Data").click()
    page.fill("#pf-curate-id input", str(label_id))
    page.click("#pf-btn-show")
    olivia.wait_text("#pf-curate-show", "ranked")
    shown = page.inner_text("#pf-curate-show")
    assert "alice (human) ranked #1 2, #2 1, #3 3" in shown
    assert all(f"#{i}" in shown for i in (1, 2, 3)) and "First <b>answer</b>." not in page.content()
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "console-show-ranking.png"), full_page=True)
