"""The judge worker on a real SQLite store: judge labels stored as such, flips counted as ties, abstains leave no
label, the modes, the run records, watch, and the service and CLI entry points."""

import json
import threading
import uuid
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlmodel import select

from data.judge_runs import split_choices
from data.models import Comparison, Label, Lease, utcnow
from data.queue import next_comparison, submit_label
from generation.judge_worker import judge_once, judge_status, watch
from generation.judges import PythonJudge, prefer_shorter


def texts(i):
    return f"question {uuid.uuid4().hex} {i}", "short", "a much longer answer"


def labels(store, annotator=None):
    with store.read() as s:
        q = select(Label).order_by(Label.comparison_id)
        return list(s.exec(q.where(Label.annotator == annotator) if annotator else q).all())


def test_judge_labels_are_stored_with_the_judge_annotator_and_source(store, seed):
    ids = seed(store, 3, texts=texts)
    report = judge_once(store, PythonJudge(prefer_shorter, name="shorter"), mode="all")
    assert (report.judged, report.labelled, report.consistent, report.flipped, report.abstained) == (3, 3, 3, 0, 0)
    got = labels(store)
    assert [(lb.comparison_id, lb.annotator, lb.source, lb.choice) for lb in got] == \
        [(cid, "judge:shorter", "judge", "a") for cid in ids]
    record = json.loads(got[0].rationale.rpartition("[judge] ")[2])
    assert record["outcome"] == "consistent" and record["first"] == record["second"] == "a"
    with store.read() as s:  # judge labels never fill the human overlap
        assert {c.status for c in s.exec(select(Comparison)).all()} == {"open"}
    again = judge_once(store, PythonJudge(prefer_shorter, name="shorter"), mode="all")
    assert again.judged == 0 and again.run_id is None and len(labels(store)) == 3


def test_a_flip_with_the_order_is_stored_as_a_tie_and_counted(store, seed):
    seed(store, 2)
    report = judge_once(store, PythonJudge(lambda _p, _a, _b: "b", name="second"), mode="all")
    assert (report.labelled, report.flipped, report.consistent) == (2, 2, 0)
    assert {lb.choice for lb in labels(store)} == {"tie"}
    assert "position bias" in labels(store)[0].rationale
    status = judge_status(store)["judge:second"]
    assert (status["judged"], status["flipped"], status["runs"][0]["status"]) == (2, 2, "done")


def test_an_abstain_stores_no_label_but_is_counted(store, seed):
    ids = seed(store, 2, texts=lambda i: (f"q{i}", "", "") if i == 0 else (f"q{i}", "ab", "abc"))
    report = judge_once(store, PythonJudge(prefer_shorter, name="shorter"), mode="all")
    assert (report.judged, report.labelled, report.abstained) == (2, 1, 1)
    assert [lb.comparison_id for lb in labels(store)] == [ids[1]]
    run = store.judge_runs.all("judge:shorter")[0]
    assert (run.judged, run.labelled, run.abstained, split_choices(run.choices)[0]) == (2, 1, 1, {"a": 1})
    # The abstained comparison is still there for humans.
    assert next_comparison(store, "ann", 60).comparison_id == ids[0]


def test_limit_and_batches(store, seed):
    seed(store, 5, texts=texts)
    report = judge_once(store, PythonJudge(prefer_shorter, name="s"), mode="all", limit=3, batch_size=2)
    assert report.judged == 3 and len(labels(store)) == 3
    assert judge_once(store, PythonJudge(prefer_shorter, name="s"), mode="all").judged == 2


def test_unseen_mode_skips_comparisons_humans_hold_or_labelled(store, seed):
    ids = seed(store, 4, texts=texts)
    submit_label(store, "ann", ids[0], "b", "ab")
    with store.write() as s:
        s.add(Lease(comparison_id=ids[1], annotator="bob", expires_at=utcnow() + timedelta(minutes=5)))
        s.add(Lease(comparison_id=ids[2], annotator="eve", expires_at=utcnow() - timedelta(minutes=5)))  # expired
    judge_once(store, PythonJudge(prefer_shorter, name="s"), mode="unseen")
    assert [lb.comparison_id for lb in labels(store, "judge:s")] == [ids[2], ids[3]]


def test_calibration_mode_picks_a_fixed_share_including_human_labelled_ones(store, seed):
    ids = seed(store, 40, texts=texts)
    submit_label(store, "ann", ids[0], "a", "ab")  # done now
    picked = [cid for cid, *_ in store.judge_runs.to_judge("judge:c", "calibration", 100, 0.25)]
    assert 0 < len(picked) < 40 and picked == [cid for cid, *_ in
                                                store.judge_runs.to_judge("judge:x", "calibration", 100, 0.25)]
    everything = [cid for cid, *_ in store.judge_runs.to_judge("judge:c", "calibration", 100, 1.0)]
    assert everything == ids  # share 1: open and done alike
    with pytest.raises(ValueError, match="judge mode"):
        store.judge_runs.to_judge("judge:c", "some", 1)


def test_watch_judges_new_comparisons_until_stopped(store, seed):
    seed(store, 2, texts=texts)
    stop = threading.Event()
    reports = watch(store, PythonJudge(prefer_shorter, name="w"), stop, mode="all", interval_s=0.01, max_rounds=1,
                    on_report=lambda r: seed(store, 1, texts=texts))
    assert [r.judged for r in reports] == [2]
    stop.set()
    assert watch(store, PythonJudge(prefer_shorter, name="w"), stop, mode="all") == []
    assert len(labels(store, "judge:w")) == 2


def test_service_and_cli_run_the_configured_judge(web_app, seed):
    from app.cli import cli
    from app.services import judging

    seed(web_app.store, 3, texts=texts)
    sets = ["--set", "judge.kind=python", "--set", "judge.function=generation.judges:prefer_shorter",
            "--set", "judge.mode=all"]
    runner = CliRunner()
    r = runner.invoke(cli, ["--workdir", str(web_app.workdir), *sets, "judge", "--judge", "rule", "--limit", "2"])
    assert r.exit_code == 0, r.output
    assert "judge:rule (all): judged 2, labelled 2" in r.output
    assert [lb.annotator for lb in labels(web_app.store)] == ["judge:rule"] * 2
    r = runner.invoke(cli, ["--workdir", str(web_app.workdir), "stats", "--json"])
    assert json.loads(r.output)["judges"]["judge:rule"]["judged"] == 2
    r = runner.invoke(cli, ["--workdir", str(web_app.workdir), "--set", "judge.kind=python", "judge"])
    assert r.exit_code != 0 and "judge.function" in r.output  # a clear message, no traceback
    assert judging.judge_status(web_app)["judge:rule"]["labelled"] == 2
    assert judging.judge_agreement(web_app)["judge:rule"]["labels"] == 2


def judge_splits(store) -> dict[int, int]:
    with store.read() as s:
        return {c.id: c.judge_split for c in s.exec(select(Comparison)).all()}


def test_flips_and_abstains_add_one_to_the_comparisons_judge_split_per_judging(store, seed):
    def rule(_prompt, a, b):  # the shorter wins, the first shown when equally long (a flip), none when empty
        return "abstain" if not a else "a" if len(a) == len(b) else prefer_shorter(_prompt, a, b)

    answers = {0: ("short", "a much longer answer"), 1: ("same", "size"), 2: ("", "")}
    consistent, flipped, abstained = seed(store, 3, texts=lambda i: (f"q {uuid.uuid4().hex}", *answers[i]))
    report = judge_once(store, PythonJudge(rule, name="rule"), mode="all", batch_size=2)
    assert (report.consistent, report.flipped, report.abstained) == (1, 1, 1)
    assert judge_splits(store) == {consistent: 0, flipped: 1, abstained: 1}
    # Another judge splits on the same ones: the counts add up (the abstained one is still open to it).
    judge_once(store, PythonJudge(rule, name="rule-2"), mode="all")
    assert judge_splits(store) == {consistent: 0, flipped: 2, abstained: 2}
