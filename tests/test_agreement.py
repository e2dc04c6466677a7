"""Judge-human agreement: Cohen's kappa against hand-computed cases, per judge and per round, with the both-order
consistency and abstain rates of the judge's runs."""

import pytest

from data.agreement import cohen_kappa, human_majority, judge_agreement, raw_agreement
from data.queue import submit_label
from generation.backend import Sample


def test_kappa_matches_a_hand_computed_case():
    # judge x human: (a,a) x4, (a,b) x2, (b,b) x3, (b,a) x1. p_o = 7/10; judge marginals a .6 b .4, human a .5 b .5,
    # so p_e = .6*.5 + .4*.5 = .5 and kappa = (.7 - .5) / (1 - .5) = .4.
    pairs = [("a", "a")] * 4 + [("a", "b")] * 2 + [("b", "b")] * 3 + [("b", "a")]
    assert raw_agreement(pairs) == pytest.approx(0.7)
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_kappa_with_ties_and_its_edge_cases():
    # (a,a) (b,b) (tie,tie) (a,tie): p_o = 3/4; judge a .5 b .25 tie .25, human a .25 b .25 tie .5,
    # p_e = .125 + .0625 + .125 = .3125; kappa = (.75 - .3125) / .6875 = 7/11.
    assert cohen_kappa([("a", "a"), ("b", "b"), ("tie", "tie"), ("a", "tie")]) == pytest.approx(7 / 11)
    assert cohen_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)
    assert cohen_kappa([("a", "a"), ("b", "b")]) == pytest.approx(1.0)
    assert cohen_kappa([("a", "a"), ("a", "a")]) is None  # one category only: chance agreement is 1
    assert cohen_kappa([]) is None and raw_agreement([]) is None


def test_human_majority_is_strict_and_counts_both_bad_as_tie():
    assert human_majority(["a", "a", "b"]) == "a"
    assert human_majority(["a", "b"]) is None
    assert human_majority(["both_bad", "tie", "a", "skip"]) == "tie"
    assert human_majority(["skip"]) is None


def comparison(store, version, i):
    prompt_id = store.prompts.add([f"agreement prompt {version.name} {i}"]).ids[0]
    return store.prompts.add_samples(prompt_id, version.id, [Sample(f"A{i}", "stop", 1), Sample(f"B{i}", "stop", 1)],
                             [(0, 1)], {}, 3)[0]


def test_agreement_per_judge_and_round_with_run_rates(store):
    v0 = store.versions.add("v0", "/m/v0")
    v1 = store.versions.add("v1", "/m/v1", parent_id=v0.id, round=1)
    # round 0: the judge agrees on 2 of 3; round 1: on 1 of 2 (human both_bad counts as tie).
    cases = [(v0, ["a"], "a"), (v0, ["b", "b", "a"], "b"), (v0, ["a"], "b"), (v1, ["both_bad"], "tie"),
             (v1, ["a"], "b"),
             (v1, ["a", "b"], "a"),  # no human majority: left out
             (v1, ["skip"], "a"),  # skips only: left out
             (v1, [], "a")]  # no human label: left out
    for i, (version, human, judged) in enumerate(cases):
        cid = comparison(store, version, i)
        for k, choice in enumerate(human):
            submit_label(store, f"ann{k}", cid, choice, "ab")
        submit_label(store, "judge:j", cid, judged, "ab", source="judge")
    run = store.judge_runs.start("judge:j", "python", "calibration")
    store.judge_runs.update(run, judged=10, labelled=8, consistent=6, flipped=2, abstained=2)
    got = judge_agreement(store)["judge:j"]
    assert (got["compared"], got["labels"], got["judged"]) == (5, 8, 10)
    assert got["agreement"] == pytest.approx(3 / 5)
    # judge: a, b, b, tie, b; humans: a, b, a, tie, a -> p_o .6; judge a .2 b .6 tie .2, human a .6 b .2 tie .2;
    # p_e = .12 + .12 + .04 = .28; kappa = (.6 - .28) / .72 = 4/9.
    assert got["kappa"] == pytest.approx(4 / 9)
    assert got["by_round"][0] == {"compared": 3, "agreement": pytest.approx(2 / 3), "kappa": pytest.approx(0.4)}
    assert got["by_round"][1]["compared"] == 2 and got["by_round"][1]["agreement"] == pytest.approx(0.5)
    assert got["consistency_rate"] == pytest.approx(6 / 8) and got["abstain_rate"] == pytest.approx(2 / 10)


def test_a_judge_without_human_overlap_is_listed_with_nothing_compared(store):
    v0 = store.versions.add("v0", "/m/v0")
    submit_label(store, "judge:solo", comparison(store, v0, 0), "a", "ab", source="judge")
    got = judge_agreement(store)["judge:solo"]
    assert (got["compared"], got["agreement"], got["kappa"], got["labels"]) == (0, None, None, 1)
    assert got["consistency_rate"] is None and got["abstain_rate"] is None
