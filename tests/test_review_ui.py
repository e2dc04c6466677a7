"""The review tab in a real browser: a reviewer sees the adjudication queue and one comparison with every label and
rationale (untrusted text shown as text), decides it and makes it a gold question, and it leaves the queue; an
annotator sees no Review tab. Screenshots at 1400 and 420 px."""

from datetime import timedelta

from browsing import BROWSER
from conftest import seed_comparisons
from sqlmodel import select

from data.models import Comparison, Label, utcnow

pytestmark = BROWSER

HOSTILE = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"


def add(store, cid, annotator, choice, source="human", minutes_ago=0.0, rationale=None):
    with store.write() as s:
        s.add(Label(comparison_id=cid, annotator=annotator, source=source, choice=choice, rationale=rationale,
                    created_at=utcnow() - timedelta(minutes=minutes_ago)))


def seed_disagreements(app) -> tuple[int, int]:
    """Two comparisons in the queue: `target` (the newest disagreement, with rationales and a judge) first."""
    texts = {0: ("Which sorts faster, **quicksort** or *bubble sort*? " + HOSTILE,
                 "Quicksort: O(n log n) on average.\n\n| sort | average |\n|---|---|\n| quick | n log n |",
                 "Bubble sort, since it is simpler. " + HOSTILE),
             1: ("Name a prime.", "7", "9")}
    target, older = seed_comparisons(app.store, 2, overlap=3, texts=lambda i: texts[i])
    add(app.store, older, "alice", "a", minutes_ago=30)
    add(app.store, older, "bob", "b", minutes_ago=30)
    add(app.store, target, "alice", "a", minutes_ago=3, rationale="Quicksort is O(n log n); bubble sort is O(n²).")
    add(app.store, target, "bob", "b", minutes_ago=2, rationale="B is simpler to read. " + HOSTILE)
    add(app.store, target, "carol", "tie", minutes_ago=1)
    add(app.store, target, "judge:len", "b", "judge", minutes_ago=1)
    return target, older


def open_review(s) -> None:
    s.page.get_by_role("tab", name="Review").click()
    s.wait_text("#pf-review-summary", "to adjudicate")
    s.page.wait_for_selector("#pf-review-labels .pf-labels")


def test_a_reviewer_decides_a_disagreement_and_makes_it_gold(site, session, shots, password_hash):
    url, app = site
    app.store.accounts.add_user("rita", "reviewer", password_hash)
    target, older = seed_disagreements(app)
    s = session("rita", width=1400, height=1000)
    page = s.page
    assert page.get_by_role("tab", name="Console").count() == 0  # a reviewer is no operator
    open_review(s)
    assert "2 comparisons to adjudicate (2 where people disagree); newest first." in page.inner_text(
        "#pf-review-summary")
    head = page.inner_text("#pf-review-head")
    assert f"Comparison {target}" in head and "why: people disagree" in head and "judge:len chose B better" in head
    labels = page.inner_text("#pf-review-labels")
    for text in ("A better", "alice", "Quicksort is O(n log n); bubble sort is O(n²).", "B better", "bob",
                 "B is simpler to read. <script>window.pwned = 1</script>", "Tie", "carol", "judge:len", "judge"):
        assert text in labels, text
    assert "Which sorts faster" in page.inner_text("#pf-review-prompt")
    assert "Quicksort: O(n log n)" in page.inner_text("#pf-review-cards")
    assert "Bubble sort, since it is simpler." in page.inner_text("#pf-review-cards")
    assert page.locator("#pf-review-item script, #pf-review-item img").count() == 0
    page.screenshot(path=str(shots / "review-1400.png"), full_page=True)

    page.locator("#pf-review-rationale textarea").fill("A is right: quicksort is faster on average.")
    page.locator("#pf-review-gold input").check()
    page.click("#pf-review-a")
    s.wait_text("#pf-review-result", "Decided “A better”")
    result = page.inner_text("#pf-review-result")
    assert f"on comparison {target}: it is resolved and is now a gold question" in result
    assert "1 left in the queue" in result
    s.wait_text("#pf-review-summary", "1 comparison to adjudicate")
    assert "Decided A better by rita" in page.inner_text("#pf-review-head")
    assert str(target) not in [c.strip() for c in page.locator("#pf-review-table tbody tr td:first-child")
                               .all_inner_texts()]
    with app.store.read() as db:
        assert db.get(Comparison, target).gold_choice == "a"
        decided = db.exec(select(Label).where(Label.source == "adjudication")).one()
    assert (decided.annotator, decided.choice, decided.rationale) == (
        "adjudication:rita", "a", "A is right: quicksort is faster on average.")
    assert page.evaluate("() => window.pwned === undefined")
    page.screenshot(path=str(shots / "review-decided-1400.png"), full_page=True)

    page.click("#pf-review-next")  # the other disagreement
    s.wait_text("#pf-review-head", f"Comparison {older}")
    assert not s.remote


def test_the_review_tab_on_a_phone(site, session, shots, password_hash):
    url, app = site
    app.store.accounts.add_user("rita", "reviewer", password_hash)
    seed_disagreements(app)
    s = session("rita", width=420, height=900)
    open_review(s)
    width = s.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 420, f"the page scrolls sideways: {width} px"
    s.page.screenshot(path=str(shots / "review-420.png"), full_page=True)


def test_only_reviewers_and_operators_see_the_review_tab(site, session):
    url, app = site
    seed_disagreements(app)
    alice = session("alice")
    assert alice.page.get_by_role("tab", name="Label").is_visible()
    assert alice.page.get_by_role("tab", name="Review").count() == 0
    assert not alice.page.locator("#pf-review-a").is_visible()
    olivia = session("olivia")
    open_review(olivia)  # operators adjudicate too
    assert "2 comparisons to adjudicate" in olivia.page.inner_text("#pf-review-summary")
