"""Resolution of labels into pairs (data/pairs.py) on a real SQLite store."""

import json
import uuid

import pytest

from data.models import Comparison, Label, Prompt, Response
from data.pairs import ResolvedRow, count_resolved, iter_resolved
from data.prompts import normalize_messages

ALL = ("human", "import", "judge")


def add_comparison(store, *, overlap: int = 1, status: str = "open", version_id: int | None = None,
                   prompt="Which is better?", texts=("answer A", "answer B"),
                   response_versions: tuple[int | None, int | None] | None = None) -> int:
    """One prompt, two responses and a comparison of them; returns the comparison id."""
    ra_version, rb_version = response_versions or (version_id, version_id)
    with store.write() as s:
        p = Prompt(messages=normalize_messages(prompt), content_hash=uuid.uuid4().hex)
        s.add(p)
        s.flush()
        ra = Response(prompt_id=p.id, model_version_id=ra_version, text=texts[0])
        rb = Response(prompt_id=p.id, model_version_id=rb_version, text=texts[1])
        s.add_all([ra, rb])
        s.flush()
        c = Comparison(prompt_id=p.id, response_a_id=ra.id, response_b_id=rb.id, model_version_id=version_id,
                       overlap=overlap, status=status)
        s.add(c)
        s.flush()
        return c.id


def add_labels(store, cid: int, *choices: str, source: str = "human") -> None:
    """One label per choice, each from its own annotator of `source`."""
    prefix = {"human": "user", "judge": "judge:j", "import": "import"}[source]
    with store.write() as s:
        for choice in choices:
            s.add(Label(comparison_id=cid, annotator=f"{prefix}{uuid.uuid4().hex[:8]}", source=source, choice=choice))


def resolved(store, **kw) -> dict[int, ResolvedRow]:
    rows = list(iter_resolved(store, **kw))
    assert len(rows) == count_resolved(store, **{k: v for k, v in kw.items() if k not in ("metadata", "batch_size")})
    return {r.comparison_id: r for r in rows}


def test_overlap_three_with_two_one_majority_resolves(store):
    cid = add_comparison(store, overlap=3)
    add_labels(store, cid, "a", "b", "a")
    row = resolved(store)[cid]
    assert (row.outcome, row.source, row.labels) == ("a", "human", 3)
    assert row.agreement == pytest.approx(2 / 3)
    assert (row.chosen, row.rejected) == ("answer A", "answer B")
    assert row.is_pair


def test_b_majority_makes_response_b_chosen(store):
    cid = add_comparison(store)
    add_labels(store, cid, "b")
    row = resolved(store)[cid]
    assert (row.outcome, row.chosen, row.rejected, row.agreement) == ("b", "answer B", "answer A", 1.0)


def test_prompt_json_is_the_stored_text(store):
    cid = add_comparison(store, prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    add_labels(store, cid, "a")
    row = resolved(store)[cid]
    assert isinstance(row.prompt_json, str)
    assert json.loads(row.prompt_json) == [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Hi"}]


def test_one_one_one_has_no_majority(store):
    cid = add_comparison(store, overlap=3)
    add_labels(store, cid, "a", "b", "tie")
    assert resolved(store, include_ties=True) == {}


def test_two_two_split_has_no_majority(store):
    cid = add_comparison(store, overlap=4)
    add_labels(store, cid, "a", "a", "b", "b")
    assert resolved(store, include_ties=True) == {}


def test_below_overlap_is_not_resolved(store):
    cid = add_comparison(store, overlap=3)
    add_labels(store, cid, "a", "a")
    assert resolved(store) == {}
    add_labels(store, cid, "a")
    assert resolved(store)[cid].labels == 3


def test_skip_is_not_counted(store):
    cid = add_comparison(store, overlap=2)
    add_labels(store, cid, "a", "skip", "skip")
    assert resolved(store) == {}  # one counted label, two wanted
    add_labels(store, cid, "b", "a")
    row = resolved(store)[cid]
    assert (row.outcome, row.labels) == ("a", 3)
    assert row.agreement == pytest.approx(2 / 3)  # skips are not in the denominator either


def test_retired_is_excluded_open_and_done_are_not(store):
    ids = {status: add_comparison(store, status=status) for status in ("open", "done", "retired")}
    for cid in ids.values():
        add_labels(store, cid, "a")
    assert set(resolved(store)) == {ids["open"], ids["done"]}


@pytest.mark.parametrize("outcome", ["tie", "both_bad"])
def test_tie_like_majority_only_with_include_ties_and_never_as_a_pair(store, outcome):
    cid = add_comparison(store, overlap=3)
    add_labels(store, cid, outcome, outcome, "a")
    assert resolved(store) == {}
    row = resolved(store, include_ties=True)[cid]
    assert (row.outcome, row.is_pair, row.agreement) == (outcome, False, pytest.approx(2 / 3))
    assert (row.chosen, row.rejected) == ("answer A", "answer B")  # response A / B, in order


def test_human_takes_precedence_over_judge(store):
    cid = add_comparison(store)
    add_labels(store, cid, "a")
    add_labels(store, cid, "b", source="judge")
    assert resolved(store, sources=ALL)[cid].source == "human"
    assert resolved(store, sources=ALL)[cid].outcome == "a"
    row = resolved(store, sources=("judge",))[cid]
    assert (row.source, row.outcome, row.labels) == ("judge", "b", 1)


def test_judge_speaks_when_humans_have_not_resolved(store):
    cid = add_comparison(store, overlap=3)
    add_labels(store, cid, "a")
    add_labels(store, cid, "b", "b", "a", source="judge")
    row = resolved(store, sources=("human", "judge"))[cid]
    assert (row.source, row.outcome, row.labels) == ("judge", "b", 3)
    assert resolved(store) == {}  # judges are not allowed by default


def test_import_takes_precedence_over_judge(store):
    cid = add_comparison(store)
    add_labels(store, cid, "b", source="import")
    add_labels(store, cid, "a", source="judge")
    row = resolved(store, sources=("judge", "import"))[cid]
    assert (row.source, row.outcome) == ("import", "b")


def test_a_human_tie_is_not_overruled_by_a_judge(store):
    cid = add_comparison(store)
    add_labels(store, cid, "tie")
    add_labels(store, cid, "a", source="judge")
    assert resolved(store, sources=ALL) == {}
    assert resolved(store, sources=ALL, include_ties=True)[cid].outcome == "tie"


def test_source_filter(store):
    human, imported, judged = (add_comparison(store) for _ in range(3))
    add_labels(store, human, "a")
    add_labels(store, imported, "a", source="import")
    add_labels(store, judged, "a", source="judge")
    assert set(resolved(store)) == {human, imported}
    assert set(resolved(store, sources=("human",))) == {human}
    assert set(resolved(store, sources="import")) == {imported}
    assert set(resolved(store, sources=ALL)) == {human, imported, judged}


def test_since_round(store):
    v0 = store.versions.add("v0", "/m/v0", round=0)
    v1 = store.versions.add("v1", "/m/v1", parent_id=v0.id, round=1)
    v2 = store.versions.add("v2", "/m/v2", parent_id=v1.id, round=2)
    ids = [add_comparison(store, version_id=v.id) for v in (v0, v1, v2)]
    imported = add_comparison(store)
    for cid in [*ids, imported]:
        add_labels(store, cid, "a")
    assert set(resolved(store, since_round=0)) == {*ids, imported}
    assert set(resolved(store, since_round=1)) == set(ids[1:])
    assert set(resolved(store, since_round=2)) == {ids[2]}
    assert resolved(store, since_round=3) == {}


def test_min_agreement(store):
    split = add_comparison(store, overlap=3)
    add_labels(store, split, "a", "a", "b")
    unanimous = add_comparison(store, overlap=3)
    add_labels(store, unanimous, "b", "b", "b")
    assert set(resolved(store, min_agreement=0.6)) == {split, unanimous}
    assert set(resolved(store, min_agreement=0.7)) == {unanimous}
    assert set(resolved(store, min_agreement=1)) == {unanimous}


def test_metadata(store):
    v0 = store.versions.add("v0", "/m/v0", round=0)
    v1 = store.versions.add("v1", "/m/v1", parent_id=v0.id, round=1)
    cid = add_comparison(store, overlap=3, version_id=v1.id, response_versions=(v0.id, v1.id))
    add_labels(store, cid, "b", "b", "a")
    add_labels(store, cid, "a", source="judge")  # counted for its own source only
    add_labels(store, cid, "skip")  # not counted, so not an annotator of the pair
    imported = add_comparison(store)
    add_labels(store, imported, "a", source="import")

    rows = resolved(store, metadata=True)
    row = rows[cid]
    assert len(row.annotators) == 3 and all(a.startswith("user") for a in row.annotators)
    assert row.annotators == sorted(row.annotators)
    assert (row.chosen_version, row.rejected_version, row.round) == ("v1", "v0", 1)
    other = rows[imported]
    assert (other.annotators, other.chosen_version, other.rejected_version, other.round) == \
        ([other.annotators[0]], None, None, 0)
    assert other.annotators[0].startswith("import")
    plain = resolved(store)[cid]
    assert (plain.annotators, plain.chosen_version, plain.round) == (None, None, None)


def test_rows_name_their_kind_and_the_chosen_and_rejected_response_ids(store):
    ids = {choice: add_comparison(store) for choice in ("a", "b", "tie")}
    for choice, cid in ids.items():
        add_labels(store, cid, choice)
    rows = resolved(store, include_ties=True, metadata=True)
    with store.read() as s:
        a_b = {cid: (s.get(Comparison, cid).response_a_id, s.get(Comparison, cid).response_b_id)
               for cid in ids.values()}
    got = {choice: (rows[cid].kind, rows[cid].chosen_id, rows[cid].rejected_id) for choice, cid in ids.items()}
    assert got == {"a": ("pair", *a_b[ids["a"]]), "b": ("pair", *reversed(a_b[ids["b"]])),
                   "tie": ("pair", *a_b[ids["tie"]])}  # a tie: A then B, as its texts
    assert (rows[ids["b"]].chosen, rows[ids["b"]].rejected) == ("answer B", "answer A")


def test_streams_in_id_order_across_batches_with_gaps(store):
    ids = [add_comparison(store, texts=(f"a{i}", f"b{i}")) for i in range(25)]
    for i, cid in enumerate(ids):
        if i % 4 != 3:  # every fourth stays unlabelled: gaps inside and between batches
            add_labels(store, cid, "ab"[i % 2])
    rows = list(iter_resolved(store, batch_size=3, metadata=True))
    want = [cid for i, cid in enumerate(ids) if i % 4 != 3]
    assert [r.comparison_id for r in rows] == want
    assert [r.chosen for r in rows] == [f"{'ab'[i % 2]}{i}" for i in range(25) if i % 4 != 3]
    assert rows == list(iter_resolved(store, batch_size=1000, metadata=True))


def test_only_the_asked_ids_are_resolved_whatever_the_batch_size(store):
    ids = [add_comparison(store, texts=(f"a{i}", f"b{i}")) for i in range(30)]
    for i, cid in enumerate(ids):
        if i % 5 != 4:
            add_labels(store, cid, "ab"[i % 2])
    every = list(iter_resolved(store, metadata=True))
    asked = {ids[0], ids[2], ids[4], ids[13], ids[14], ids[28], 10**9}  # two unresolved, one that does not exist
    for batch_size in (1, 3, 1000):
        rows = list(iter_resolved(store, metadata=True, batch_size=batch_size, ids=asked))
        assert rows == [r for r in every if r.comparison_id in asked]
    assert [r.comparison_id for r in rows] == [ids[0], ids[2], ids[13], ids[28]]
    assert list(iter_resolved(store, ids=[])) == []


def test_empty_store(store):
    assert list(iter_resolved(store)) == []
    assert count_resolved(store) == 0


def test_bad_arguments(store):
    with pytest.raises(ValueError, match="allowed: adjudication, human, import, judge"):
        list(iter_resolved(store, sources=("humans",)))
    with pytest.raises(ValueError, match="allowed"):
        count_resolved(store, sources=())
    with pytest.raises(ValueError, match="min_agreement"):
        list(iter_resolved(store, min_agreement=1.5))
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_resolved(store, batch_size=0))
