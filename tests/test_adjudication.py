"""Adjudication: which comparisons wait for a reviewer and why, a decision stored as the adjudicated label that
resolves the pair (replaced, never deleted, when decided again; audited; optionally a gold question), the reviewer
role, the reviewer API over real HTTP with its role checks, and the CLI verbs."""

import json
import uuid
from contextlib import closing
from datetime import timedelta

import httpx
import pytest
from conftest import seed_comparisons
from sqlmodel import select
from test_cli import run
from test_server import add_users, blocks_of, gradio_login, login

from app.server import create_app, running_server
from app.services import accounts, adjudication
from app.services.errors import BadInput, Conflict, NotFound
from app.services.workdir import open_app
from data import adjudication as data_adjudication
from data.adjudication import DISAGREEMENT, JUDGE_CONTRADICTS
from data.models import AuditEvent, Comparison, Label, Lease, Prompt, utcnow
from data.pairs import iter_resolved


def add(store, cid, annotator, choice, source="human", minutes_ago=0.0, rationale=None, discarded=False):
    with store.write() as s:
        s.add(Label(comparison_id=cid, annotator=annotator, source=source, choice=choice, rationale=rationale,
                    created_at=utcnow() - timedelta(minutes=minutes_ago),
                    discarded_at=utcnow() if discarded else None))


def change(store, model, row_id, **values):
    with store.write() as s:
        row = s.get(model, row_id)
        for key, value in values.items():
            setattr(row, key, value)
        s.add(row)


def queued(store):
    return [(e.comparison_id, e.reasons) for e in data_adjudication.queue(store)]


# -- the queue --------------------------------------------------------------------------------------------------------
def test_the_queue_holds_disagreements_and_judges_against_the_majority_newest_first(store):
    c = seed_comparisons(store, 12, overlap=3)
    add(store, c[0], "alice", "a", minutes_ago=50)
    add(store, c[0], "bob", "b", minutes_ago=40)  # people disagree
    add(store, c[1], "alice", "a", minutes_ago=30)
    add(store, c[1], "judge:len", "b", "judge", minutes_ago=5)  # a judge against the (one-label) majority
    for name in ("alice", "bob", "judge:len"):  # everyone agrees
        add(store, c[2], name, "tie", "judge" if name.startswith("judge") else "human", minutes_ago=1)
    add(store, c[3], "alice", "tie", minutes_ago=20)
    add(store, c[3], "judge:len", "both_bad", "judge", minutes_ago=20)  # both bad is not a tie
    add(store, c[4], "alice", "a")
    add(store, c[4], "bob", "skip")  # a skip says nothing
    add(store, c[5], "alice", "a")
    add(store, c[5], "bob", "b", discarded=True)  # a discarded label counts for nothing
    add(store, c[6], "alice", "a")
    add(store, c[6], "bob", "b")
    change(store, Comparison, c[6], gold_choice="a")  # a gold question has its answer
    add(store, c[7], "alice", "a")
    add(store, c[7], "bob", "b")
    change(store, Comparison, c[7], discarded_at=utcnow(), discard_reason="spam")
    add(store, c[8], "alice", "a")
    add(store, c[8], "import", "b", "import")  # imports are not people, nor judges
    add(store, c[9], "alice", "a", minutes_ago=12)
    add(store, c[9], "bob", "b", minutes_ago=11)
    add(store, c[9], "carol", "a", minutes_ago=10)
    add(store, c[9], "judge:len", "b", "judge", minutes_ago=60)  # both reasons; the newest label dates it
    add(store, c[10], "alice", "a")
    add(store, c[10], "bob", "b")
    change(store, Comparison, c[10], status="retired")
    add(store, c[11], "alice", "a")
    add(store, c[11], "bob", "b")
    with store.write() as s:  # a discarded prompt takes its comparison out
        prompt = s.get(Prompt, s.get(Comparison, c[11]).prompt_id)
        prompt.discarded_at = utcnow()
        s.add(prompt)

    assert queued(store) == [(c[1], (JUDGE_CONTRADICTS,)), (c[9], (DISAGREEMENT, JUDGE_CONTRADICTS)),
                             (c[3], (JUDGE_CONTRADICTS,)), (c[0], (DISAGREEMENT,))]
    assert data_adjudication.queue_counts(store) == {"total": 4, DISAGREEMENT: 2, JUDGE_CONTRADICTS: 3}
    first = data_adjudication.queue(store, limit=1)[0]
    assert (first.counts, first.majority) == ({"a": 1, "b": 0, "tie": 0, "both_bad": 0}, "a")
    assert first.messages[0]["content"].startswith("prompt ")
    assert [e.comparison_id for e in data_adjudication.queue(store, limit=2, offset=2)] == [c[3], c[0]]


def test_an_item_shows_the_prompt_both_responses_and_every_label_with_its_rationale(store):
    [cid] = seed_comparisons(store, 1, overlap=2)
    add(store, cid, "alice", "a", rationale="A cites its source", minutes_ago=3)
    add(store, cid, "bob", "both_bad", rationale="both <b>wrong</b>", minutes_ago=2)
    add(store, cid, "judge:len", "b", "judge", minutes_ago=1)
    add(store, cid, "carol", "skip")

    item = data_adjudication.item(store, cid)
    assert (item.response_a, item.response_b) == ("response A0", "response B0")
    assert item.messages[0]["content"].startswith("prompt ")
    assert [(x.annotator, x.source, x.choice, x.rationale) for x in item.labels] == [
        ("alice", "human", "a", "A cites its source"), ("bob", "human", "both_bad", "both <b>wrong</b>"),
        ("judge:len", "judge", "b", None), ("carol", "human", "skip", None)]
    assert item.reasons == (DISAGREEMENT,) and item.majority is None and item.decision is None
    assert item.judge_choices == {"judge:len": "b"}
    with pytest.raises(LookupError, match="no comparison with id 999"):
        data_adjudication.item(store, 999)


# -- a decision -------------------------------------------------------------------------------------------------------
def test_a_decision_is_an_adjudication_label_that_resolves_the_pair_and_leaves_the_queue(store):
    cid, other = seed_comparisons(store, 2, overlap=3)
    add(store, cid, "alice", "a")
    add(store, cid, "bob", "b")
    add(store, other, "alice", "tie")
    add(store, other, "bob", "both_bad")
    with store.write() as s:  # carol holds the comparison to label it
        s.add(Lease(comparison_id=cid, annotator="carol", expires_at=utcnow() + timedelta(minutes=5)))

    decision = data_adjudication.decide(store, cid, "b", "rita", "  B answers the question  ")
    assert (decision.choice, decision.status, decision.replaced) == ("b", "done", None)
    with store.read() as s:
        label = s.get(Label, decision.label_id)
        assert (label.source, label.annotator, label.choice, label.rationale) == (
            "adjudication", "adjudication:rita", "b", "B answers the question")
        assert s.get(Comparison, cid).status == "done"  # resolved: nobody labels it further
        assert s.exec(select(Lease).where(Lease.comparison_id == cid)).all() == []
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "adjudicate")).one()
    assert (event.actor, event.target, event.target_id, event.reason) == ("rita", "comparison", cid,
                                                                          "B answers the question")
    assert event.detail["choice"] == "b" and event.detail["leases_dropped"] == 1
    assert queued(store) == [(other, (DISAGREEMENT,))]
    resolved = {r.comparison_id: r for r in iter_resolved(store, include_ties=True)}
    assert (resolved[cid].outcome, resolved[cid].source) == ("b", "adjudication")
    assert other not in resolved  # people who disagree resolve nothing by themselves


def test_deciding_again_replaces_the_decision_and_deletes_no_label(store):
    [cid] = seed_comparisons(store, 1, overlap=2)
    add(store, cid, "alice", "a")
    add(store, cid, "bob", "b")
    first = data_adjudication.decide(store, cid, "a", "rita", "A")
    again = data_adjudication.decide(store, cid, "tie", "rita")  # her own decision, updated
    assert again.label_id == first.label_id
    assert again.replaced == {"label_id": first.label_id, "annotator": "adjudication:rita", "choice": "a",
                              "rationale": "A"}
    other = data_adjudication.decide(store, cid, "b", "olivia", "B, on a second look")
    assert other.replaced["annotator"] == "adjudication:rita" and other.label_id != first.label_id

    with store.read() as s:
        rows = s.exec(select(Label).where(Label.source == "adjudication").order_by(Label.id)).all()
        events = s.exec(select(AuditEvent).where(AuditEvent.action == "adjudicate").order_by(AuditEvent.id)).all()
    assert [(x.annotator, x.choice, x.discarded_at is not None) for x in rows] == [
        ("adjudication:rita", "tie", True), ("adjudication:olivia", "b", False)]
    assert rows[0].discard_reason == "replaced by adjudication:olivia's decision"
    assert [(e.actor, e.detail["choice"], (e.detail["replaced"] or {}).get("choice")) for e in events] == [
        ("rita", "a", None), ("rita", "tie", "a"), ("olivia", "b", "tie")]
    assert data_adjudication.item(store, cid).decision.annotator == "adjudication:olivia"
    assert {r.comparison_id: r.outcome for r in iter_resolved(store)} == {cid: "b"}


def test_a_discarded_decision_puts_the_comparison_back_in_the_queue(store):
    [cid] = seed_comparisons(store, 1, overlap=2)
    add(store, cid, "alice", "a")
    add(store, cid, "bob", "b")
    decision = data_adjudication.decide(store, cid, "a", "rita")
    assert queued(store) == []
    change(store, Label, decision.label_id, discarded_at=utcnow(), discard_reason="rita was guessing")
    assert queued(store) == [(cid, (DISAGREEMENT,))]


def test_make_gold_makes_the_decision_the_gold_answer(web_app):
    store = web_app.store
    [cid] = seed_comparisons(store, 1, overlap=2)
    add(store, cid, "alice", "a")
    add(store, cid, "bob", "both_bad")
    done = adjudication.decide(web_app, "rita", cid, "both_bad", "neither answers", make_gold=True)
    assert done["gold"] and done["left"] == 0
    assert done["message"] == (f"Decided “Both bad” on comparison {cid}: it is resolved and is now a gold question "
                               "with that answer. 0 left in the queue.")
    with store.read() as s:
        assert s.get(Comparison, cid).gold_choice == "both_bad"
        actions = [e.action for e in s.exec(select(AuditEvent).order_by(AuditEvent.id)).all()]
    assert actions == ["adjudicate", "mark_gold"]
    with pytest.raises(Conflict, match="is a gold question"):  # its answer is changed as a gold question's is
        adjudication.decide(web_app, "rita", cid, "a")


def test_decisions_are_refused_for_what_cannot_be_decided(web_app):
    store = web_app.store
    retired, discarded, fine = seed_comparisons(store, 3)
    change(store, Comparison, retired, status="retired")
    change(store, Comparison, discarded, discarded_at=utcnow(), discard_reason="spam")
    with pytest.raises(Conflict, match="retired"):
        adjudication.decide(web_app, "rita", retired, "a")
    with pytest.raises(Conflict, match="discarded"):
        adjudication.decide(web_app, "rita", discarded, "a")
    with pytest.raises(NotFound, match="no comparison with id 999"):
        adjudication.decide(web_app, "rita", 999, "a")
    with pytest.raises(BadInput, match="a decision is one of a, b, tie, both_bad, not 'skip'"):
        adjudication.decide(web_app, "rita", fine, "skip")
    with store.read() as s:
        assert s.exec(select(Label)).all() == [] and s.exec(select(AuditEvent)).all() == []


def test_the_service_says_how_many_wait_and_why(web_app):
    store = web_app.store
    assert adjudication.queue(web_app)["message"] == "Nothing to adjudicate: no comparison's labels disagree."
    a, b = seed_comparisons(store, 2, overlap=2)
    add(store, a, "alice", "a", minutes_ago=1)
    add(store, a, "bob", "b", minutes_ago=1)
    add(store, b, "alice", "a")
    add(store, b, "judge:len", "tie", "judge")
    listed = adjudication.queue(web_app)
    assert listed["message"] == ("2 comparisons to adjudicate (1 where people disagree, 1 where a judge contradicts "
                                 "the majority); newest first.")
    assert [(e["comparison_id"], e["why"], e["labels"]) for e in listed["items"]] == [
        (b, "a judge contradicts the majority", 1), (a, "people disagree", 2)]
    assert adjudication.first_item(web_app)["comparison_id"] == b


# -- the reviewer role ------------------------------------------------------------------------------------------------
def test_a_reviewer_labels_and_adjudicates_but_is_no_operator(web_app):
    accounts.add_user(web_app, "olivia", "operator", "a long password")
    user, _ = accounts.add_user(web_app, "rita", "reviewer", "a long password")
    accounts.add_user(web_app, "alice", "annotator", "a long password")
    assert user.role == "reviewer"
    assert [accounts.can_adjudicate(web_app, n) for n in ("rita", "olivia", "alice", "nobody", None)] == [
        True, True, False, False, False]
    with pytest.raises(Conflict, match="olivia is the only enabled operator and cannot be made a reviewer"):
        accounts.set_role(web_app, "olivia", "reviewer", "cli")
    accounts.set_role(web_app, "alice", "reviewer", "olivia")
    assert accounts.role_of(web_app, "alice") == "reviewer"
    accounts.set_disabled(web_app, "rita", True, "olivia")
    assert not accounts.can_adjudicate(web_app, "rita")  # a disabled reviewer adjudicates nothing


# -- the JSON API -----------------------------------------------------------------------------------------------------
@pytest.fixture
def server(web_app, password_hash):
    add_users(web_app, password_hash, ["alice"])
    add_users(web_app, password_hash, ["rita"], role="reviewer")
    add_users(web_app, password_hash, ["olivia"], role="operator")
    with running_server(create_app(web_app, ui=False)) as url:
        yield url


def test_reviewers_and_operators_adjudicate_over_http_and_annotators_get_403(server, web_app):
    store = web_app.store
    cid, other = seed_comparisons(store, 2, overlap=2)
    add(store, cid, "alice", "a", rationale="A is right", minutes_ago=1)
    add(store, cid, "bob", "b", rationale="B is kinder", minutes_ago=1)
    add(store, other, "alice", "a")
    add(store, other, "judge:len", "b", "judge")
    with closing(login(server, "alice")) as alice, closing(login(server, "rita")) as rita, \
            closing(login(server, "olivia")) as olivia:
        for method, path in (("get", "/api/v1/adjudication"), ("get", f"/api/v1/adjudication/{cid}"),
                             ("post", f"/api/v1/adjudication/{cid}")):
            kwargs = {"json": {"choice": "a"}} if method == "post" else {}
            r = getattr(alice, method)(path, **kwargs)
            assert r.status_code == 403 and r.json() == {"detail": "reviewers and operators only"}
        assert httpx.get(f"{server}/api/v1/adjudication").status_code == 401
        assert rita.get("/api/v1/stats").status_code == 403  # a reviewer is no operator
        assert rita.get("/api/v1/next").status_code == 200  # but labels like an annotator

        listed = rita.get("/api/v1/adjudication").json()
        assert listed["counts"] == {"total": 2, DISAGREEMENT: 1, JUDGE_CONTRADICTS: 1}
        assert [e["comparison_id"] for e in listed["items"]] == [other, cid]
        item = rita.get(f"/api/v1/adjudication/{cid}").json()
        assert [(x["annotator"], x["choice_text"], x["rationale"]) for x in item["labels"]] == [
            ("alice", "A better", "A is right"), ("bob", "B better", "B is kinder")]
        assert rita.get("/api/v1/adjudication/999").status_code == 404
        assert rita.post(f"/api/v1/adjudication/{cid}", json={"choice": "skip"}).status_code == 422

        r = rita.post(f"/api/v1/adjudication/{cid}", json={"choice": "a", "rationale": "A is right",
                                                           "make_gold": True})
        assert r.status_code == 200, r.text
        assert (r.json()["choice"], r.json()["gold"], r.json()["left"]) == ("a", True, 1)
        assert olivia.post(f"/api/v1/adjudication/{cid}", json={"choice": "b"}).status_code == 409  # gold now
        r = olivia.post(f"/api/v1/adjudication/{other}", json={"choice": "b"})
        assert r.status_code == 200 and r.json()["left"] == 0
        assert olivia.get("/api/v1/adjudication").json()["items"] == []
    with store.read() as s:
        assert s.get(Comparison, cid).gold_choice == "a"
        decided = s.exec(select(Label.annotator, Label.choice).where(Label.source == "adjudication")
                         .order_by(Label.id)).all()
    assert [tuple(x) for x in decided] == [("adjudication:rita", "a"), ("adjudication:olivia", "b")]


# -- the web UI's events ---------------------------------------------------------------------------------------------
@pytest.mark.sqlite_only
def test_every_review_event_checks_the_role_on_the_server(web_app, password_hash):
    add_users(web_app, password_hash, ["alice"])
    add_users(web_app, password_hash, ["rita"], role="reviewer")
    store = web_app.store
    [cid] = seed_comparisons(store, 1, overlap=2)
    add(store, cid, "alice", "a")
    add(store, cid, "bob", "b")
    fastapi_app = create_app(web_app)
    events = [(fn.name, i) for i, fn in blocks_of(fastapi_app).fns.items()
              if getattr(fn.fn, "__module__", "") == "app.ui.review"]
    inputs = {"open_review": [None], "show_next": [], "show_id": [cid], "show_selected": [],
              "decide_click": [cid, "", False]}
    # The tab opening and Refresh both open the review; a decision button per choice.
    assert sorted(name for name, _ in events) == sorted([*inputs, "open_review", *["decide_click"] * 3])
    picked = {"index": [0, 0], "value": cid, "row_value": [cid, "people disagree"], "selected": True}
    with running_server(fastapi_app) as url, closing(gradio_login(url, "alice")) as annotator, \
            closing(gradio_login(url, "rita")) as reviewer:
        for name, i in events:
            refused = call_event(annotator, i, inputs[name], picked)
            assert refused["success"] is False and "Only reviewers and operators" in json.dumps(refused), name
        session = uuid.uuid4().hex  # one page: the comparison shown is server-side state, never the client's
        for name, i in dict(events).items():  # open_review first; the last decision button: both bad
            allowed = call_event(reviewer, i, inputs[name], picked, session)
            assert allowed["success"] is True, (name, allowed)
        assert "Decided “Both bad”" in json.dumps(allowed, ensure_ascii=False)
    with store.read() as s:
        assert [(x.annotator, x.choice) for x in s.exec(select(Label).where(Label.source == "adjudication"))] == [
            ("adjudication:rita", "both_bad")]


def call_event(client: httpx.Client, fn_index: int, data: list, event_data: dict | None = None,
               session: str | None = None) -> dict:
    """tests/test_server.call_event with the event's data (a table row picked) too, in page `session` if given."""
    session = session or uuid.uuid4().hex
    r = client.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                    "event_data": event_data, "trigger_id": None})
    assert r.status_code == 200, r.text
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_completed":
                return json.loads(line[5:])
    raise AssertionError("no process_completed message")


# -- the CLI ----------------------------------------------------------------------------------------------------------
def test_cli_lists_the_queue_and_decides(initialised):
    app = open_app(initialised)
    cid, _ = seed_comparisons(app.store, 2, overlap=2)
    add(app.store, cid, "alice", "a")
    add(app.store, cid, "bob", "tie")
    app.close()
    r = run("adjudication", workdir=initialised)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "1 comparison to adjudicate (1 where people disagree); newest first."
    assert r.stdout.splitlines()[1].startswith(f"{cid}  people disagree  a/b/tie/both_bad 1/0/1/0  prompt ")
    r = run("adjudicate", cid, "tie", "--rationale", "equally good", "--gold", workdir=initialised)
    assert r.returncode == 0 and "is now a gold question" in r.stdout and "0 left in the queue" in r.stdout, r.stderr
    r = run("adjudicate", 999, "a", workdir=initialised)
    assert r.returncode == 1 and "no comparison with id 999" in r.stderr and "Traceback" not in r.stderr
    assert run("adjudication", workdir=initialised).stdout.startswith("Nothing to adjudicate")
    r = run("users", "add", "rita", "--role", "reviewer", workdir=initialised)
    assert r.returncode == 0 and "added reviewer rita" in r.stdout
    r = run("users", "role", "rita", "annotator", workdir=initialised)
    assert r.returncode == 0 and r.stdout.strip() == "rita is now an annotator"
