"""Label quality (data/quality.py, app/services/quality.py): gold questions resolve from their known answer alone,
gold accuracy per annotator, the hold-back of labels below the threshold, release and discard, adjudication."""

import json
from datetime import timedelta

import pytest
from conftest import make_kind_comparison
from sqlmodel import select
from test_pairs import add_comparison, add_labels

from data import quality
from data.export import export_pairs
from data.models import AuditEvent, Comparison, Label, utcnow
from data.pairs import count_resolved, iter_resolved
from data.quality import GoldPolicy, GoldScore

START = utcnow() - timedelta(days=1)


def label(store, cid: int, annotator: str, choice: str, *, source: str = "human", at: int = 0) -> int:
    """One label, `at` minutes after START (gold answers are ordered by when they were given)."""
    with store.write() as s:
        row = Label(comparison_id=cid, annotator=annotator, source=source, choice=choice,
                    created_at=START + timedelta(minutes=at))
        s.add(row)
        s.flush()
        return row.id


def gold(store, answer: str, **kw) -> int:
    cid = add_comparison(store, **kw)
    quality.mark_gold(store, cid, answer, "op")
    return cid


def resolved(store, **kw):
    rows = list(iter_resolved(store, **kw))
    counted = {k: v for k, v in kw.items() if k not in ("metadata", "batch_size", "ids")}
    assert len(rows) == count_resolved(store, **counted)
    return {r.comparison_id: r for r in rows}


def comparison(store, cid: int) -> Comparison:
    with store.read() as s:
        return s.get(Comparison, cid)


# -- gold questions ----------------------------------------------------------------------------------------------
def test_gold_resolves_once_from_its_known_answer_whatever_people_said(store):
    cid = add_comparison(store, overlap=3)
    add_labels(store, cid, "b", "b", "b")
    add_labels(store, cid, "b", source="import")
    quality.mark_gold(store, cid, "a", "op", "checked by hand")
    rows = [r for r in iter_resolved(store, sources=("human", "import", "judge"), metadata=True)
            if r.comparison_id == cid]
    assert len(rows) == 1
    row = rows[0]
    assert (row.source, row.outcome, row.agreement, row.labels, row.annotators) == ("gold", "a", 1.0, 1, [])
    assert (row.chosen, row.rejected) == ("answer A", "answer B")
    with store.read() as s:
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "mark_gold")).one()
    assert (event.target, event.target_id, event.reason, event.detail) == (
        "comparison", cid, "checked by hand", {"choice": "a", "previous": None})


def test_gold_with_no_labels_resolves_even_past_every_labelled_id(store):
    labelled = add_comparison(store)
    add_labels(store, labelled, "a")
    lone = gold(store, "b")  # a higher id than any label's comparison
    row = resolved(store)[lone]
    assert (row.source, row.outcome, row.chosen, row.rejected) == ("gold", "b", "answer B", "answer A")
    assert set(resolved(store)) == {labelled, lone}
    assert set(resolved(store, batch_size=1)) == {labelled, lone}


def test_gold_alone_in_an_unlabelled_database_resolves(store):
    cid = gold(store, "a")
    assert set(resolved(store)) == {cid}
    assert set(resolved(store, ids=[cid])) == {cid}


def test_gold_resolves_when_human_or_import_labels_are_allowed(store):
    cid = gold(store, "a")
    add_labels(store, cid, "b", source="judge")
    assert cid in resolved(store, sources=("human",))
    assert cid in resolved(store, sources=("import",))
    assert resolved(store, sources=("judge",)) == {}  # nor do judges' labels on it resolve it


def test_a_tie_like_gold_answer_is_a_tie_row(store):
    cid = gold(store, "both_bad")
    assert resolved(store) == {}
    assert resolved(store, include_ties=True)[cid].outcome == "both_bad"


def test_discarded_or_retired_gold_does_not_resolve(store):
    discarded, retired = gold(store, "a"), gold(store, "a", status="retired")
    with store.write() as s:
        row = s.get(Comparison, discarded)
        row.discarded_at = utcnow()
        s.add(row)
    assert discarded not in resolved(store) and retired not in resolved(store)


def test_unmarking_gold_lets_its_labels_resolve_it_again(store):
    cid = gold(store, "a")
    add_labels(store, cid, "b")
    quality.unmark_gold(store, cid, "op")
    row = resolved(store)[cid]
    assert (row.source, row.outcome) == ("human", "b")
    with pytest.raises(ValueError, match="not a gold question"):
        quality.unmark_gold(store, cid, "op")


def test_mark_gold_refuses_unknown_ids_and_bad_answers(store):
    cid = add_comparison(store)
    with pytest.raises(LookupError, match="no comparison with id 999"):
        quality.mark_gold(store, 999, "a", "op")
    with pytest.raises(ValueError, match="a, b, tie, both_bad"):
        quality.mark_gold(store, cid, "skip", "op")
    assert comparison(store, cid).gold_choice is None
    quality.mark_gold(store, cid, "tie", "op")
    quality.mark_gold(store, cid, "b", "op")  # a changed answer
    assert comparison(store, cid).gold_choice == "b"
    ranking = make_kind_comparison(store, "ranking", 3)
    with pytest.raises(quality.QualityRefused, match="is a ranking comparison; a gold question is a pair"):
        quality.mark_gold(store, ranking, "a", "op")
    assert comparison(store, ranking).gold_choice is None


def test_gold_questions_lists_answers_and_correct(store):
    cid = gold(store, "a")
    label(store, cid, "ann", "a")
    label(store, cid, "bob", "b")
    label(store, cid, "cy", "skip")
    assert quality.gold_questions(store) == [
        {"id": cid, "gold": "a", "status": "open", "discarded": False, "answered": 2, "correct": 1}]


# -- accuracy and the hold-back ----------------------------------------------------------------------------------
def answer_gold(store, annotator: str, results: str, start: int = 0) -> list[int]:
    """`annotator` answers one new gold question per letter, in order: R right, W wrong. Returns their ids."""
    ids = []
    for i, result in enumerate(results):
        cid = gold(store, "tie")
        # both_bad is its own category: it is no right answer to a tie.
        label(store, cid, annotator, "tie" if result == "R" else "both_bad", at=start + i)
        ids.append(cid)
    return ids


def test_gold_accuracy_overall_and_over_the_recent_window(store):
    answer_gold(store, "ann", "RRWRWWW")  # overall 3/7; the latest 4: R W W W = 1/4
    answer_gold(store, "bob", "RRR", start=100)
    cid = gold(store, "a")
    label(store, cid, "ann", "skip", at=50)  # a skip answers nothing
    label(store, cid, "judge:j", "b", source="judge")  # nor does a judge
    scores = quality.gold_scores(store, window=4, min_answers=4, threshold=0.5)
    assert scores["ann"] == GoldScore(answered=7, correct=3, accuracy=3 / 7, recent_answered=4,
                                      recent_accuracy=0.25, held=True, held_labels=0)
    assert scores["bob"] == GoldScore(3, 3, 1.0, 3, 1.0, False, 0)
    assert set(scores) == {"ann", "bob"}
    # Under min_answers nobody is held; at threshold 0 the hold is off.
    assert not quality.gold_scores(store, window=4, min_answers=5, threshold=0.5)["ann"].held
    assert not quality.gold_scores(store, window=4, min_answers=1, threshold=0)["ann"].held
    # Exactly at the threshold is not below it.
    assert not quality.gold_scores(store, window=4, min_answers=4, threshold=0.25)["ann"].held


@pytest.fixture
def held_store(store):
    """'ann' answered 4 gold questions, 1 right: held under the store's policy; 'bob' is fine."""
    store.gold_policy = GoldPolicy(window=4, min_answers=4, threshold=0.5)
    answer_gold(store, "ann", "RWWW")
    answer_gold(store, "bob", "RRRR")
    return store


def test_held_labels_stay_out_of_pairs_and_export_until_released(held_store, tmp_path):
    store = held_store
    alone, shared = add_comparison(store, status="done"), add_comparison(store, overlap=2, status="done")
    label(store, alone, "ann", "a")
    label(store, shared, "ann", "a")
    label(store, shared, "bob", "a")
    assert resolved(store) == {}  # ann's labels do not count: neither comparison has enough
    out = tmp_path / "pairs.jsonl"
    assert export_pairs(store, out) == 0
    assert quality.gold_scores(store, 4, 4, 0.5)["ann"].held_labels == 2

    assert quality.release_held(store, "ann", store.gold_policy, "op", "looked fine") == 2
    assert set(resolved(store)) == {alone, shared}
    assert resolved(store, metadata=True)[shared].annotators == ["ann", "bob"]
    assert export_pairs(store, out) == 2
    # A later label is held again while ann's accuracy stays low.
    later = add_comparison(store)
    label(store, later, "ann", "b")
    assert later not in resolved(store)
    assert quality.gold_scores(store, 4, 4, 0.5)["ann"].held_labels == 1
    with store.read() as s:
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "release_held")).one()
    assert (event.target, event.detail["annotator"], len(event.detail["labels"])) == ("annotator", "ann", 2)


def test_an_annotator_whose_accuracy_recovers_counts_again(held_store):
    store = held_store
    cid = add_comparison(store)
    label(store, cid, "ann", "a")
    assert resolved(store) == {}
    answer_gold(store, "ann", "RRR", start=10)  # the latest 4: W R R R
    assert set(resolved(store)) == {cid}


def test_discarding_held_labels_reopens_their_comparisons(held_store):
    store = held_store
    cid = add_comparison(store, overlap=2, status="done")
    label(store, cid, "ann", "a")
    label(store, cid, "bob", "a")
    with pytest.raises(ValueError, match="reason"):
        quality.discard_held(store, "ann", store.gold_policy, "op", " ")
    assert quality.discard_held(store, "ann", store.gold_policy, "op", "guessing") == {cid: "open"}
    with store.read() as s:
        ann = s.exec(select(Label).where(Label.annotator == "ann", Label.comparison_id == cid)).one()
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "discard_held")).one()
    assert (ann.discard_reason, event.reason, event.detail["statuses"]) == ("guessing", "guessing", {str(cid): "open"})
    assert comparison(store, cid).status == "open"
    # Their gold answers are no held labels: they stay, and still measure them.
    assert quality.gold_scores(store, 4, 4, 0.5)["ann"] == GoldScore(4, 1, 0.25, 4, 0.25, True, 0)


def test_release_and_discard_refuse_an_annotator_not_held(held_store):
    with pytest.raises(ValueError, match="'bob' is not held back"):
        quality.release_held(held_store, "bob", held_store.gold_policy, "op")
    with pytest.raises(ValueError, match="has no held labels"):
        quality.discard_held(held_store, "ann", held_store.gold_policy, "op", "why")


def test_odd_annotator_names_are_held_safely(store):
    store.gold_policy = GoldPolicy(window=2, min_answers=2, threshold=1.0)
    name = "o'brien {lo} %s \\"
    answer_gold(store, name, "WW")
    cid = add_comparison(store)
    label(store, cid, name, "a")
    other = add_comparison(store)
    label(store, other, "bob", "a")
    assert set(resolved(store, metadata=True)) == {other}


# -- adjudication ------------------------------------------------------------------------------------------------
def test_one_adjudication_label_resolves_first_whatever_sources_are_allowed(store, tmp_path):
    cid = add_comparison(store, overlap=3)
    add_labels(store, cid, "a", "a", "a")
    add_labels(store, cid, "a", source="import")
    label(store, cid, "adjudication:rita", "b", source="adjudication")
    for sources in (("human", "import"), ("judge",), ("adjudication",)):
        row = resolved(store, sources=sources, metadata=True)[cid]
        assert (row.source, row.outcome, row.labels, row.annotators) == (
            "adjudication", "b", 1, ["adjudication:rita"])
    export_pairs(store, tmp_path / "pairs.jsonl", metadata=True)
    meta = [json.loads(x) for x in (tmp_path / "pairs.metadata.jsonl").read_text().splitlines()]
    assert [(m["comparison_id"], m["source"], m["adjudicated_by"]) for m in meta] == [(cid, "adjudication", ["rita"])]


def test_an_adjudicated_tie_is_not_overruled_by_people(store):
    cid = add_comparison(store)
    add_labels(store, cid, "a")
    label(store, cid, "adjudication:rita", "tie", source="adjudication")
    assert resolved(store) == {}
    assert resolved(store, include_ties=True)[cid].source == "adjudication"


def test_a_gold_question_ignores_adjudication_too(store):
    cid = gold(store, "a")
    label(store, cid, "adjudication:rita", "b", source="adjudication")
    assert (resolved(store)[cid].source, resolved(store)[cid].outcome) == ("gold", "a")


# -- the command line --------------------------------------------------------------------------------------------
@pytest.fixture
def cli_workdir(workdir, tmp_path):
    from tests.test_cli import run

    base = tmp_path / "base-model"
    base.mkdir()
    assert run("init", "--base", base, workdir=workdir).returncode == 0
    return workdir


def add_cli_labels(workdir, *labels: tuple[int, str, str]) -> None:
    """(comparison id, annotator, choice) human labels, straight into the workdir's database."""
    from app.services.workdir import open_app

    app = open_app(workdir)
    try:
        for i, (cid, annotator, choice) in enumerate(labels):
            label(app.store, cid, annotator, choice, at=i)
    finally:
        app.close()


def test_gold_and_holds_through_the_cli(cli_workdir, tmp_path):
    from tests.test_cli import run

    def ok(*args, env=None) -> str:
        r = run(*args, workdir=cli_workdir, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout

    records = [{"prompt": f"q{i}", "responses": [f"right {i}", f"wrong {i}"], "gold": "a"} for i in range(3)]
    records.append({"prompt": "work", "responses": ["x", "y"]})
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert "gold questions +3" in ok("import", path)
    assert ok("gold", "list").splitlines() == [f"{i}  a  open  0/0 right" for i in (1, 2, 3)]

    add_cli_labels(cli_workdir, (1, "ann", "b"), (2, "ann", "b"), (3, "ann", "a"), (4, "ann", "a"))
    strict = {"PREFLOOP_LABELLING_GOLD_MIN_ANSWERS": "3", "PREFLOOP_LABELLING_GOLD_THRESHOLD": "0.5"}
    assert ok("holds", env=strict).strip() == "ann  gold 1/3 (33%), recent 33% of 3  HELD (1 label(s) held)"
    assert ok("holds").strip().endswith("  ok")  # under the default 5 answers nobody is held
    assert ok("holds", "release", "ann", "--reason", "spot-checked", env=strict).strip() == \
        "Released 1 held label(s) of ann."
    again = run("holds", "release", "ann", workdir=cli_workdir, env=strict)
    assert again.returncode == 1 and "has no held labels" in again.stderr and "Traceback" not in again.stderr

    # Unmarked, question 3 is ordinary work, and ann's answer on it a label like any other: held, not released.
    assert "no longer a gold question" in ok("gold", "unmark", "3")
    add_cli_labels(cli_workdir, (3, "bob", "a"))
    two = strict | {"PREFLOOP_LABELLING_GOLD_MIN_ANSWERS": "2"}  # ann now has 2 gold answers, both wrong
    assert "Discarded 1 held label(s) of ann" in ok("holds", "discard", "ann", "--reason", "guessing", env=two)
    assert "known answer is tie" in ok("gold", "mark", "3", "tie", "--reason", "both fine")
    missing = run("gold", "mark", "999", "a", workdir=cli_workdir)
    assert missing.returncode == 1 and "no comparison with id 999" in missing.stderr
    assert run("gold", "mark", "1", "skip", workdir=cli_workdir).returncode == 2
    trail = ok("audit")
    for action in ("mark_gold  comparison 3  both fine", "unmark_gold  comparison 3", "discard_held  annotator",
                   "release_held  annotator"):
        assert action in trail


def test_a_bad_gold_field_is_refused_by_file_line_and_field(cli_workdir, tmp_path):
    from tests.test_cli import run

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b", "gold": True}) + "\n"
                    + json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "gold": "yes"}) + "\n")
    r = run("import", path, workdir=cli_workdir)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{path}:2: field 'gold': must be true" in r.stderr and "Nothing was imported" in r.stderr
    assert "no gold questions yet" in run("gold", "list", workdir=cli_workdir).stdout


# -- the console -------------------------------------------------------------------------------------------------
def test_an_operator_marks_and_unmarks_gold_in_the_console(web_app, password_hash):
    from contextlib import closing

    from app.server import create_app, running_server
    from tests.test_server import blocks_of, call_event, gradio_login

    web_app.store.accounts.add_user("olivia", "operator", password_hash)
    cid = add_comparison(web_app.store)
    fastapi_app = create_app(web_app)
    events = {fn.name: i for i, fn in blocks_of(fastapi_app).fns.items()}
    with running_server(fastapi_app) as url, closing(gradio_login(url, "olivia")) as operator:
        marked = call_event(operator, events["mark_gold"], ["comparison", cid, "b", "<b>checked</b>"])
        assert marked["success"] is True and "known answer is b" in json.dumps(marked), marked
        shown = json.dumps(call_event(operator, events["show_data"], ["comparison", cid]))
        assert "gold question</b>, known answer b" in shown
        wrong = call_event(operator, events["mark_gold"], ["label", cid, "a", ""])
        assert wrong["success"] is False and "a gold question is a comparison" in json.dumps(wrong)
        assert comparison(web_app.store, cid).gold_choice == "b"
        unmarked = call_event(operator, events["unmark_gold"], ["comparison", cid, "a", ""])
        assert unmarked["success"] is True, unmarked
    assert comparison(web_app.store, cid).gold_choice is None
    with web_app.store.read() as s:
        assert s.exec(select(AuditEvent.actor).where(AuditEvent.action == "mark_gold")).one() == "olivia"


def test_a_round_carries_the_gold_settings_its_process_reads_pairs_back_under(web_app):
    from app.services.rounds import round_config
    from training.config import RoundConfig

    web_app.settings.labelling.gold_window, web_app.settings.labelling.gold_threshold = 7, 0.9
    stored = RoundConfig.from_dict(round_config(web_app).to_dict())  # as the run row keeps it
    assert quality.GoldPolicy(**stored.gold) == quality.GoldPolicy(window=7, min_answers=5, threshold=0.9)
