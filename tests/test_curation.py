"""Curation: discarded prompts, comparisons and labels never reach an annotator, never export and never train, and
restoring brings them back; the audit trail says who, when and why; an annotator undoes their own last label until
a round takes it; the API's permissions; the CLI verbs as a user runs them."""

import io
import json

import httpx
import pytest
from conftest import TEST_PASSWORD, make_kind_comparison, seed_comparisons
from sqlmodel import select
from test_cli import run

from app.server import create_app, running_server
from app.services import curation, labelling, transfer
from app.services.errors import Conflict, Forbidden, NotFound
from app.services.workdir import open_app
from data.models import Comparison, Label, Prompt
from data.queue import Given, submit_label
from generation.backend import Sample
from training.config import RoundConfig
from training.pairs import NotEnoughPairs, select_pairs


def label(app, annotator: str, cid: int, choice: str = "a"):
    """`annotator`'s label on comparison `cid`, recorded as a script does (not handed out first)."""
    return submit_label(app.store, annotator, cid, choice, "ab", overlap_default=app.settings.labelling.overlap)


def exported_ids(app) -> set[int]:
    """The comparisons an export writes, found by their prompt text (seed_comparisons: one per prompt)."""
    buf = io.BytesIO()
    transfer.export_data(app, buf)
    prompts = {json.loads(line)["prompt"][0]["content"] for line in buf.getvalue().decode().splitlines()}
    with app.store.read() as s:
        return {c.id for c in s.exec(select(Comparison)).all() if s.get(Prompt, c.prompt_id).messages[0]["content"]
                in prompts}


def trained_ids(app) -> set[int]:
    """The comparisons a round would train on (its real pair selection)."""
    try:
        return {r.comparison_id for r in select_pairs(app.store, RoundConfig(min_pairs=1, eval_fraction=0)).train}
    except NotEnoughPairs:
        return set()


def status(app, cid: int) -> str:
    with app.store.read() as s:
        return s.get(Comparison, cid).status


def queued_ids(app, annotator: str) -> set[int]:
    """Every comparison the queue hands `annotator`, labelling each with a skip to get the next."""
    seen = set()
    while (item := labelling.next_for(app, annotator)) is not None:
        seen.add(item.comparison_id)
        label(app, annotator, item.comparison_id, "skip")
    return seen


def test_a_discarded_prompt_is_never_sampled_queued_exported_or_trained_until_restored(web_app):
    cids = seed_comparisons(web_app.store, 3)
    for cid in cids[:2]:
        label(web_app, "ann", cid)
    with web_app.store.read() as s:
        prompt_id = s.get(Comparison, cids[0]).prompt_id
        third_prompt = s.get(Comparison, cids[2]).prompt_id
    other = web_app.store.prompts.add(["never sampled yet"]).ids[0]
    v0 = web_app.store.versions.get("v0")
    assert [p.id for p in web_app.store.prompts.to_sample(v0.id, 10)] == [other]
    curation.discard(web_app, "prompt", prompt_id, "leaks a phone number", "olivia")
    curation.discard(web_app, "prompt", third_prompt, "duplicate", "olivia")
    curation.discard(web_app, "prompt", other, "off topic", "olivia")
    assert web_app.store.prompts.to_sample(v0.id, 10) == []
    assert exported_ids(web_app) == trained_ids(web_app) == {cids[1]}
    assert queued_ids(web_app, "bob") == set()
    assert web_app.store.stats.summary()["discarded"] == {"prompts": 3, "comparisons": 0, "labels": 0}
    curation.restore(web_app, "prompt", prompt_id, "olivia", "checked: no number")
    curation.restore(web_app, "prompt", third_prompt, "olivia")
    assert exported_ids(web_app) == trained_ids(web_app) == {cids[0], cids[1]}
    assert queued_ids(web_app, "carol") == {cids[2]}
    curation.restore(web_app, "prompt", other, "olivia")
    assert [p.id for p in web_app.store.prompts.to_sample(v0.id, 10)] == [other]


def test_a_discarded_comparison_leaves_the_queue_export_and_training_and_its_lease(web_app):
    cids = seed_comparisons(web_app.store, 3)
    label(web_app, "ann", cids[0])
    held = labelling.next_for(web_app, "bob")
    curation.discard(web_app, "comparison", cids[0], "responses are truncated", "olivia")
    result = curation.discard(web_app, "comparison", held.comparison_id, "garbled", "olivia")
    assert "1 annotator lease(s) released" in result["message"]
    assert cids[0] not in exported_ids(web_app) and cids[0] not in trained_ids(web_app)
    assert held.comparison_id not in queued_ids(web_app, "bob")
    with pytest.raises(Exception, match="discarded"):
        label(web_app, "carol", held.comparison_id)
    curation.restore(web_app, "comparison", cids[0], "olivia")
    assert cids[0] in exported_ids(web_app) and cids[0] in trained_ids(web_app)


def test_a_discarded_label_stops_counting_and_its_comparison_reopens_for_someone_else(web_app):
    [cid] = seed_comparisons(web_app.store, 1, overlap=1)
    r = label(web_app, "ann", cid, "b")
    assert r.done and status(web_app, cid) == "done" and exported_ids(web_app) == {cid}
    result = curation.discard(web_app, "label", r.label_id, "clicked without reading", "olivia")
    assert result["statuses"] == {str(cid): "open"} and "comparison 1 is now open" in result["message"]
    assert status(web_app, cid) == "open" and exported_ids(web_app) == set() and trained_ids(web_app) == set()
    assert labelling.next_for(web_app, "ann") is None  # their discarded label still means they saw it
    assert labelling.next_for(web_app, "bob").comparison_id == cid
    assert labelling.my_progress(web_app, "bob")["left"] == 1
    curation.restore(web_app, "label", r.label_id, "olivia", "re-checked")
    # Restored, the label fills the overlap again while bob's lease is still live: the comparison is done.
    assert status(web_app, cid) == "done" and exported_ids(web_app) == trained_ids(web_app) == {cid}


def test_discard_needs_a_reason_a_known_id_and_a_state_that_fits(web_app):
    [cid] = seed_comparisons(web_app.store, 1)
    with pytest.raises(ValueError, match="reason"):
        curation.discard(web_app, "comparison", cid, "  ", "olivia")
    with pytest.raises(LookupError, match="no label with id 99"):
        curation.discard(web_app, "label", 99, "x", "olivia")
    with pytest.raises(ValueError, match="kind"):
        curation.discard(web_app, "response", cid, "x", "olivia")
    with pytest.raises(Conflict, match="not discarded"):
        curation.restore(web_app, "comparison", cid, "olivia")
    curation.discard(web_app, "comparison", cid, "x", "olivia")
    with pytest.raises(Conflict, match="already discarded"):
        curation.discard(web_app, "comparison", cid, "again", "olivia")


def test_show_says_what_an_id_stands_for_before_it_is_discarded(web_app):
    [cid] = seed_comparisons(web_app.store, 1)
    label(web_app, "ann", cid, "b")
    comparison = curation.show(web_app, "comparison", cid)
    assert (comparison["status"], comparison["response_a"], comparison["response_b"]) == ("done", "response A0",
                                                                                           "response B0")
    assert [(x["annotator"], x["choice"], x["discarded"]) for x in comparison["labels"]] == [("ann", "b", None)]
    curation.discard(web_app, "prompt", comparison["prompt_id"], "off-topic", "olivia")
    prompt = curation.show(web_app, "prompt", comparison["prompt_id"])
    assert prompt["discarded"] == "off-topic" and prompt["comparisons"] == [cid]
    assert curation.show(web_app, "label", comparison["labels"][0]["id"])["comparison"]["prompt_discarded"] == \
        "off-topic"
    with pytest.raises(LookupError, match="no prompt with id 99"):
        curation.show(web_app, "prompt", 99)
    with pytest.raises(LookupError, match="no comparison with id"):
        curation.discard(web_app, "comparison", 10**30, "overflows no driver", "olivia")


def test_show_lists_every_response_of_a_ranking_and_what_its_labels_say_by_position(web_app):
    cid = make_kind_comparison(web_app.store, "ranking", 3)
    submit_label(web_app.store, "ann", cid, "ranked", "ab", given=Given(ranking=[2, 1, 3]))
    comparison = curation.show(web_app, "comparison", cid)
    assert comparison["comparison_kind"] == "ranking" and comparison["responses"] == ["R0", "R1", "R2"]
    text = curation.show_text(comparison)
    assert "  #1: R0\n  #2: R1\n  #3: R2" in text and "ann (human) ranked #1 2, #2 1, #3 3" in text
    rated = make_kind_comparison(web_app.store, "rating", 2)
    submit_label(web_app.store, "ann", rated, "rated", "ab", given=Given(ratings={"honesty": [5, 1]}))
    assert "ann (human) rated honesty 5, 1" in curation.show_text(curation.show(web_app, "comparison", rated))


def test_the_audit_trail_says_who_when_what_and_why_newest_first(web_app):
    [cid] = seed_comparisons(web_app.store, 1)
    r = label(web_app, "ann", cid)
    curation.discard(web_app, "label", r.label_id, "spam clicks", "olivia")
    curation.restore(web_app, "label", r.label_id, "cli:root")
    events = curation.audit_trail(web_app)
    assert [(e["actor"], e["action"], e["target"], e["id"], e["reason"]) for e in events] == [
        ("cli:root", "restore", "label", r.label_id, ""), ("olivia", "discard", "label", r.label_id, "spam clicks")]
    assert events[0]["when"] >= events[1]["when"] and events[0]["detail"]["discard_reason"] == "spam clicks"


def test_an_annotator_undoes_their_last_label_and_gets_the_comparison_back(web_app):
    cids = seed_comparisons(web_app.store, 2, overlap=1)
    first = labelling.next_for(web_app, "ann")
    view = labelling.label_and_next(web_app, "ann", first.comparison_id, "left", first.shown_order)
    assert view.item.comparison_id != first.comparison_id and status(web_app, first.comparison_id) == "done"
    view = labelling.undo_and_view(web_app, "ann")
    assert view.item.comparison_id == first.comparison_id and view.item.shown_order == first.shown_order
    assert "undone" in view.notice and status(web_app, first.comparison_id) == "open"
    with web_app.store.read() as s:
        assert s.get(Label, 1) is None
    [event] = curation.audit_trail(web_app)
    assert (event["actor"], event["action"], event["target"], event["id"]) == ("ann", "undo", "label", 1)
    assert event["detail"]["choice"] in ("a", "b") and event["detail"]["shown_order"] == first.shown_order
    assert event["detail"]["created_at"]
    again = labelling.label_and_next(web_app, "ann", first.comparison_id, "right", first.shown_order)
    assert again.notice == "" and status(web_app, first.comparison_id) == "done"
    assert set(cids) == {first.comparison_id, again.item.comparison_id}


def test_undo_is_refused_once_trained_on_and_for_someone_elses_label(web_app):
    cids = seed_comparisons(web_app.store, 2)
    mine = label(web_app, "ann", cids[0])
    theirs = label(web_app, "bob", cids[1])
    with pytest.raises(Forbidden):
        labelling.undo_last_label(web_app, "ann", label_id=theirs.label_id)
    with pytest.raises(NotFound):
        labelling.undo_last_label(web_app, "carol")
    run = web_app.store.runs.create(None, [cids[0]], {})
    web_app.store.runs.finish(run.id, "done")
    with pytest.raises(Conflict, match="training round"):
        labelling.undo_last_label(web_app, "ann")
    assert "Nothing undone" in labelling.undo_and_view(web_app, "ann").notice
    assert labelling.undo_last_label(web_app, "bob", label_id=theirs.label_id)["comparison_id"] == cids[1]
    with web_app.store.read() as s:
        assert s.get(Label, mine.label_id) is not None and s.get(Label, theirs.label_id) is None


def test_discarded_prompts_comparisons_and_labels_stay_out_of_the_generators_open_count(web_app):
    cids = seed_comparisons(web_app.store, 2)
    assert web_app.store.prompts.open_comparison_count() == 2
    curation.discard(web_app, "comparison", cids[0], "x", "olivia")
    assert web_app.store.prompts.open_comparison_count() == 1


def test_a_new_sample_of_a_discarded_prompt_is_not_queued(web_app):
    [cid] = seed_comparisons(web_app.store, 1)
    with web_app.store.read() as s:
        prompt_id = s.get(Comparison, cid).prompt_id
    curation.discard(web_app, "prompt", prompt_id, "x", "olivia")
    v0 = web_app.store.versions.get("v0")
    samples = [Sample("p", "stop", 1), Sample("q", "stop", 1)]
    web_app.store.prompts.add_samples(prompt_id, v0.id, samples, [(0, 1)], {}, 1)
    assert labelling.next_for(web_app, "ann") is None


# -- the JSON API ------------------------------------------------------------------------------------------------------
@pytest.fixture
def api(web_app, password_hash):
    web_app.store.accounts.add_user("alice", "annotator", password_hash)
    web_app.store.accounts.add_user("bob", "annotator", password_hash)
    web_app.store.accounts.add_user("olivia", "operator", password_hash)
    with running_server(create_app(web_app, ui=False)) as url:
        clients = {}

        def client(name: str) -> httpx.Client:
            if name not in clients:
                c = httpx.Client(base_url=url + "/api/v1", timeout=30)
                r = c.post("/login", json={"name": name, "password": TEST_PASSWORD})
                c.headers["Authorization"] = f"Bearer {r.json()['token']}"
                clients[name] = c
            return clients[name]

        yield client
        for c in clients.values():
            c.close()


def test_api_undo_and_operator_only_discard(web_app, api):
    cids = seed_comparisons(web_app.store, 2)
    alice, bob, olivia = api("alice"), api("bob"), api("olivia")
    assert alice.post("/labels/undo").status_code == 404
    item = alice.get("/next").json()["comparison"]
    mine = alice.post("/labels", json={"comparison_id": item["comparison_id"], "side": "left",
                                       "shown_order": item["shown_order"]}).json()
    handed = bob.get("/next").json()["comparison"]  # alice holds the first: bob is handed the second
    assert handed["comparison_id"] == cids[1]
    theirs = bob.post("/labels", json={"comparison_id": cids[1], "choice": "b",
                                       "shown_order": handed["shown_order"]}).json()
    r = alice.post("/labels/undo", json={"label_id": theirs["label_id"]})
    assert r.status_code == 403 and "not yours" in r.json()["detail"]
    r = alice.post("/labels/undo")
    assert r.status_code == 200 and r.json()["label_id"] == mine["label_id"]
    assert alice.get("/next").json()["comparison"]["comparison_id"] == item["comparison_id"]
    body = {"kind": "label", "id": theirs["label_id"], "reason": "bot"}
    assert bob.post("/discard", json=body).status_code == 403
    assert bob.get("/audit").status_code == 403
    assert olivia.post("/discard", json={**body, "reason": ""}).status_code == 422
    r = olivia.post("/discard", json=body)
    assert r.status_code == 200 and "Discarded label" in r.json()["message"]
    assert olivia.post("/discard", json=body).status_code == 409
    assert olivia.post("/restore", json={"kind": "prompt", "id": 999}).status_code == 404
    assert bob.post("/labels/undo").status_code == 409  # their last label was discarded by an operator
    assert olivia.post("/restore", json=body).status_code == 200
    audit = olivia.get("/audit", params={"limit": 2}).json()
    assert [(e["actor"], e["action"]) for e in audit] == [("olivia", "restore"), ("olivia", "discard")]


# -- the CLI -----------------------------------------------------------------------------------------------------------
def test_cli_discard_restore_and_audit(workdir, tmp_path):
    base = tmp_path / "base-model"
    base.mkdir()
    assert run("init", "--base", base, workdir=workdir).returncode == 0
    app = open_app(workdir)
    [cid] = seed_comparisons(app.store, 1)
    label(app, "ann", cid)
    app.close()
    r = run("discard", "comparison", cid, workdir=workdir)
    assert r.returncode == 2 and "--reason" in r.stderr
    r = run("discard", "label", 42, "--reason", "x", workdir=workdir)
    assert r.returncode == 1 and "no label with id 42" in r.stderr and "Traceback" not in r.stderr
    r = run("discard", "label", 1, "--reason", "annotator was testing", workdir=workdir)
    assert r.returncode == 0 and f"comparison {cid} is now open" in r.stdout, r.stderr
    r = run("restore", "label", 1, workdir=workdir)
    assert r.returncode == 0 and f"comparison {cid} is now done" in r.stdout
    r = run("restore", "label", 1, workdir=workdir)
    assert r.returncode == 1 and "is not discarded" in r.stderr and "Traceback" not in r.stderr
    r = run("audit", "--limit", 5, workdir=workdir)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 2
    assert " restore  label 1" in lines[0] and lines[0].split()[1].startswith("cli")
    assert lines[1].endswith("discard  label 1  annotator was testing")
    shown = run("show", "label", 1, workdir=workdir)
    assert shown.returncode == 0 and "label 1: ann (human) chose a" in shown.stdout
    assert f"comparison {cid}, done" in shown.stdout and "A: response A0" in shown.stdout
    assert "no comparison with id 9" in run("show", "comparison", 9, workdir=workdir).stderr
