"""The labelling service: the settings reach the queue, a click is one transaction (a pair's choice, a ranking,
ratings or a thumb), a refusal is a notice with the next view, undo gives back any kind, and the web UI and the
JSON API record a click through the one same function."""

from contextlib import closing, contextmanager
from datetime import timedelta

import httpx
import pytest
from conftest import TEST_PASSWORD, seed_comparisons
from sqlalchemy import event
from test_queue import labels_of, make_kind_comparison

from app.server import create_app, running_server
from app.services import labelling
from app.services.errors import BadInput, Conflict
from app.services.workdir import init_workdir
from data.models import Comparison, utcnow


def status_of(app, comparison_id: int) -> str:
    with app.store.read() as s:
        return s.get(Comparison, comparison_id).status


@contextmanager
def transactions(app):
    """Counts the transactions begun on the app's database meanwhile (reads and writes)."""
    began = []
    listener = lambda conn: began.append(conn)  # noqa: E731
    event.listen(app.store.engine, "begin", listener)
    try:
        yield began
    finally:
        event.remove(app.store.engine, "begin", listener)


def test_service_functions_pass_the_labelling_settings(workdir, tmp_path, db_url, backend):
    app, _ = init_workdir(workdir, base=str(tmp_path / "base"), overrides={"labelling.lease_seconds": "30"},
                          database_url=db_url if backend == "postgresql" else None)
    try:
        [cid] = seed_comparisons(app.store, 1)
        item = labelling.next_for(app, "alice")
        assert item.expires_at - utcnow() <= timedelta(seconds=30)
        assert labelling.next_for(app, "alice") == item
        assert labelling.label(app, "alice", cid, item.shown_order, choice="a", time_spent_s=3.5).result.done
        assert labelling.my_progress(app, "alice") == {"open": 0, "left": 0, "labelled_today": 1}
        pair = labelling.edit(app, "alice", cid, "A0 fixed", item.shown_order, edited_from="a")
        assert status_of(app, pair) == "done"
    finally:
        app.close()


def test_a_click_is_one_transaction_with_the_next_comparison_and_the_progress(web_app):
    first, second = seed_comparisons(web_app.store, 2)
    item = labelling.next_for(web_app, "ann")
    with transactions(web_app) as began:
        labelled = labelling.label(web_app, "ann", item.comparison_id, item.shown_order, side="left", and_next=True)
    assert len(began) == 1
    assert labelled.result.created and labelled.result.done and labelled.next.comparison_id != item.comparison_id
    assert {item.comparison_id, labelled.next.comparison_id} == {first, second}
    with transactions(web_app) as began:
        view = labelling.label_and_next(web_app, "ann", labelled.next.comparison_id, "right",
                                        labelled.next.shown_order)
    assert len(began) == 1  # the label, the next comparison and the progress shown beside it: one commit
    assert view.item is None and view.notice == "" and view.progress["labelled_today"] == 2


def test_a_refused_click_shows_the_next_comparison_and_why(web_app):
    cids = seed_comparisons(web_app.store, 2)
    item = labelling.next_for(web_app, "ann")
    labelling.label(web_app, "ann", item.comparison_id, item.shown_order, choice="a")
    with pytest.raises(Conflict, match="first label stands"):
        labelling.label(web_app, "ann", item.comparison_id, item.shown_order, choice="b", and_next=True)
    view = labelling.label_and_next(web_app, "ann", item.comparison_id, "tie", item.shown_order)
    assert "first label stands" in view.notice and view.item.comparison_id in cids
    assert view.item.comparison_id != item.comparison_id
    with pytest.raises(BadInput, match="exactly one of side or choice"):
        labelling.label(web_app, "ann", item.comparison_id, item.shown_order, side="left", choice="a")
    with pytest.raises(BadInput, match="side must be one of"):
        labelling.label_and_next(web_app, "ann", item.comparison_id, "up", item.shown_order)


def test_the_api_and_the_label_page_record_a_click_through_one_function(web_app, password_hash, monkeypatch):
    seed_comparisons(web_app.store, 3)
    web_app.store.accounts.add_user("alice", "annotator", password_hash)
    calls = []
    real = labelling.label

    def spy(*args, **kwargs):
        calls.append(kwargs["and_next"])
        return real(*args, **kwargs)

    monkeypatch.setattr(labelling, "label", spy)
    with running_server(create_app(web_app, ui=False)) as url, closing(httpx.Client(base_url=url)) as client:
        token = client.post("/api/v1/login", json={"name": "alice", "password": TEST_PASSWORD}).json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        item = client.get("/api/v1/next").json()["comparison"]
        body = {"comparison_id": item["comparison_id"], "side": "left", "shown_order": item["shown_order"]}
        answer = client.post("/api/v1/labels?next=true", json=body).json()
        assert answer["created"] and answer["next"]["comparison_id"] != item["comparison_id"]
        assert client.post("/api/v1/labels", json={**body, "side": None}).status_code == 422
    view = labelling.label_view(web_app, "alice")
    labelling.label_and_next(web_app, "alice", view.item.comparison_id, "right", view.item.shown_order)
    assert calls == [True, False, True]


def test_the_label_page_opens_with_my_recent_labels_as_i_clicked_them(web_app):
    seed_comparisons(web_app.store, 3, texts=lambda i: (f"Question {i}", f"a{i}", f"b{i}"))
    assert labelling.open_view(web_app, "ann").recent == []
    item = labelling.next_for(web_app, "ann")
    view = labelling.label_and_next(web_app, "ann", item.comparison_id, "right", item.shown_order)
    labelling.label_and_next(web_app, "ann", view.item.comparison_id, "tie", view.item.shown_order)
    opened = labelling.open_view(web_app, "ann")  # a reload: what the session knew comes from the database
    assert [(r.comparison_id, r.side) for r in opened.recent] == [(view.item.comparison_id, "tie"),
                                                                  (item.comparison_id, "right")]
    assert all(r.prompt.startswith("Question ") and not r.discarded for r in opened.recent)
    assert opened.item is not None and opened.progress["labelled_today"] == 2
    assert labelling.open_view(web_app, "someone else").recent == []


# -- rankings, ratings and thumbs: the label page's click for any kind -------------------------------------------------
def test_give_and_next_records_a_ranking_in_one_transaction_and_the_next_view_carries_the_rating_form(web_app):
    web_app.settings.labelling.rating_criteria = {"clarity": "Is it easy to follow?"}
    ranking_id = make_kind_comparison(web_app.store, "ranking", 3)
    rating_id = make_kind_comparison(web_app.store, "rating", 2)
    view = labelling.open_view(web_app, "ann")
    assert view.item.comparison_id == ranking_id and view.rating is None
    with transactions(web_app) as began:
        after = labelling.give_and_next(web_app, "ann", ranking_id, view.item.shown_order, "ranked",
                                        ranking=[1, 3, 1], rationale="first and last tie", time_spent_s=2.0)
    assert len(began) == 1 and after.notice == ""
    assert after.labelled.choice == "ranked" and after.labelled.done
    assert after.item.comparison_id == rating_id and after.item.kind == "rating"
    assert after.rating == (web_app.settings.labelling.rating_scale, {"clarity": "Is it easy to follow?"})
    assert labelling.label_view(web_app, "ann").rating == after.rating  # a reload shows the form too
    [label] = labels_of(web_app.store, ranking_id)
    assert (label.ranking, label.rationale, label.time_spent_s) == ([1, 3, 1], "first and last tie", 2.0)
    done = labelling.give_and_next(web_app, "ann", rating_id, after.item.shown_order, "rated",
                                   ratings={"clarity": [2, 5]})
    assert done.item is None and done.rating is None and done.progress["labelled_today"] == 2
    assert labels_of(web_app.store, rating_id)[0].ratings == {"clarity": [2, 5]}


def test_a_malformed_ranking_is_bad_input_and_a_refused_one_a_notice_with_the_next_view(web_app):
    first = make_kind_comparison(web_app.store, "ranking", 3)
    item = labelling.next_for(web_app, "ann")
    with pytest.raises(BadInput, match="rank of each of the 3"):
        labelling.give_and_next(web_app, "ann", first, item.shown_order, "ranked", ranking=[1, 2])
    with pytest.raises(BadInput, match="rate every criterion"):
        labelling.give_and_next(web_app, "ann", first, item.shown_order, "rated", ratings={"nope": [1, 2, 3]})
    assert labels_of(web_app.store, first) == []  # nothing stored: the annotator fixes it and submits again
    labelling.give_and_next(web_app, "ann", first, item.shown_order, "ranked", ranking=[1, 2, 3])
    second = make_kind_comparison(web_app.store, "thumbs", 1)
    view = labelling.give_and_next(web_app, "ann", first, item.shown_order, "ranked", ranking=[3, 2, 1])
    assert "first label stands" in view.notice and view.item.comparison_id == second
    assert labels_of(web_app.store, first)[0].ranking == [1, 2, 3]


@pytest.mark.parametrize("kind, k, choice, given", [
    ("ranking", 3, "ranked", {"ranking": [2, 2, 1]}),
    ("rating", 2, "rated", {"ratings": {"helpfulness": [1, 5], "harmlessness": [3, 3], "honesty": [4, 2]}}),
    ("thumbs", 1, "up", {}),
])
def test_undo_gives_back_a_ranking_a_rating_or_a_thumb(web_app, kind, k, choice, given):
    cid = make_kind_comparison(web_app.store, kind, k)
    item = labelling.next_for(web_app, "ann")
    labelled = labelling.give_and_next(web_app, "ann", cid, item.shown_order, choice, **given)
    assert labelled.item is None and len(labels_of(web_app.store, cid)) == 1
    undone = labelling.undo_and_view(web_app, "ann")
    assert undone.undone == labelled.labelled.label_id and repr(choice) in undone.notice
    assert undone.item.comparison_id == cid and undone.item.kind == kind and status_of(web_app, cid) == "open"
    assert (undone.rating is not None) == (kind == "rating")
    assert labels_of(web_app.store, cid) == []
    again = labelling.give_and_next(web_app, "ann", cid, undone.item.shown_order, choice, **given)
    assert again.labelled.created and again.notice == ""
