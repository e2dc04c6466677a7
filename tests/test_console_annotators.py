"""The console's annotators tab: how each person labels (counts, skips, time per label, agreement with the others,
gold accuracy and the hold-back) on both backends; accounts managed in a real browser, with a disabled account
refused at once in its open browser session and over real HTTP; and a held-back person's labels released or
discarded from the tab."""

from contextlib import closing
from datetime import timedelta

import httpx
import pytest
from browsing import browser_test
from conftest import TEST_PASSWORD, make_kind_comparison, seed_comparisons
from sqlmodel import select

from app.services import accounts, console
from app.services.annotators import people
from app.ui.console import overview
from data.agreement import annotator_agreement
from data.models import AuditEvent, Comparison, Label, utcnow
from data.queue import Given, submit_label


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
    # alice: (a,a) (a,b) on c1 and c2, (tie,both_bad) with bob and (tie,b) with carol on c3: 1 of 4 (a tie and a
    # both-bad are different answers). Her marginals a 2 tie 2, the others' a 1 b 2 both_bad 1:
    # p_e = (2*1) / 16 = 1/8, kappa = (1/4 - 1/8) / (7/8) = 1/7.
    alice = agreement["alice"]
    assert (alice["comparisons"], alice["pairs"], alice["agreed"]) == (3, 4, 1)
    assert alice["agreement"] == pytest.approx(0.25) and alice["kappa"] == pytest.approx(1 / 7)
    assert (agreement["bob"]["pairs"], agreement["bob"]["agreed"]) == (4, 1)
    carol = agreement["carol"]
    assert (carol["comparisons"], carol["pairs"], carol["agreed"], carol["agreement"]) == (1, 2, 0, 0.0)
    assert carol["kappa"] == pytest.approx(0.0)  # no shared category: chance agreement 0, observed 0


def gold_questions(store, n: int, answer: str = "a") -> list[int]:
    """n comparisons made gold questions with `answer` known, straight through the store."""
    cids = seed_comparisons(store, n, overlap=3)
    with store.write() as s:
        for cid in cids:
            row = s.get(Comparison, cid)
            row.gold_choice = answer
            s.add(row)
    return cids


def labelled_with_gold(store) -> list[int]:
    """alice answers 5 gold questions right, dan 5 wrong (held back at the default gold settings: 5 answers, 0.6);
    on ordinary comparisons c1 alice a, bob a, dan b; c2 alice b, bob b; c3 alice tie, dan both_bad; c4 dan a."""
    for cid in gold_questions(store, 5):
        label(store, "alice", cid, "a")
        label(store, "dan", cid, "b")
    c = seed_comparisons(store, 4, overlap=3)
    for cid, choices in zip(c, ({"alice": "a", "bob": "a", "dan": "b"}, {"alice": "b", "bob": "b"},
                                {"alice": "tie", "dan": "both_bad"}, {"dan": "a"}), strict=True):
        for name, choice in choices.items():
            label(store, name, cid, choice)
    return c


def test_quality_per_person_agreement_between_people_and_gold_on_a_known_example(web_app):
    labelled_with_gold(web_app.store)
    view = people(web_app)
    by_name = {p.name: p for p in view.labelling}
    alice, bob, dan = by_name["alice"], by_name["bob"], by_name["dan"]
    # Gold questions are not agreement: alice's majority agreement is over c1 (others a, b: no majority, not
    # counted), c2 (bob's b: agrees) and c3 (dan's both_bad against her tie: disagrees).
    assert (alice.comparisons, alice.majority_compared, alice.majority_agreement) == (3, 2, 0.5)
    assert (bob.majority_compared, bob.majority_agreement) == (1, 1.0)  # c1 (alice a, dan b) has no majority
    assert (dan.majority_compared, dan.majority_agreement) == (2, 0.0)  # c1 (a, a) and c3 (tie)
    assert alice.kappas["dan"][:2] == (2, 0.0) and alice.kappas["bob"][:2] == (2, 1.0)
    assert (alice.gold_answered, alice.gold_accuracy, alice.held) == (5, 1.0, False)
    # dan is held back, but his labels are measurements and still count for agreement above.
    assert (dan.gold_answered, dan.gold_accuracy, dan.gold_recent_accuracy, dan.held) == (5, 0.0, 0.0, True)
    assert dan.held_labels == 3 and bob.gold_answered == 0 and bob.gold_accuracy is None
    together = view.reliability
    # units c1 [a,a,b] c2 [b,b] c3 [tie,both_bad]: observed 4/2 + 0 + 2/1 = 4; n 7 (a 2, b 3, tie 1, both_bad 1),
    # expected 49 - 15 = 34: alpha = 1 - 6 * 4 / 34 = 5/17. All in round 0 (v0).
    assert (together.units, together.values) == (3, 7) and together.alpha == pytest.approx(5 / 17)
    assert [(r.round, r.units) for r in together.rounds] == [(0, 3)]
    assert [(p.first, p.second, p.compared) for p in together.pairs] == [("alice", "bob", 2), ("alice", "dan", 2),
                                                                         ("bob", "dan", 1)]


def ranked_by_two(store) -> None:
    """alice ranks R0 > R1 > R2, bob R0 > R2 > R1: two of three pairs in the same order, tau-b 1/3."""
    cid = make_kind_comparison(store, "ranking", 3, overlap=2)
    submit_label(store, "alice", cid, "ranked", "ab", given=Given(ranking=[1, 2, 3]))
    submit_label(store, "bob", cid, "ranked", "ab", given=Given(ranking=[1, 3, 2]))


def test_agreement_on_rankings_is_kendalls_tau_b_per_pair_of_people(web_app):
    assert people(web_app).reliability.orders == []  # nothing ordered yet: nothing shown
    ranked_by_two(web_app.store)
    [order] = people(web_app).reliability.orders
    assert (order.kind, order.comparisons) == ("ranking", 1) and order.tau_b == pytest.approx(1 / 3)
    assert [(p.first, p.second, p.compared) for p in order.pairs] == [("alice", "bob", 1)]
    assert people(web_app).reliability.units == 0  # a ranking is no pair: alpha and kappa never see it


def test_stats_show_alpha_per_round_agreement_per_person_and_gold(web_app):
    import json

    from click.testing import CliRunner

    from app.cli import cli

    labelled_with_gold(web_app.store)
    runner = CliRunner()
    r = runner.invoke(cli, ["--workdir", str(web_app.workdir), "stats", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)["people"]
    assert got["alpha"] == pytest.approx(5 / 17) and got["by_round"]["0"]["units"] == 3
    assert got["annotators"]["dan"]["gold"]["held"] is True and got["annotators"]["dan"]["gold"]["held_labels"] == 3
    assert got["annotators"]["alice"]["kappas"]["bob"]["compared"] == 2
    r = runner.invoke(cli, ["--workdir", str(web_app.workdir), "stats"])
    assert r.exit_code == 0, r.output
    assert "people: alpha 0.294 over 3 comparison(s)" in r.output and "  round 0: alpha 0.294" in r.output
    assert "  dan: majority agreement 0.000 of 2" in r.output and "HELD BACK: 3 label(s) held" in r.output
    assert "    kappa with bob: 1.000 over 2 (agreement 1.000)" in r.output  # alice's, both b then a
    assert "rankings:" not in r.output  # none yet
    ranked_by_two(web_app.store)
    r = runner.invoke(cli, ["--workdir", str(web_app.workdir), "stats"])
    assert "rankings: Kendall's tau-b 0.333 over 1 comparison(s)" in r.output
    assert "  alice with bob: tau-b 0.333 over 1" in r.output
    summary = overview.summary_text(console.overview(web_app), []).split("\n")
    assert summary[-1] == "**Agreement:** alpha 0.29 over 3 comparisons labelled by 2+ people · 1 held back"


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
    assert "carol" in people_table and "3.0" in people_table
    assert "0.33 of 3" in page.inner_text("#pf-quality-table")  # alice agrees with carol on 1 of 3
    assert not page.locator("#pf-tau-pairs").is_visible()  # pairs only: no rank-correlation table
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
    pick(page, "bob")  # the role picker follows the person picked
    page.wait_for_selector("#pf-account-role input[value='annotator']:checked", timeout=20_000)
    pick(page, "alice")
    page.wait_for_selector("#pf-account-role input[value='operator']:checked", timeout=20_000)

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


@browser_test
def test_operator_sees_label_quality_and_releases_or_discards_held_labels(site, session, shots):
    url, app = site
    labelled_with_gold(app.store)
    ranked_by_two(app.store)
    s = session("olivia", width=1400)
    page = s.page
    s.console("Annotators")
    s.wait_text("#pf-quality-table", "HELD: 3 label(s)")
    assert "Kendall's tau-b on rankings: 0.33 over 1 comparison" in page.inner_text("#pf-tau")
    assert "alice" in page.inner_text("#pf-tau-pairs") and "0.33" in page.inner_text("#pf-tau-pairs")
    alice, dan = (row_text(page, "#pf-quality-table", name) for name in ("alice", "dan"))
    assert "0.50 of 2" in alice and "1.00 of 5" in alice and "HELD" not in alice
    assert "0.00 of 5" in dan and "HELD" in dan
    assert "0.29 over 3 comparison(s)" in page.inner_text("#pf-alpha")
    assert "bob" in page.inner_text("#pf-kappa-pairs") and "dan" in page.inner_text("#pf-kappa-pairs")
    page.screenshot(path=str(shots / "annotators-quality-1400.png"), full_page=True)
    page.set_viewport_size({"width": 420, "height": 800})
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "annotators-quality-420.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 800})

    assert page.input_value("#pf-held input") == "dan"  # the one held-back person, picked already
    page.click("#pf-btn-release-held")
    assert "Released 3 held label(s) of dan" in s.settled_text("#pf-held-result", "Released")
    s.wait_text("#pf-quality-table", "HELD: none waiting")
    with app.store.read() as db:
        assert all(x.released_at for x in db.exec(select(Label).where(Label.annotator == "dan")).all()
                   if x.comparison_id not in gold_ids(db))

    [fresh] = seed_comparisons(app.store, 1, overlap=3)
    kept = label(app.store, "dan", fresh, "b")  # still held back: his new label is held again
    page.click("#pf-btn-refresh")
    s.wait_text("#pf-quality-table", "HELD: 1 label(s)")
    page.click("#pf-btn-discard-held")  # without a reason: refused, nothing discarded
    assert "reason" in s.settled_text("#pf-held-result", "reason")
    page.fill("#pf-held-reason input", "five gold answers wrong")
    page.click("#pf-btn-discard-held")
    assert "Discarded 1 held label(s) of dan" in s.settled_text("#pf-held-result", "Discarded")
    with app.store.read() as db:
        gone = db.get(Label, kept)
        assert gone.discarded_at is not None and gone.discard_reason == "five gold answers wrong"
    s.wait_text("#pf-quality-table", "HELD: none waiting")
    page.screenshot(path=str(shots / "annotators-discarded-1400.png"), full_page=True)
    assert "Traceback" not in page.inner_text("body") and not s.remote and not s.dialogs


def row_text(page, table: str, first: str) -> str:
    """The text of the table's row whose first cell is `first`."""
    return page.evaluate("""([table, first]) => [...document.querySelectorAll(`${table} [role=row]`)]
        .map(row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()))
        .filter(cells => cells[0] === first).map(cells => cells.join(' | '))[0] || ''""", [table, first])


def gold_ids(db) -> set[int]:
    return set(db.exec(select(Comparison.id).where(Comparison.gold_choice.is_not(None))).all())
