"""The web UI in a real headless Chromium (Playwright, sync API): labelling with the keyboard, a rationale and an
edit; hostile prompts and responses that must not run, load or restyle anything; the operator's export download;
an annotator who cannot see the console. Skipped only when Chromium is absent and CI is not set."""

import json
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import TEST_PASSWORD, seed_comparisons
from sqlmodel import select

from app import service
from app.server import create_app, running_server
from data.models import Comparison, Label

CHROMIUM = Path(os.environ.get("PREFLOOP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() and os.environ.get("CI") != "true",
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium); CI requires it"),
]

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

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


def _launch(p):
    return p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = _launch(p)
        yield b
        b.close()


@pytest.fixture
def site(web_app, password_hash):
    web_app.store.add_user("alice", "annotator", password_hash)
    web_app.store.add_user("olivia", "operator", password_hash)
    with running_server(create_app(web_app)) as url:
        yield url, web_app


class Session:
    """One logged-in browser page that records every request to a non-loopback host (and blocks it)."""

    def __init__(self, browser, url: str, name: str, tmp_path: Path):
        self.context = browser.new_context(accept_downloads=True)
        self.remote: list[str] = []
        self.dialogs: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("dialog", self._dialog)
        self.page.goto(url)
        self.page.get_by_label("username").fill(name)
        self.page.get_by_label("password").fill(TEST_PASSWORD)
        self.page.get_by_role("button", name="Login").click()
        self.page.wait_for_selector("#pf-progress strong", timeout=30_000)

    def _route(self, route):
        host = urlparse(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            return route.continue_()
        self.remote.append(route.request.url)
        return route.abort()

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def labels_today(self) -> int:
        text = self.page.inner_text("#pf-progress")
        return int(re.search(r"My labels today:\s*(\d+)", text).group(1))

    def wait_labels_today(self, n: int) -> None:
        self.page.wait_for_function(
            f"() => /My labels today:\\s*{n}\\b/.test((document.querySelector('#pf-progress')?.innerText || ''))",
            timeout=20_000)

    def pane_texts(self) -> tuple[str, str]:
        return self.page.inner_text("#pf-left .pf-pane-body"), self.page.inner_text("#pf-right .pf-pane-body")

    def close(self):
        self.context.close()


@pytest.fixture
def session(browser, site, tmp_path):
    opened = []

    def open_as(name: str) -> Session:
        s = Session(browser, site[0], name, tmp_path)
        opened.append(s)
        return s

    yield open_as
    for s in opened:
        s.close()


def labels(app) -> list[Label]:
    with app.store.read() as s:
        return list(s.exec(select(Label).order_by(Label.id)).all())


def test_annotator_labels_with_the_keyboard_a_rationale_and_an_edit(site, session):
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
    with app.store.read() as db:
        edits = db.exec(select(Comparison).where(Comparison.source == "edit")).all()
    assert len(edits) == 1
    assert service.stats(app)["labels_by_annotator"]["alice"] == 5  # 3 labels, the edit pair, skip on the original
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
        page.wait_for_timeout(150)  # give any handler that slipped through time to fire
        found = page.evaluate("""() => {
            const panes = ['#pf-prompt', '#pf-left', '#pf-right'].map(s => document.querySelector(s));
            const bad = 'script, style, iframe, img, svg, object, embed, link, meta, video, source, details, [style]';
            return {
                pwned: window.__pwned === undefined ? null : String(window.__pwned),
                injected: panes.flatMap(p => [...p.querySelectorAll(bad)].map(e => e.outerHTML))
                               .filter(h => !h.startsWith('<svg') || !h.includes('icon')),
                hrefs: panes.flatMap(p => [...p.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))),
                bodyVisible: getComputedStyle(document.body).display !== 'none',
            };
        }""")
        assert found["pwned"] is None, found
        assert not [h for h in found["injected"] if "pf-" not in h and "status" not in h], found
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
        service.submit(app, "olivia", cid, "a", "ab")
    s = session("olivia")
    page = s.page
    page.get_by_role("tab", name="Console").click()
    page.wait_for_function("() => (document.querySelector('#pf-summary')?.innerText || '').includes('Prompts')")
    assert "Prompts:" in page.inner_text("#pf-summary")
    page.get_by_text("Export", exact=True).first.click()
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
    v0 = app.store.get_version("v0")
    run = app.store.create_training_run(v0.id, [], {})
    for step, loss in ((1, 0.69), (2, 0.61)):
        app.store.log_training_step(run.id, {"step": step, "max_steps": 2, "loss": loss, "rewards/margins": 0.1 * step,
                                             "rewards/accuracies": 0.5 + 0.2 * step})
    app.store.finish_training_run(run.id, "done", report={
        "eval": {"before": {"accuracy": 0.5, "margin": 0.0}, "after": {"accuracy": 0.75, "margin": 0.25}},
        "probe": {"before": {"mean_tokens": 12.0, "eos_rate": 0.5}, "after": {"mean_tokens": 10.0, "eos_rate": 1.0}},
        "deploy": "not deployed: run `prefloop deploy VERSION`"})
    s = session("olivia")
    page = s.page
    page.get_by_role("tab", name="Console").click()
    page.get_by_text("Training", exact=True).first.click()
    page.wait_for_function("() => (document.querySelector('#pf-rounds')?.innerText || '').includes('0.500 → 0.750')",
                           timeout=20_000)
    table = page.inner_text("#pf-rounds")
    assert "done" in table and "0.000 → 0.250" in table and "12.0 → 10.0" in table and "0.50 → 1.00" in table
    progress = page.inner_text("#pf-training-progress")
    assert f"Round {run.id}:" in progress and "step 2 of 2" in progress and "automatic rounds are off" in progress
    assert page.locator("#pf-round-plot").is_visible()
    page.click("#pf-btn-round-start")  # no labelled pairs: refused, with a plain message
    page.wait_for_function("() => (document.querySelector('#pf-training-result')?.innerText || '')"
                           ".includes('not started')",
                           timeout=20_000)
    result = page.inner_text("#pf-training-result")
    assert "only 0 new labelled pair(s)" in result and "Traceback" not in page.inner_text("body")
    assert len(app.store.training_runs()) == 1
    # A running round's progress refreshes by itself (the console's timer), and Cancel stops the one shown.
    running = app.store.create_training_run(v0.id, [], {})
    app.store.update_training_run(running.id, status="running")
    app.store.log_training_step(running.id, {"step": 1, "max_steps": 4, "loss": 0.7})
    page.wait_for_function("() => (document.querySelector('#pf-training-progress')?.innerText || '')"
                           ".includes('step 1 of 4')",
                           timeout=20_000)
    page.click("#pf-btn-round-cancel")
    page.wait_for_function("() => (document.querySelector('#pf-training-result')?.innerText || '')"
                           ".includes('cancelling')",
                           timeout=20_000)
    assert app.store.get_training_run(running.id).status == "cancelling"
    page.get_by_text("Judges", exact=True).first.click()
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
    page.get_by_text("Discard or restore data", exact=True).first.click()
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
