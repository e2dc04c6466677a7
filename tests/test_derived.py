"""Rankings, ratings and thumbs resolved into pairs (data/derived.py, through data/pairs.py on a real store):
hand-computed derived pairs for each ranking_pairs setting and the rating gap, thumbs pairs and unpaired rows,
precedence and overlap, held and discarded labels, the filters, and batching."""

import uuid

import pytest
from test_pairs import add_comparison, add_labels

from data import quality
from data.derived import (
    Derivation,
    Vote,
    ranking_merits,
    ranking_pairs,
    rating_merits,
    resolve,
    thumbs_outcome,
)
from data.models import Comparison, ComparisonResponse, Label, Prompt, Response, utcnow
from data.pairs import ResolvedRow, count_resolved, iter_resolved
from data.prompts import normalize_messages


# -- building comparisons and labels by direct inserts --------------------------------------------------------------
def add_kind(store, kind: str, texts, *, overlap: int = 1, prompt_id: int | None = None, version_id=None,
             status: str = "open") -> tuple[int, list[int]]:
    """A comparison of `kind` over one response per text (positions in order) on a new prompt, or on `prompt_id`;
    returns (comparison id, response ids)."""
    with store.write() as s:
        if prompt_id is None:
            p = Prompt(messages=normalize_messages(f"Which is best? {uuid.uuid4().hex[:6]}"),
                       content_hash=uuid.uuid4().hex)
            s.add(p)
            s.flush()
            prompt_id = p.id
        rows = [Response(prompt_id=prompt_id, model_version_id=version_id, text=t) for t in texts]
        s.add_all(rows)
        s.flush()
        b = rows[0] if kind == "thumbs" else rows[1]
        c = Comparison(prompt_id=prompt_id, response_a_id=rows[0].id, response_b_id=b.id, kind=kind,
                       overlap=overlap, status=status, model_version_id=version_id)
        s.add(c)
        s.flush()
        s.add_all([ComparisonResponse(comparison_id=c.id, position=i, response_id=r.id) for i, r in enumerate(rows)])
        return c.id, [r.id for r in rows]


def prompt_of(store, cid: int) -> int:
    with store.read() as s:
        return s.get(Comparison, cid).prompt_id


def add_label(store, cid: int, choice: str, *, annotator: str | None = None, source: str = "human",
              ranking=None, ratings=None) -> int:
    prefix = {"human": "user", "judge": "judge:j", "import": "import", "adjudication": "adjudication:"}[source]
    with store.write() as s:
        row = Label(comparison_id=cid, annotator=annotator or f"{prefix}{uuid.uuid4().hex[:8]}", source=source,
                    choice=choice, ranking=ranking, ratings=ratings)
        s.add(row)
        s.flush()
        return row.id


def rank(store, cid: int, *rankings, **kw) -> None:
    for ranking in rankings:
        add_label(store, cid, "ranked", ranking=list(ranking), **kw)


def rate(store, cid: int, *ratings, **kw) -> None:
    for scores in ratings:
        add_label(store, cid, "rated", ratings=scores, **kw)


def thumbs(store, cid: int, *choices, **kw) -> None:
    for choice in choices:
        add_label(store, cid, choice, **kw)


def rows_of(store, **kw) -> list[ResolvedRow]:
    """iter_resolved's rows, checked against count_resolved with the same filters."""
    rows = list(iter_resolved(store, **kw))
    counted = {k: v for k, v in kw.items() if k not in ("metadata", "batch_size", "ids")}
    assert len(rows) == count_resolved(store, **counted)
    return rows


def pairs_of(rows) -> list[tuple]:
    """(chosen, rejected, outcome, agreement) of each row, in order."""
    return [(r.chosen, r.rejected, r.outcome, pytest.approx(r.agreement)) for r in rows]


# Two annotators rank four responses: [1, 2, 2, 4] and [2, 1, 3, 4]. Mean ranks: p0 1.5, p1 1.5, p2 2.5, p3 4.
RANKINGS = ([1, 2, 2, 4], [2, 1, 3, 4])
TEXTS = ("r0", "r1", "r2", "r3")


def ranked(store, **kw) -> int:
    cid, _ = add_kind(store, "ranking", TEXTS, overlap=2, **kw)
    rank(store, cid, *RANKINGS)
    return cid


# -- rankings ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("how", "want"), [
    # every pair whose mean ranks differ; agreement: of the two rankings, those ordering the pair strictly the same
    # way (p1 over p2: the first ranking ties them, the second agrees: 1/2).
    ("all", [("r0", "r2", 1.0), ("r0", "r3", 1.0), ("r1", "r2", 0.5), ("r1", "r3", 1.0), ("r2", "r3", 1.0)]),
    # the two tied bests (1.5) over each one below them
    ("best_vs_each", [("r0", "r2", 1.0), ("r0", "r3", 1.0), ("r1", "r2", 0.5), ("r1", "r3", 1.0)]),
    ("best_vs_worst", [("r0", "r3", 1.0), ("r1", "r3", 1.0)]),
])
def test_ranking_pairs_for_each_setting_by_mean_rank_with_tied_bests(store, how, want):
    cid = ranked(store)
    rows = rows_of(store, derivation=Derivation(ranking_pairs=how))
    assert [(r.chosen, r.rejected, pytest.approx(r.agreement)) for r in rows] == want
    assert {(r.comparison_id, r.outcome, r.source, r.labels, r.kind) for r in rows} == {(cid, "a", "human", 2,
                                                                                         "ranking")}
    assert all(r.is_pair for r in rows)


@pytest.mark.parametrize(("how", "ties"), [("all", [("r0", "r1", 0.0)]), ("best_vs_each", [("r0", "r1", 0.0)]),
                                           ("best_vs_worst", [])])
def test_ties_among_compared_responses_come_only_with_include_ties(store, how, ties):
    ranked(store)
    rows = rows_of(store, derivation=Derivation(ranking_pairs=how), include_ties=True)
    # the tie of p0 and p1: neither ranking ranks them equal, so agreement 0
    assert [(r.chosen, r.rejected, pytest.approx(r.agreement)) for r in rows if r.outcome == "tie"] == ties
    assert [r for r in rows if r.outcome == "tie"] == [r for r in rows if not r.is_pair]


def test_a_ranking_all_tied_resolves_to_no_pair_and_its_ties(store):
    cid, _ = add_kind(store, "ranking", ("x", "y", "z"))
    rank(store, cid, [1, 1, 1])
    for how in ("all", "best_vs_each", "best_vs_worst"):
        assert rows_of(store, derivation=Derivation(ranking_pairs=how)) == []
        ties = rows_of(store, derivation=Derivation(ranking_pairs=how), include_ties=True)
        assert [(r.chosen, r.rejected, r.outcome, r.agreement) for r in ties] == [
            ("x", "y", "tie", 1.0), ("x", "z", "tie", 1.0), ("y", "z", "tie", 1.0)]


def test_derived_rows_carry_the_response_ids_and_the_store_derivation_is_the_default(store):
    cid, ids = add_kind(store, "ranking", ("p", "q", "s"))
    rank(store, cid, [3, 1, 2])
    rows = rows_of(store)
    assert [(r.chosen_id, r.rejected_id) for r in rows] == [(ids[1], ids[0]), (ids[1], ids[2]), (ids[2], ids[0])]
    store.derivation = Derivation(ranking_pairs="best_vs_worst")
    assert [(r.chosen, r.rejected) for r in rows_of(store)] == [("q", "p")]
    assert len(rows_of(store, derivation=Derivation())) == 3  # asked for explicitly, it wins


def test_a_ranking_that_does_not_fit_its_responses_counts_for_nothing(store):
    cid, _ = add_kind(store, "ranking", ("p", "q", "s"), overlap=2)
    rank(store, cid, [1, 2], [1, 2, 0])  # too short; a rank below 1
    add_label(store, cid, "a")  # a pair's choice on a ranking
    rank(store, cid, [2, 1, 3])
    assert rows_of(store) == []  # one counted label of the two wanted
    rank(store, cid, [1, 2, 3])  # mean ranks p 1.5, q 1.5, s 3
    assert [(r.chosen, r.rejected, r.labels) for r in rows_of(store)] == [("p", "s", 2), ("q", "s", 2)]


# -- ratings ----------------------------------------------------------------------------------------------------------
# Two annotators, three responses: overall (mean of the criteria) [4.5, 3, 1.5] and [3.5, 3.5, 1.5]; averaged
# p0 4.0, p1 3.25, p2 1.5.
RATINGS = ({"helpfulness": [5, 3, 1], "honesty": [4, 3, 2]}, {"helpfulness": [3, 4, 2], "honesty": [4, 3, 1]})


@pytest.mark.parametrize(("gap", "want"), [
    (1.0, [("g0", "g2", "a", 1.0), ("g1", "g2", "a", 1.0), ("g0", "g1", "tie", 0.5)]),  # 0.75 apart: a tie
    (0.75, [("g0", "g1", "a", 0.5), ("g0", "g2", "a", 1.0), ("g1", "g2", "a", 1.0)]),  # exactly the gap: a pair
    (2.6, [("g0", "g1", "tie", 0.5), ("g0", "g2", "tie", 0.0), ("g1", "g2", "tie", 0.0)]),
])
def test_rating_pairs_need_the_overall_score_gap(store, gap, want):
    cid, _ = add_kind(store, "rating", ("g0", "g1", "g2"), overlap=2)
    rate(store, cid, *RATINGS)
    rows = rows_of(store, derivation=Derivation(rating_gap=gap), include_ties=True)
    assert pairs_of(rows) == want
    assert {(r.kind, r.labels) for r in rows} == {("rating", 2)}
    assert [r for r in rows_of(store, derivation=Derivation(rating_gap=gap))] == [r for r in rows if r.is_pair]


def test_a_gap_reached_up_to_rounding_makes_a_pair(store):
    cid, _ = add_kind(store, "rating", ("u", "v"))
    rate(store, cid, {"a": [5, 3], "b": [4, 3], "c": [4, 4]})  # 13/3 - 10/3 is 1 up to floating point
    assert [(r.chosen, r.rejected) for r in rows_of(store, derivation=Derivation(rating_gap=1.0))] == [("u", "v")]


def test_rating_merits_average_the_criteria_present():
    assert rating_merits({"h": [5, 3], "o": [4, None]}, 2) == (4.5, 3.0)
    assert rating_merits({"h": [None, 2]}, 2) == (None, 2.0)
    assert rating_merits({"h": [5, 3, 1]}, 2) is None  # does not fit two responses
    assert rating_merits({"h": [None, None]}, 2) is None and rating_merits({}, 2) is None
    assert rating_merits({"h": [True, 2]}, 2) == (None, 2.0)  # a boolean is no score


def test_ranking_merits_and_pairs_pure():
    assert ranking_merits([1, 3, 1], 3) == (-1.0, -3.0, -1.0)
    assert ranking_merits([1, 3], 3) is None and ranking_merits([1, "2", 3], 3) is None
    assert ranking_merits(None, 2) is None and ranking_merits([0, 1], 2) is None
    assert ranking_pairs([-1.0, -3.0, -1.0], "all") == ([(0, 1), (2, 1)], [(0, 2)])
    assert ranking_pairs([-1.0, -2.0, -3.0], "best_vs_each") == ([(0, 1), (0, 2)], [])
    assert ranking_pairs([-2.0, -1.0, -3.0], "best_vs_worst") == ([(1, 2)], [])


def test_derivation_is_checked():
    for bad in ({"ranking_pairs": "best"}, {"rating_gap": 0}, {"rating_gap": -1.0}, {"rating_gap": float("nan")},
                {"rating_gap": "1"}):
        with pytest.raises(ValueError, match="ranking_pairs|rating_gap"):
            Derivation(**bad)
    assert Derivation() == Derivation("all", 1.0)


def test_precedence_resolves_with_the_first_source_that_has_enough_votes():
    human = [Vote("human", "u1", "ranked", (-1.0, -2.0))]
    judge = [Vote("judge", "judge:j", "ranked", (-2.0, -1.0))]
    assert resolve("ranking", 2, 2, human + judge, ["human", "judge"]).source == "judge"  # humans short of 2
    assert resolve("ranking", 2, 1, human + judge, ["human", "judge"]).source == "human"
    assert resolve("ranking", 2, 2, human, ["human"]) is None
    split = [Vote("human", "u1", "up", None), Vote("human", "u2", "down", None)]
    assert resolve("thumbs", 1, 2, split, ["human"]) is None  # no strict majority
    assert thumbs_outcome(split + [Vote("human", "u3", "down", None)]) == ("down", 2)


# -- thumbs -----------------------------------------------------------------------------------------------------------
def thumbs_on_one_prompt(store, *choices) -> list[int]:
    """One thumbs comparison per choice, all on one prompt, response texts t0, t1, ...; their ids."""
    first, _ = add_kind(store, "thumbs", ("t0",))
    ids, pid = [first], prompt_of(store, first)
    for i in range(1, len(choices)):
        ids.append(add_kind(store, "thumbs", (f"t{i}",), prompt_id=pid)[0])
    for cid, choice in zip(ids, choices, strict=True):
        thumbs(store, cid, choice)
    return ids


def test_thumbs_that_disagree_on_a_prompt_pair_up_under_the_later_comparison(store):
    c0, c1, c2 = thumbs_on_one_prompt(store, "up", "down", "down")
    others = thumbs_on_one_prompt(store, "up", "up")  # agree: no pair
    lone, _ = add_kind(store, "thumbs", ("alone",))
    thumbs(store, lone, "down")
    rows = rows_of(store)
    assert [(r.comparison_id, r.chosen, r.rejected, r.outcome, r.kind) for r in rows] == [
        (c1, "t0", "t1", "a", "thumbs"), (c2, "t0", "t2", "a", "thumbs")]
    assert all(r.is_pair and r.labels == 2 and r.agreement == 1.0 for r in rows)
    assert not set(others) & {r.comparison_id for r in rows}


def test_opposite_thumbs_on_the_same_text_make_no_pair(store):
    up, = thumbs_on_one_prompt(store, "up")
    down, _ = add_kind(store, "thumbs", ("t0 ",), prompt_id=prompt_of(store, up))  # two samples alike, bar a space
    thumbs(store, down, "down")
    assert rows_of(store) == [] and count_resolved(store) == 0
    assert len(rows_of(store, unpaired=True)) == 2  # each thumb still counts on its own


def test_thumbs_unpaired_are_one_row_each_and_make_no_pair(store):
    c0, c1 = thumbs_on_one_prompt(store, "up", "down")
    _, (response,) = add_kind(store, "thumbs", ("solo",))
    rows = rows_of(store, unpaired=True)
    assert [(r.comparison_id, r.chosen, r.rejected, r.outcome, r.is_pair, r.rejected_id) for r in rows] == [
        (c0, "t0", "", "up", False, None), (c1, "t1", "", "down", False, None)]
    assert rows[0].chosen_id != rows[1].chosen_id


def test_a_thumbs_pair_reaches_back_past_its_batch_and_is_made_once(store):
    first, = thumbs_on_one_prompt(store, "down")
    fillers = [add_comparison(store) for _ in range(5)]
    for cid in fillers:
        add_labels(store, cid, "a")
    later, _ = add_kind(store, "thumbs", ("late",), prompt_id=prompt_of(store, first))
    thumbs(store, later, "up")
    every = rows_of(store)
    for batch_size in (1, 2, 3, 1000):
        assert list(iter_resolved(store, batch_size=batch_size)) == every
    assert [(r.comparison_id, r.chosen, r.rejected) for r in every if r.kind == "thumbs"] == [(later, "late", "t0")]
    assert [r.comparison_id for r in iter_resolved(store, ids=[later])] == [later]
    assert list(iter_resolved(store, ids=[first])) == []


def test_a_thumbs_pair_is_as_strong_as_its_weaker_half(store):
    v0 = store.versions.add("v0", "/m/v0", round=0)
    v1 = store.versions.add("v1", "/m/v1", parent_id=v0.id, round=1)
    up, _ = add_kind(store, "thumbs", ("good",), version_id=v1.id)
    down, _ = add_kind(store, "thumbs", ("bad",), prompt_id=prompt_of(store, up), overlap=3, version_id=v0.id)
    thumbs(store, up, "up", source="import")
    thumbs(store, down, "down", "down", "up")
    (row,) = rows_of(store, metadata=True)
    # the later source (import), the lower agreement (2 of 3), every label of both, the earlier round
    assert (row.comparison_id, row.chosen, row.rejected, row.source, row.labels, row.round) == (
        down, "good", "bad", "import", 4, 0)
    assert row.agreement == pytest.approx(2 / 3)
    assert len(row.annotators) == 4 and row.annotators == sorted(row.annotators)
    assert (row.chosen_version, row.rejected_version) == ("v1", "v0")
    assert rows_of(store, min_agreement=0.7) == [] and rows_of(store, since_round=1) == []
    assert rows_of(store, sources=("human",)) == []  # `up` has no human label


# -- who counts -------------------------------------------------------------------------------------------------------
def test_overlap_and_precedence_on_a_ranking(store):
    cid, _ = add_kind(store, "ranking", ("x", "y"), overlap=2)
    rank(store, cid, [1, 2])
    rank(store, cid, [2, 1], source="import")
    (row,) = rows_of(store)
    assert (row.source, row.chosen, row.labels) == ("import", "y", 1)  # humans short of the overlap
    assert rows_of(store, sources=("human",)) == []
    rank(store, cid, [1, 2])
    (row,) = rows_of(store)
    assert (row.source, row.chosen, row.labels) == ("human", "x", 2)
    rank(store, cid, [2, 1], source="judge")
    assert rows_of(store, sources=("judge",))[0].chosen == "y"
    rank(store, cid, [2, 1], source="adjudication")
    assert [(r.source, r.chosen) for r in rows_of(store, sources=("judge",))] == [("adjudication", "y")]


def test_skips_and_discarded_labels_never_count(store):
    cid, _ = add_kind(store, "ranking", ("x", "y"), overlap=2)
    rank(store, cid, [1, 2])
    add_label(store, cid, "skip")
    assert rows_of(store) == []
    discarded = add_label(store, cid, "ranked", ranking=[2, 1])
    with store.write() as s:
        s.get(Label, discarded).discarded_at = utcnow()
    assert rows_of(store) == []
    rank(store, cid, [1, 2])
    assert [(r.chosen, r.labels, r.agreement) for r in rows_of(store)] == [("x", 2, 1.0)]


def test_a_held_annotators_rankings_ratings_and_thumbs_count_only_once_released(store):
    for _ in range(5):  # five wrong gold answers: held back under the default policy
        gold = add_comparison(store)
        quality.mark_gold(store, gold, "a", "op")
        add_label(store, gold, "b", annotator="mallory")
    ranking, _ = add_kind(store, "ranking", ("x", "y"))
    rank(store, ranking, [2, 1], annotator="mallory")
    rating, _ = add_kind(store, "rating", ("x", "y"))
    rate(store, rating, {"h": [1, 5]}, annotator="mallory")
    thumb, _ = add_kind(store, "thumbs", ("x",))
    thumbs(store, thumb, "up", annotator="mallory")
    kinds = {"ranking", "rating", "thumbs"}
    assert not kinds & {r.kind for r in rows_of(store, unpaired=True)}
    quality.release_held(store, "mallory", store.gold_policy, "op")
    assert {r.kind for r in rows_of(store, unpaired=True)} >= kinds


def test_retired_and_discarded_comparisons_and_prompts_resolve_nothing(store):
    retired, _ = add_kind(store, "ranking", ("x", "y"), status="retired")
    gone, _ = add_kind(store, "rating", ("x", "y"))
    dropped, _ = add_kind(store, "thumbs", ("x",))
    rank(store, retired, [1, 2])
    rate(store, gone, {"h": [5, 1]})
    thumbs(store, dropped, "up")
    with store.write() as s:
        s.get(Comparison, gone).discarded_at = utcnow()
        s.get(Prompt, prompt_of(store, dropped)).discarded_at = utcnow()
    assert rows_of(store, unpaired=True) == []


# -- the filters and batching ------------------------------------------------------------------------------------------
def test_since_round_min_agreement_and_metadata_apply_to_derived_rows(store):
    v0 = store.versions.add("v0", "/m/v0", round=0)
    v1 = store.versions.add("v1", "/m/v1", parent_id=v0.id, round=1)
    old = ranked(store, version_id=v0.id)
    new = ranked(store, version_id=v1.id)
    assert {r.comparison_id for r in rows_of(store, since_round=1)} == {new}
    assert {r.comparison_id for r in rows_of(store, since_round=0)} == {old, new}
    assert len(rows_of(store, min_agreement=0.6)) == 2 * 4  # the half-agreed pair of each is left out
    row = rows_of(store, metadata=True, since_round=1)[0]
    assert (row.chosen_version, row.rejected_version, row.round) == ("v1", "v1", 1)
    assert len(row.annotators) == 2 and all(a.startswith("user") for a in row.annotators)
    plain = rows_of(store)[0]
    assert (plain.annotators, plain.chosen_version, plain.round) == (None, None, None)


def test_mixed_kinds_stream_in_id_order_whatever_the_batch_size(store):
    made, shared = [], None
    for i in range(12):
        if i % 3 == 0:
            cid = add_comparison(store, texts=(f"a{i}", f"b{i}"))
            add_labels(store, cid, "ab"[i % 2])
        elif i % 3 == 1:
            cid, _ = add_kind(store, "ranking", (f"x{i}", f"y{i}", f"z{i}"))
            rank(store, cid, [2, 1, 3])
        else:  # thumbs on one prompt, up and down in turn
            cid, _ = add_kind(store, "thumbs", (f"t{i}",), prompt_id=shared)
            shared = prompt_of(store, cid)
            thumbs(store, cid, "up" if i % 6 == 2 else "down")
        made.append(cid)
    every = rows_of(store, metadata=True, include_ties=True)
    # a row per pair, three per ranking ([2, 1, 3]: y over x, y over z, x over z), and each thumbs pair under the
    # later of its two: t5 under t2 (1), t8 over t5 (1), t2 and t8 over t11 (2)
    per_id = [sum(r.comparison_id == cid for r in every) for cid in made]
    assert per_id == [1, 3, 0, 1, 3, 1, 1, 3, 1, 1, 3, 2]
    assert [r.comparison_id for r in every] == sorted(r.comparison_id for r in every)
    for batch_size in (1, 2, 5):
        assert list(iter_resolved(store, metadata=True, include_ties=True, batch_size=batch_size)) == every
    asked = {made[1], made[5], made[6], made[11]}
    for batch_size in (1, 3, 1000):
        assert list(iter_resolved(store, ids=asked, batch_size=batch_size)) == [
            r for r in rows_of(store) if r.comparison_id in asked]


# -- pair-only consumers: a judge, margins, adjudication and gold never see another kind -----------------------------
def a_pair_and_one_of_each_kind(store) -> tuple[int, list[int]]:
    pair = add_comparison(store)
    others = [add_kind(store, "ranking", ("x", "y", "z"))[0], add_kind(store, "rating", ("x", "y"))[0],
              add_kind(store, "thumbs", ("x",))[0]]
    return pair, others


def test_a_judge_is_handed_pairs_only(store):
    pair, _ = a_pair_and_one_of_each_kind(store)
    for mode in ("all", "unseen"):
        assert [row[0] for row in store.judge_runs.to_judge("judge:j", mode, 10)] == [pair]
        assert store.judge_runs.left_counts("judge:j", mode)["candidates"] == 1


def test_margins_are_stale_for_pairs_only(store):
    from data.margins import stale_margins

    pair, _ = a_pair_and_one_of_each_kind(store)
    version = store.versions.add("v0", "/m/v0")
    assert [row[0] for row in stale_margins(store, version.id, 10)] == [pair]


def test_adjudication_neither_queues_nor_decides_other_kinds(store):
    from data import adjudication

    pair, others = a_pair_and_one_of_each_kind(store)
    for cid in (pair, *others):  # stray pair choices that disagree, on every kind
        add_label(store, cid, "a")
        add_label(store, cid, "b")
    assert [e.comparison_id for e in adjudication.queue(store)] == [pair]
    assert adjudication.queue_counts(store)["total"] == 1
    with pytest.raises(adjudication.AdjudicationRefused, match="ranking comparison"):
        adjudication.decide(store, others[0], "a", "rita")


def test_only_a_pair_resolves_as_a_gold_question(store):
    pair, (ranking, *_) = a_pair_and_one_of_each_kind(store)
    with store.write() as s:
        for cid in (pair, ranking):
            s.get(Comparison, cid).gold_choice = "a"
    assert [(r.comparison_id, r.source) for r in rows_of(store)] == [(pair, "gold")]
