"""The console's annotators tab: how each person labels (counts, skips, time per label, agreement with the others)
on both backends, and accounts managed in a real browser, with a disabled account refused at once in its open
browser session and over real HTTP."""

from contextlib import closing
from datetime import timedelta

import httpx
import pytest
from browsing import browser_test
from conftest import TEST_PASSWORD, seed_comparisons
from sqlmodel import select

from app.services import accounts
from app.services.annotators import people
from data.agreement import annotator_agreement
from data.models import AuditEvent, Label, utcnow
from data.queue import submit_label


def label(store, annotator, cid, choice, seconds=None, source="human"):
    return submit_label(store, annotator, cid, choice, "ab", time_spent_s=seconds, source=source).label_id


def change_label(store, label_id, **values):
    with store.write() as s:
        row = s.get(Label, label_id)
        for key, value in values.items():
            setattr(row, key, value)
        s.add(row)


def test_counts_skips_and_time_per_label_count_people_only(web_app):
    store = web_app.store
    c = seed_comparisons(store, 6, overlap=4)
    for cid, seconds in zip(c[:3], (2.0, 4.0, 30.0), strict=True):
        label(store, "alice", cid, "a", seconds)
    label(store, "alice", c[3], "b")  # from an API client that reported no time
    old = label(store, "alice", c[4], "tie", 1.0)
    change_label(store, old, created_at=utcnow() - timedelta(days=10))
    gone = label(store, "alice", c[5], "a", 500.0)
    change_label(store, gone, discarded_at=utcnow(), discard_reason="clicked blindly")
    label(store, "bob", c[0], "skip")
    label(store, "bob", c[1], "skip")
    label(store, "judge:len", c[0], "a", 0.1, source="judge")
    label(store, "import", c[1], "b", source="import")
    accounts.add_user(web_app, "olivia", "operator", TEST_PASSWORD)

    view = people(web_app)
    by_name = {p.name: p for p in view.labelling}
    assert set(by_name) == {"alice", "bob", "olivia"}  # neither the judge nor the import is a person
    alice = by_name["alice"]
    assert (alice.labels, alice.today, alice.week, alice.skips) == (5, 4, 4, 0)
    assert alice.median_s == pytest.approx(3.0) and alice.timed == 4  # 1, 2, 4, 30: the discarded 500 s is out
    bob = by_name["bob"]
    assert (bob.labels, bob.skips, bob.median_s, bob.timed) == (0, 2, None, 0)
    assert (by_name["olivia"].labels, by_name["olivia"].median_s) == (0, None)
    assert [(a.name, a.role, a.enabled, a.last_label_at is None) for a in view.accounts] == [
        ("olivia", "operator", True, True)]


def test_agreement_between_people_on_a_known_tiny_example(store):
    c1, c2, c3, c4 = seed_comparisons(store, 4, overlap=4)
    for cid, choices in ((c1, {"alice": "a", "bob": "a"}), (c2, {"alice": "a", "bob": "b"}),
                         (c3, {"alice": "tie", "bob": "both_bad", "carol": "b"}), (c4, {"alice": "a"})):
        for name, choice in choices.items():
            label(store, name, cid, choice)
    label(store, "judge:len", c1, "b", source="judge")  # neither judges, imports nor skips are compared
    label(store, "import", c2, "a", source="import")
    label(store, "dave", c1, "skip")
    gone = label(store, "erin", c2, "b")
    change_label(store, gone, discarded_at=utcnow())

    agreement = annotator_agreement(store)
    assert set(agreement) == {"alice", "bob", "carol"}
    # alice: (a,a) (a,b) on c1 and c2, (tie,tie) with bob's both_bad and (tie,b) with carol on c3: 2 of 4.
    # Her marginals a 2 tie 2, the others' a 1 b 2 tie 1: p_e = (2*1 + 2*1) / 16 = 1/4, kappa = (1/2 - 1/4) / (3/4).
    alice = agreement["alice"]
    assert (alice["comparisons"], alice["pairs"], alice["agreed"]) == (3, 4, 2)
    assert alice["agreement"] == pytest.approx(0.5) and alice["kappa"] == pytest.approx(1 / 3)
    assert (agreement["bob"]["pairs"], agreement["bob"]["agreed"]) == (4, 2)
    carol = agreement["carol"]
    assert (carol["comparisons"], carol["pairs"], carol["agreed"], carol["agreement"]) == (1, 2, 0, 0.0)
    assert carol["kappa"] == pytest.approx(0.0)  # no shared category: chance agreement 0, observed 0


def test_a_user_added_by_an_operator_is_audited_without_the_password(web_app):
    user, generated = accounts.add_user(web_app, "bob", "annotator", actor="olivia")
    assert accounts.authenticate(web_app, "bob", generated).name == "bob"
    with web_app.store.read() as s:
        [event] = s.exec(select(AuditEvent).where(AuditEvent.action == "user_added")).all()
    assert (event.actor, event.target_id, event.detail) == ("olivia", user.id, {"name": "bob", "role": "annotator"})
    assert generated not in repr(event.model_dump())


# -- the tab in a browser ---------------------------------------------------------------------------------------------

def pick(page, name: str) -> None:
    page.click("#pf-account input")
    page.get_by_role("option", name=name, exact=True).click()


def outcome(s, text: str) -> str:
    return s.settled_text("#pf-account-result", text)


def secret(page) -> str:
    page.wait_for_selector("#pf-new-secret textarea, #pf-new-secret input", timeout=20_000)
    return page.input_value("#pf-new-secret textarea, #pf-new-secret input")


def api_login(url: str, name: str, password: str = TEST_PASSWORD) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    r = client.post("/api/v1/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    client.headers["Authorization"] = f"Bearer {r.json()['token']}"
    return client


@browser_test
def test_operator_adds_a_user_resets_a_password_and_changes_a_role(site, session, shots):
    url, app = site
    for cid, (mine, theirs) in zip(seed_comparisons(app.store, 3, overlap=2), ("aa", "ba", "tb"), strict=True):
        label(app.store, "alice", cid, {"t": "tie"}.get(mine, mine), 3.0)
        label(app.store, "carol", cid, {"t": "tie"}.get(theirs, theirs), 5.0)
    s = session("olivia", width=1400)
    page = s.page
    s.console("Annotators")
    s.wait_text("#pf-accounts-table", "alice")
    people_table = page.inner_text("#pf-people-table")
    assert "carol" in people_table and "0.33" in people_table and "3.0" in people_table  # 1 of 3 pairs agree
    page.fill("#pf-new-name input", "bob")
    page.click("#pf-btn-add-user")
    assert "Added bob as an annotator" in outcome(s, "Added bob")
    shown = secret(page)
    assert len(shown) >= 16 and accounts.authenticate(app, "bob", shown).name == "bob"
    s.wait_text("#pf-accounts-table", "bob")
    page.screenshot(path=str(shots / "annotators-added-1400.png"), full_page=True)
    page.set_viewport_size({"width": 420, "height": 800})
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "annotators-added-420.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 800})
    page.click("#pf-btn-refresh")  # shown once: gone after a refresh
    page.wait_for_selector("#pf-new-secret", state="hidden", timeout=20_000)

    pick(page, "alice")
    page.click("#pf-btn-reset-password")
    outcome(s, "New password for alice")
    fresh = secret(page)
    assert accounts.authenticate(app, "alice", fresh) and not accounts.authenticate(app, "alice", TEST_PASSWORD)
    page.locator("#pf-account-role").get_by_text("operator").click()
    page.click("#pf-btn-set-role")
    outcome(s, "alice is now an operator")
    assert accounts.role_of(app, "alice") == "operator"

    page.fill("#pf-new-name input", "not a name!")  # refused: one sentence beside the controls
    page.click("#pf-btn-add-user")
    assert "is not valid" in outcome(s, "not valid")
    assert "Traceback" not in page.inner_text("body") and not s.remote and not s.dialogs


@browser_test
def test_a_disabled_annotator_is_refused_in_the_browser_and_the_api_at_once(site, session, shots):
    url, app = site
    seed_comparisons(app.store, 3)
    alice = session("alice")
    olivia = session("olivia", width=1400)
    with closing(api_login(url, "alice")) as api:
        assert api.get("/api/v1/progress").status_code == 200  # the server caches the token now
        olivia.console("Annotators")
        pick(olivia.page, "alice")
        olivia.page.click("#pf-btn-disable")
        outcome(olivia, "Disabled alice")
        assert api.get("/api/v1/progress").status_code == 401
    shown = alice.pane_texts()
    alice.page.keyboard.press("a")  # her page is still open: the click is refused and stores nothing
    alice.wait_text("#pf-bar-notice", "Your account is disabled")
    assert alice.pane_texts() == shown
    with app.store.read() as s:
        assert s.exec(select(Label).where(Label.annotator == "alice")).all() == []
    olivia.wait_text("#pf-accounts-table", "disabled")

    olivia.page.click("#pf-btn-enable")
    outcome(olivia, "Enabled alice")
    with closing(api_login(url, "alice")) as api:
        assert api.get("/api/v1/progress").status_code == 200
        olivia.page.click("#pf-btn-revoke-tokens")
        assert "Revoked 1 API token(s) of alice" in outcome(olivia, "Revoked")
        assert api.get("/api/v1/progress").status_code == 401

    pick(olivia.page, "olivia")  # the last enabled operator: refused, in one sentence
    olivia.page.click("#pf-btn-disable")
    said = outcome(olivia, "only enabled operator")
    assert said.strip() == ("olivia is the only enabled operator and cannot be made disabled: make someone else an "
                            "operator first.")
    olivia.wait_text("#pf-accounts-table", "enabled")
    assert accounts.role_of(app, "olivia") == "operator"
    olivia.page.screenshot(path=str(shots / "annotators-refused-1400.png"), full_page=True)
    assert not olivia.remote and not alice.remote and not olivia.dialogs
