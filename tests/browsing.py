"""The browser harness every UI test module shares (loaded as a pytest plugin by conftest): headless Chromium
through Playwright's sync API, a running server with an annotator (alice) and an operator (olivia), and a logged-in
page that blocks and records every request to a host other than this machine."""

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import TEST_PASSWORD, make_kind_comparison

from app.server import create_app, running_server

CHROMIUM = Path(os.environ.get("PREFLOOP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# A browser test module: `pytestmark = BROWSER`; a browser test in a module of other tests: `@browser_test`.
# On SQLite only: the data and service tests beside them cover PostgreSQL.
BROWSER = [
    pytest.mark.browser,
    pytest.mark.sqlite_only,
    pytest.mark.skipif(not CHROMIUM.exists() and os.environ.get("CI") != "true",
                       reason=f"no Chromium at {CHROMIUM} (apt-get install chromium); CI requires it"),
]


def browser_test(fn):
    for mark in BROWSER:
        fn = mark(fn)
    return fn

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

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
    web_app.store.accounts.add_user("alice", "annotator", password_hash)
    web_app.store.accounts.add_user("olivia", "operator", password_hash)
    with running_server(create_app(web_app)) as url:
        yield url, web_app


class Session:
    """One logged-in browser page that records every request to a non-loopback host (and blocks it)."""

    def __init__(self, browser, url: str, name: str, tmp_path: Path, width: int = 1280, height: int = 800):
        self.context = browser.new_context(accept_downloads=True, viewport={"width": width, "height": height})
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

    def console(self, tab: str | None = None) -> None:
        """Open the operator console, and in it the tab named `tab` ("Data", "Models and rounds", ...)."""
        self.page.get_by_role("tab", name="Console").click()
        if tab:
            self.page.get_by_role("tab", name=tab).click()

    def wait_text(self, selector: str, text: str, timeout: int = 20_000) -> None:
        """Wait until the element at `selector` shows `text`."""
        self.page.wait_for_function("([sel, text]) => (document.querySelector(sel)?.innerText || '').includes(text)",
                                    arg=[selector, text], timeout=timeout)

    def settled_text(self, selector: str, text: str, timeout: int = 20_000) -> str:
        """The text of `selector` once it shows `text` and Gradio's progress overlay on it has gone."""
        self.page.wait_for_function(
            "([sel, text]) => { const e = document.querySelector(sel);"
            " return !!e && (e.innerText || '').includes(text)"
            " && !e.querySelector('.progress-text, .meta-text, .meta-text-center, .eta-bar'); }",
            arg=[selector, text], timeout=timeout)
        return self.page.inner_text(selector)

    def close(self):
        self.context.close()


@pytest.fixture
def session(browser, site, tmp_path):
    opened = []

    def open_as(name: str, width: int = 1280, height: int = 800) -> Session:
        s = Session(browser, site[0], name, tmp_path, width, height)
        opened.append(s)
        return s

    yield open_as
    for s in opened:
        s.close()


def seed_kind(store, kind: str, texts: list[str], prompt: str | None = None, overlap: int = 1) -> int:
    """One open comparison of `kind` over responses with `texts`, by position, to a prompt of its own; its id."""
    return make_kind_comparison(store, kind, overlap=overlap, texts=texts, prompt=prompt)
