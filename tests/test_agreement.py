"""Agreement: Cohen's kappa and Krippendorff's alpha against published worked examples and hand-computed cases;
judge-human agreement per judge and per round with the judge's run rates; between people, majority agreement, the
pairwise kappas and alpha per round, with gold questions, skips, discarded labels and non-people left out; on
rankings and ratings, Kendall's tau-b between people, and no ranking, rating or thumbs label in the pair numbers."""

import pytest
from test_derived import add_kind, add_label

from data.agreement import (
    annotator_agreement,
    cohen_kappa,
    human_majority,
    judge_agreement,
    kendall_tau_b,
    krippendorff_alpha,
    people_agreement,
    rank_agreement,
    raw_agreement,
    strict_majority,
)
from data.models import Comparison, Label, utcnow
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


def test_kappa_reproduces_the_wikipedia_worked_example():
    # Wikipedia, "Cohen's kappa", simple example: 50 proposals, both yes 20, A yes B no 5, A no B yes 10, both no 15:
    # p_o = 35/50 = .7; A yes .5, B yes .6, so p_e = .5*.6 + .5*.4 = .5 and kappa = .4.
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_alpha_reproduces_krippendorffs_published_nominal_example():
    # K. Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), C. nominal data, any number of observers,
    # missing values: 4 observers, 12 units, '.' missing. Unit 12 has one value only and is not pairable; the
    # pairable values n = 40 are 1: 9, 2: 13, 3: 10, 4: 5, 5: 3 and the coincidences off the diagonal sum to 8.
    observers = ["1 2 3 3 2 1 4 1 2 . . .",
                 "1 2 3 3 2 2 4 1 2 5 . 3",
                 ". 3 3 3 2 3 4 2 2 5 1 .",
                 "1 2 3 3 2 4 4 1 2 5 1 ."]
    units = [[v for v in unit if v != "."] for unit in zip(*(o.split() for o in observers), strict=True)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    expected = 40 * 40 - (9 * 9 + 13 * 13 + 10 * 10 + 5 * 5 + 3 * 3)
    assert krippendorff_alpha(units) == pytest.approx(1 - (40 - 1) * 8 / expected)


def test_alpha_on_hand_computed_cases_and_where_it_is_undefined():
    # [a,a] [a,b]: n = 4 (a 3, b 1); observed disagreement 2 (one a-b pair each way, m - 1 = 1); expected
    # n^2 - sum n_c^2 = 16 - 10 = 6: alpha = 1 - 3 * 2 / 6 = 0.
    assert krippendorff_alpha([["a", "a"], ["a", "b"]]) == pytest.approx(0.0)
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["c"]]) == pytest.approx(0.0)  # a lone value drops out
    assert krippendorff_alpha([["a", "a"], ["b", "b"], ["tie", "tie"]]) == pytest.approx(1.0)
    # a tie and a both-bad are two answers: [tie, both_bad] [a, a] disagree once: n 4, observed 2, expected 16 - 6.
    assert krippendorff_alpha([["tie", "both_bad"], ["a", "a"]]) == pytest.approx(1 - 3 * 2 / 10)
    assert krippendorff_alpha([["a", "a"], ["a"]]) is None  # one category only: no expected disagreement
    assert krippendorff_alpha([["a"], []]) is None and krippendorff_alpha([]) is None


def test_human_majority_is_strict_and_counts_both_bad_as_tie():
    assert human_majority(["a", "a", "b"]) == "a"
    assert human_majority(["a", "b"]) is None
    assert human_majority(["both_bad", "tie", "a", "skip"]) == "tie"
    assert human_majority(["skip"]) is None
    assert strict_majority(["tie", "both_bad", "both_bad"]) == "both_bad" and strict_majority([]) is None


def comparison(store, version, i, overlap=3):
    prompt_id = store.prompts.add([f"agreement prompt {version.name} {i}"]).ids[0]
    return store.prompts.add_samples(prompt_id, version.id, [Sample(f"A{i}", "stop", 1), Sample(f"B{i}", "stop", 1)],
                                     [(0, 1)], {}, overlap)[0]


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


def gold(store, cid, answer):
    with store.write() as s:
        row = s.get(Comparison, cid)
        row.gold_choice = answer
        s.add(row)


def discard(store, label_id):
    with store.write() as s:
        row = s.get(Label, label_id)
        row.discarded_at = utcnow()
        s.add(row)


def labelled_by_three(store):
    """c1-c3 in round 0, c4-c6 in round 1, c7 a gold question; plus what never counts (a skip, a discarded label,
    a judge and an import)."""
    v0 = store.versions.add("v0", "/m/v0")
    v1 = store.versions.add("v1", "/m/v1", parent_id=v0.id, round=1)
    cases = [(v0, {"alice": "a", "bob": "a", "carol": "a"}), (v0, {"alice": "a", "bob": "b", "carol": "b"}),
             (v0, {"alice": "tie", "bob": "both_bad", "carol": "both_bad"}),
             (v1, {"alice": "b", "bob": "b"}), (v1, {"alice": "a", "carol": "b"}), (v1, {"alice": "a"}),
             (v1, {"alice": "a", "bob": "b", "carol": "b"})]
    cids = []
    for i, (version, choices) in enumerate(cases):
        cids.append(comparison(store, version, i, overlap=5))
        for name, choice in choices.items():
            submit_label(store, name, cids[-1], choice, "ab")
    gold(store, cids[6], "a")
    submit_label(store, "dave", cids[0], "skip", "ab")
    discard(store, submit_label(store, "erin", cids[1], "a", "ab").label_id)
    submit_label(store, "judge:j", cids[2], "tie", "ab", source="judge")
    submit_label(store, "import", cids[3], "a", "ab", source="import")
    return cids


def test_majority_agreement_leaves_each_person_out_and_needs_a_strict_majority(store):
    labelled_by_three(store)
    got = annotator_agreement(store)
    assert set(got) == {"alice", "bob", "carol"}  # no skips, discarded labels, judges or imports
    alice, bob, carol = got["alice"], got["bob"], got["carol"]
    # alice against the others' majority: c1 a=a yes, c2 a vs b no, c3 tie vs both_bad no, c4 b=b yes, c5 a vs b no.
    # c6 nobody else labelled; c7 is gold.
    assert (alice["comparisons"], alice["majority_compared"], alice["majority_agreed"]) == (5, 5, 2)
    assert alice["majority_agreement"] == pytest.approx(2 / 5)
    assert alice["by_round"] == {0: {"compared": 3, "agreed": 1, "agreement": pytest.approx(1 / 3)},
                                 1: {"compared": 2, "agreed": 1, "agreement": pytest.approx(1 / 2)}}
    # bob: c2 (others a, b) and c3 (others tie, both_bad) have no strict majority and are not counted.
    assert (bob["majority_compared"], bob["majority_agreed"], bob["majority_agreement"]) == (2, 2, 1.0)
    assert (carol["majority_compared"], carol["majority_agreed"]) == (2, 1)  # c1 yes, c5 (alice's a) no
    assert (alice["pairs"], alice["agreed"]) == (8, 3)


def test_kappa_with_each_other_person_on_a_hand_computed_store(store):
    labelled_by_three(store)
    got = annotator_agreement(store)
    # alice-bob on c1-c4: (a,a) (a,b) (tie,both_bad) (b,b): p_o 1/2; alice a 2 tie 1 b 1, bob a 1 b 2 both_bad 1:
    # p_e = (2*1 + 1*2) / 16 = 1/4, kappa = (1/2 - 1/4) / (3/4) = 1/3.
    assert got["alice"]["kappas"]["bob"] == {"compared": 4, "agreement": 0.5, "kappa": pytest.approx(1 / 3)}
    assert got["bob"]["kappas"]["alice"] == got["alice"]["kappas"]["bob"]
    # alice-carol on c1, c2, c3, c5: (a,a) (a,b) (tie,both_bad) (a,b): p_o 1/4; alice a 3 tie 1, carol a 1 b 2
    # both_bad 1: p_e = 3/16, kappa = (4/16 - 3/16) / (13/16) = 1/13.
    assert got["alice"]["kappas"]["carol"] == {"compared": 4, "agreement": 0.25, "kappa": pytest.approx(1 / 13)}
    # bob-carol on c1-c3 agree throughout, both_bad included.
    assert got["carol"]["kappas"]["bob"] == {"compared": 3, "agreement": 1.0, "kappa": pytest.approx(1.0)}
    assert set(got["carol"]["kappas"]) == {"alice", "bob"}


def test_alpha_overall_per_round_and_without_each_person(store):
    labelled_by_three(store)
    got = people_agreement(store)
    # units c1 [a,a,a] c2 [a,b,b] c3 [tie,bb,bb] c4 [b,b] c5 [a,b]: observed 0 + 4/2 + 4/2 + 0 + 2/1 = 6;
    # n 13 (a 5, b 5, tie 1, both_bad 2): expected 169 - 55 = 114; alpha = 1 - 12 * 6 / 114 = 7/19.
    assert (got["units"], got["values"]) == (5, 13)
    assert got["alpha"] == pytest.approx(7 / 19)
    # round 0, c1-c3: observed 4, n 9 (a 4, b 2, tie 1, both_bad 2), expected 81 - 25 = 56: 1 - 8 * 4 / 56 = 3/7.
    # round 1, c4-c5: observed 2, n 4 (a 1, b 3), expected 6: 1 - 3 * 2 / 6 = 0.
    assert got["by_round"] == {0: {"alpha": pytest.approx(3 / 7), "units": 3, "values": 9},
                               1: {"alpha": pytest.approx(0.0), "units": 2, "values": 4}}
    # without alice, bob and carol agree wherever both labelled (c1-c3): alice lowers the agreement.
    assert got["annotators"]["alice"]["alpha_without"] == pytest.approx(1.0)
    # without bob: c1 [a,a] c2 [a,b] c3 [tie,bb] c5 [a,b]: observed 6, n 8, expected 64 - 22 = 42: 1 - 7 * 6 / 42.
    assert got["annotators"]["bob"]["alpha_without"] == pytest.approx(0.0)


def test_gold_questions_never_count_as_agreement(store):
    v0 = store.versions.add("v0", "/m/v0")
    cid = comparison(store, v0, 0)
    for name, choice in (("alice", "a"), ("bob", "a"), ("judge:j", "a")):
        submit_label(store, name, cid, choice, "ab", source="judge" if name.startswith("judge:") else "human")
    assert people_agreement(store)["units"] == 1 and judge_agreement(store)["judge:j"]["compared"] == 1
    gold(store, cid, "a")
    got = people_agreement(store)
    assert (got["alpha"], got["units"], got["by_round"], got["annotators"]) == (None, 0, {}, {})
    assert "judge:j" not in judge_agreement(store)  # its one label was on the gold question


# -- rankings and ratings ----------------------------------------------------------------------------------------------
def test_tau_b_on_hand_computed_orders_with_ties():
    # [1,2,2,3] vs [1,1,2,3]: of 6 pairs, 4 concordant, none discordant, one tied in each: 4 / sqrt(5 * 5) = 0.8.
    assert kendall_tau_b([1, 2, 2, 3], [1, 1, 2, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 2, 2, 3], [3, 3, 2, 1]) == pytest.approx(-0.8)
    assert kendall_tau_b([1, 1, 2, 3], [3, 3, 2, 1]) == pytest.approx(-1.0)  # the tie is shared: not counted
    # [1,2,3] vs [2,1,3]: one discordant, two concordant pairs, no ties: 1/3.
    assert kendall_tau_b([1, 2, 3], [2, 1, 3]) == pytest.approx(1 / 3)
    assert kendall_tau_b([5.0, None, 1.0], [4.0, 3.0, 2.0]) == pytest.approx(1.0)  # unscored items drop out
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None and kendall_tau_b([1], [1]) is None


def ranked_by_people(store):
    """c1 (round 0): alice [1,2,2,3], bob [1,1,2,3], carol [3,3,2,1]; c2 (round 1): alice and bob [1,2,3]; c3 alice
    alone; c4 alice all tied, bob [1,2,3]; plus what never counts (a skip, a discarded ranking, a judge's)."""
    v0 = store.versions.get("v0") or store.versions.add("v0", "/m/v0")
    v1 = store.versions.get("v1") or store.versions.add("v1", "/m/v1", parent_id=v0.id, round=1)
    cases = [(v0, 4, {"alice": [1, 2, 2, 3], "bob": [1, 1, 2, 3], "carol": [3, 3, 2, 1]}),
             (v1, 3, {"alice": [1, 2, 3], "bob": [1, 2, 3]}), (v0, 3, {"alice": [2, 1, 3]}),
             (v0, 3, {"alice": [1, 1, 1], "bob": [1, 2, 3]})]
    cids = []
    for version, k, rankings in cases:
        cids.append(add_kind(store, "ranking", [f"r{i}" for i in range(k)], version_id=version.id, overlap=5)[0])
        for name, ranking in rankings.items():
            add_label(store, cids[-1], "ranked", annotator=name, ranking=ranking)
    add_label(store, cids[1], "skip", annotator="dave")
    discard(store, add_label(store, cids[1], "ranked", annotator="erin", ranking=[3, 2, 1]))
    add_label(store, cids[1], "ranked", annotator="judge:j", source="judge", ranking=[3, 2, 1])
    return cids


def test_rank_agreement_averages_tau_b_over_comparisons_rounds_and_people(store):
    ranked_by_people(store)
    got = rank_agreement(store)
    # c1: alice-bob 0.8, alice-carol -0.8, bob-carol -1: mean -1/3; c2: 1; c4 undefined (alice ties all).
    assert (got["comparisons"], got["orders"]) == (3, 7)
    assert got["tau_b"] == pytest.approx((-1 / 3 + 1) / 2)
    assert got["by_round"] == {0: {"tau_b": pytest.approx(-1 / 3), "comparisons": 1},
                               1: {"tau_b": pytest.approx(1.0), "comparisons": 1}}
    alice = got["annotators"]["alice"]
    assert alice["comparisons"] == 3 and alice["tau_b"] == pytest.approx((0.8 + 1 - 0.8) / 3)
    assert alice["with"] == {"bob": {"compared": 3, "tau_b": pytest.approx(0.9)},
                             "carol": {"compared": 1, "tau_b": pytest.approx(-0.8)}}
    assert got["annotators"]["carol"]["with"]["bob"]["tau_b"] == pytest.approx(-1.0)
    assert set(got["annotators"]) == {"alice", "bob", "carol"}  # no skips, discarded labels or judges
    assert people_agreement(store)["rankings"] == got


def test_rank_agreement_on_ratings_orders_by_overall_score(store):
    cid, _ = add_kind(store, "rating", ("x", "y", "z"))
    add_label(store, cid, "rated", annotator="alice", ratings={"h": [5, 3, 1]})
    add_label(store, cid, "rated", annotator="bob", ratings={"h": [4, 4, 1], "o": [4, 2, 2]})  # 4, 3, 1.5
    add_label(store, cid, "rated", annotator="carol", ratings={"h": [1, 3, 5]})
    got = people_agreement(store)["ratings"]
    # alice-bob 1, alice-carol -1, bob-carol -1
    assert (got["comparisons"], got["tau_b"]) == (1, pytest.approx(-1 / 3))
    assert people_agreement(store)["rankings"]["comparisons"] == 0
    with pytest.raises(ValueError, match="ranking and rating"):
        rank_agreement(store, "thumbs")


def test_pair_agreement_never_counts_ranking_rating_or_thumbs_labels(store):
    cids = labelled_by_three(store)
    before = people_agreement(store)
    ranked_by_people(store)
    rating, _ = add_kind(store, "rating", ("x", "y"))
    thumb, _ = add_kind(store, "thumbs", ("x",))
    for name in ("alice", "bob", "carol"):
        add_label(store, rating, "rated", annotator=name, ratings={"h": [5, 1]})
        add_label(store, thumb, "up", annotator=name)
    add_label(store, cids[5], "up", annotator="bob")  # a stray thumb on a pair: no answer to compare
    add_label(store, thumb, "a", annotator="judge:j", source="judge")  # nor a judge's 'a' on a thumbs comparison
    after = people_agreement(store)
    assert {k: after[k] for k in ("alpha", "units", "values", "by_round", "annotators")} == \
        {k: before[k] for k in ("alpha", "units", "values", "by_round", "annotators")}
    assert after["alpha"] == pytest.approx(7 / 19)
    judge = judge_agreement(store)["judge:j"]
    assert (judge["compared"], judge["labels"]) == (1, 1)  # its tie on c3 only
