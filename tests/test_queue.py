"""The label queue: leases, exactly `overlap` labels per comparison, idempotent submits, edits, and all of it
holding under 16 threads and 4 processes on one database (SQLite and PostgreSQL)."""

import math
import multiprocessing
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from conftest import make_kind_comparison  # noqa: F401  (other test modules import it from here too)
from sqlalchemy import update
from sqlmodel import select

from data.edits import add_edited_response
from data.models import Comparison, Label, Lease, Response, utcnow
from data.queue import (
    ComparisonUnavailable,
    Given,
    Handing,
    LabelConflict,
    NotHanded,
    choice_from_side,
    expire_leases,
    next_comparison,
    queue_counts,
    release_lease,
    submit_and_next,
    submit_label,
)
from data.store import Store
from generation.backend import Sample

LEASE = 60


def make_comparisons(store: Store, n: int, overlap: int = 1, priority: int = 0) -> list[int]:
    """n open comparisons, each of two fresh responses ('A<i>' and 'B<i>') to its own prompt."""
    version = store.versions.get("v0") or store.versions.add("v0", "/models/v0")
    tag = uuid.uuid4().hex[:8]
    ids = []
    for i, prompt_id in enumerate(store.prompts.add([f"prompt {tag} {i}" for i in range(n)]).ids):
        samples = [Sample(f"A{i}", "stop", 2), Sample(f"B{i}", "stop", 2)]
        ids += store.prompts.add_samples(prompt_id, version.id, samples, [(0, 1)], {}, overlap)
    if priority:
        with store.write() as s:
            s.exec(update(Comparison).where(Comparison.id.in_(ids)).values(priority=priority))
    return ids


def set_columns(store: Store, ids, **values) -> None:
    with store.write() as s:
        s.exec(update(Comparison).where(Comparison.id.in_(ids)).values(**values))


def labels_of(store: Store, comparison_id: int) -> list[Label]:
    with store.read() as s:
        return list(s.exec(select(Label).where(Label.comparison_id == comparison_id).order_by(Label.id)).all())


def status_of(store: Store, comparison_id: int) -> str:
    with store.read() as s:
        return s.get(Comparison, comparison_id).status


def leases(store: Store) -> list[Lease]:
    with store.read() as s:
        return list(s.exec(select(Lease)).all())


def age_all_leases(store: Store) -> None:
    """Make every lease expired, as if its annotator walked away long ago."""
    with store.write() as s:
        s.exec(update(Lease).values(expires_at=utcnow() - timedelta(seconds=1)))


def label(store: Store, annotator: str, choice: str = "a", lease_seconds: float = LEASE,
          handing: Handing | None = None):
    """Take the next comparison (handed out as `handing` says) and label it `choice`."""
    item = next_comparison(store, annotator, lease_seconds, handing=handing or Handing())
    return item, submit_label(store, annotator, item.comparison_id, choice, item.shown_order)


# -- handing out ---------------------------------------------------------------------------------------------------
def test_next_leases_an_open_comparison_and_shows_a_and_b_in_the_recorded_order(store):
    [cid] = make_comparisons(store, 1)
    item = next_comparison(store, "alice", LEASE)
    assert item.comparison_id == cid and item.messages[0]["role"] == "user"
    assert item.shown_order in ("ab", "ba")
    texts = (item.left_text, item.right_text)
    assert texts == (("A0", "B0") if item.shown_order == "ab" else ("B0", "A0"))
    [lease] = leases(store)
    assert (lease.annotator, lease.comparison_id, lease.shown_order) == ("alice", cid, item.shown_order)
    assert timedelta(seconds=LEASE - 5) < item.expires_at - utcnow() <= timedelta(seconds=LEASE)


def test_both_left_right_orders_are_used(store):
    make_comparisons(store, 40, overlap=40)
    orders = {next_comparison(store, f"u{i}", LEASE).shown_order for i in range(40)}
    assert orders == {"ab", "ba"}


def test_a_reload_returns_the_same_leased_item_not_a_second_one(store):
    make_comparisons(store, 3)
    first = next_comparison(store, "alice", LEASE)
    again = next_comparison(store, "alice", LEASE)
    assert again == first
    assert len(leases(store)) == 1


def test_highest_priority_first_then_oldest(store):
    low = make_comparisons(store, 2)
    high = make_comparisons(store, 2, priority=5)
    handed = [next_comparison(store, f"u{i}", LEASE).comparison_id for i in range(4)]
    assert handed == high + low


def test_with_overlap_one_a_leased_comparison_goes_to_nobody_else(store):
    make_comparisons(store, 1)
    assert next_comparison(store, "alice", LEASE) is not None
    assert next_comparison(store, "bob", LEASE) is None


def test_with_overlap_two_two_annotators_hold_it_at_once_but_not_three(store):
    [cid] = make_comparisons(store, 1, overlap=2)
    assert next_comparison(store, "alice", LEASE).comparison_id == cid
    assert next_comparison(store, "bob", LEASE).comparison_id == cid
    assert next_comparison(store, "carol", LEASE) is None


def test_a_comparison_is_never_handed_twice_to_the_same_annotator(store):
    [cid] = make_comparisons(store, 1, overlap=3)
    label(store, "alice")
    assert next_comparison(store, "alice", LEASE) is None
    assert next_comparison(store, "bob", LEASE).comparison_id == cid


def test_an_expired_lease_returns_the_item_to_the_queue(store):
    [cid] = make_comparisons(store, 1)
    next_comparison(store, "alice", lease_seconds=0.3)
    assert next_comparison(store, "bob", LEASE) is None
    time.sleep(0.4)
    assert next_comparison(store, "bob", LEASE).comparison_id == cid
    assert [lease.annotator for lease in leases(store)] == ["bob"]


def test_expire_leases_deletes_only_expired_ones(store):
    make_comparisons(store, 2)
    next_comparison(store, "alice", LEASE)
    age_all_leases(store)
    next_comparison(store, "bob", LEASE)  # clears alice's expired lease itself and takes the first item
    next_comparison(store, "carol", LEASE)
    with store.write() as s:
        s.exec(update(Lease).where(Lease.annotator == "carol").values(expires_at=utcnow() - timedelta(seconds=1)))
    assert expire_leases(store) == 1
    assert [lease.annotator for lease in leases(store)] == ["bob"]


def test_a_released_lease_returns_the_item_at_once(store):
    [cid] = make_comparisons(store, 1)
    next_comparison(store, "alice", LEASE)
    assert release_lease(store, "alice", cid) is True
    assert release_lease(store, "alice", cid) is False
    assert next_comparison(store, "bob", LEASE).comparison_id == cid


def test_retired_comparisons_are_never_handed_out_nor_labelled(store):
    [old] = make_comparisons(store, 1)
    item = next_comparison(store, "alice", LEASE)
    store.versions.add("v1", "/models/v1", parent_id=store.versions.get("v0").id, round=1)
    assert store.versions.deploy("v1") == 1
    assert next_comparison(store, "alice", LEASE) is None  # the stale lease is not handed back either
    assert next_comparison(store, "bob", LEASE) is None
    with pytest.raises(ComparisonUnavailable, match="retired"):
        submit_label(store, "alice", old, "a", item.shown_order)
    assert status_of(store, old) == "retired" and labels_of(store, old) == []


# -- taking labels back --------------------------------------------------------------------------------------------
def test_a_double_submit_is_one_label(store):
    [cid] = make_comparisons(store, 1, overlap=2)
    item = next_comparison(store, "alice", LEASE)
    first = submit_label(store, "alice", cid, "b", item.shown_order, rationale="clearer")
    second = submit_label(store, "alice", cid, "b", item.shown_order, rationale="clearer")
    assert first.created and not second.created
    assert second.label_id == first.label_id
    [stored] = labels_of(store, cid)
    assert (stored.annotator, stored.choice, stored.rationale, stored.source) == ("alice", "b", "clearer", "human")


def test_a_conflicting_resubmit_is_refused_and_the_first_label_stands(store):
    [cid] = make_comparisons(store, 1, overlap=2)
    _, first = label(store, "alice", "a")
    with pytest.raises(LabelConflict, match="first label stands") as refused:
        submit_label(store, "alice", cid, "b", "ab")
    assert (refused.value.existing_choice, refused.value.label_id) == ("a", first.label_id)
    assert [lb.choice for lb in labels_of(store, cid)] == ["a"]


def test_submitting_releases_the_annotators_lease(store):
    make_comparisons(store, 2)
    label(store, "alice")
    assert leases(store) == []


def test_a_comparison_is_done_when_its_overlap_is_reached_and_takes_no_more(store):
    [cid] = make_comparisons(store, 1, overlap=2)
    _, first = label(store, "alice", "a")
    assert not first.done and status_of(store, cid) == "open"
    _, second = label(store, "bob", "tie")
    assert second.done and status_of(store, cid) == "done"
    assert next_comparison(store, "carol", LEASE) is None
    with pytest.raises(ComparisonUnavailable, match="already has the 2 label"):
        submit_label(store, "carol", cid, "b", "ab")
    assert len(labels_of(store, cid)) == 2


def test_a_skip_does_not_count_toward_overlap_and_is_not_handed_again(store):
    [cid] = make_comparisons(store, 1)
    _, skipped = label(store, "alice", "skip")
    assert skipped.created and not skipped.done and status_of(store, cid) == "open"
    assert next_comparison(store, "alice", LEASE) is None
    _, real = label(store, "bob", "a")
    assert real.done
    assert [(lb.annotator, lb.choice) for lb in labels_of(store, cid)] == [("alice", "skip"), ("bob", "a")]


def test_a_late_label_is_refused_when_its_place_went_to_someone_else(store):
    [cid] = make_comparisons(store, 1)
    stale = next_comparison(store, "alice", LEASE)
    age_all_leases(store)
    next_comparison(store, "bob", LEASE)
    with pytest.raises(ComparisonUnavailable):
        submit_label(store, "alice", cid, "a", stale.shown_order)
    submit_label(store, "bob", cid, "b", "ab")
    assert [(lb.annotator, lb.choice) for lb in labels_of(store, cid)] == [("bob", "b")]


def test_a_late_label_is_taken_while_its_place_is_still_free(store):
    [cid] = make_comparisons(store, 1)
    stale = next_comparison(store, "alice", LEASE)
    age_all_leases(store)
    assert submit_label(store, "alice", cid, "a", stale.shown_order).done


def test_unknown_comparisons_and_invalid_choices_are_refused(store):
    [cid] = make_comparisons(store, 1)
    with pytest.raises(LookupError):
        submit_label(store, "alice", 999, "a", "ab")
    with pytest.raises(ValueError, match="choice"):
        submit_label(store, "alice", cid, "left", "ab")
    with pytest.raises(ValueError, match="shown_order"):
        submit_label(store, "alice", cid, "a", "ba ")
    assert labels_of(store, cid) == []


def test_judge_labels_do_not_fill_the_human_overlap(store):
    [cid] = make_comparisons(store, 1)
    judged = submit_label(store, "judge:tiny", cid, "a", "ab", source="judge")
    assert judged.created and not judged.done
    assert next_comparison(store, "alice", LEASE).comparison_id == cid


@pytest.mark.parametrize(("side", "order", "choice"), [
    ("left", "ab", "a"), ("right", "ab", "b"), ("left", "ba", "b"), ("right", "ba", "a"),
    ("tie", "ba", "tie"), ("both_bad", "ab", "both_bad"), ("skip", "ba", "skip"),
])
def test_choice_from_side_maps_left_and_right_through_the_shown_order(side, order, choice):
    assert choice_from_side(side, order) == choice


@pytest.mark.parametrize(("side", "order"), [("a", "ab"), ("left", "xy"), ("", "ab")])
def test_choice_from_side_refuses_unknown_sides_and_orders(side, order):
    with pytest.raises(ValueError):
        choice_from_side(side, order)


def test_clicking_the_left_response_prefers_what_was_shown_on_the_left(store):
    [cid] = make_comparisons(store, 1)
    item = next_comparison(store, "alice", LEASE)
    submit_label(store, "alice", cid, choice_from_side("left", item.shown_order), item.shown_order)
    [stored] = labels_of(store, cid)
    with store.read() as s:
        chosen = s.get(Comparison, cid).response_a_id if stored.choice == "a" else s.get(Comparison, cid).response_b_id
    assert chosen == item.left_response_id and stored.shown_order == item.shown_order


# -- the edit flow -------------------------------------------------------------------------------------------------
def test_an_edit_becomes_a_done_pair_of_the_edit_over_the_response_it_came_from(store):
    [cid] = make_comparisons(store, 1)
    item = next_comparison(store, "alice", LEASE)
    new_id = add_edited_response(store, "alice", cid, "B0, but better", item.shown_order, "fixed a fact",
                                 edited_from="b")
    with store.read() as s:
        original, pair = s.get(Comparison, cid), s.get(Comparison, new_id)
        edited, rejected = s.get(Response, pair.response_a_id), s.get(Response, pair.response_b_id)
    assert (pair.source, pair.status, pair.overlap, pair.prompt_id) == ("edit", "done", 1, original.prompt_id)
    assert (edited.text, edited.source, edited.model_version_id) == ("B0, but better", "edit", None)
    assert edited.prompt_id == original.prompt_id and rejected.id == original.response_b_id
    [pair_label] = labels_of(store, new_id)
    assert (pair_label.annotator, pair_label.choice, pair_label.rationale) == ("alice", "a", "fixed a fact")
    [original_label] = labels_of(store, cid)
    assert (original_label.annotator, original_label.choice) == ("alice", "skip")
    assert leases(store) == [] and status_of(store, cid) == "open"


def test_an_edit_records_the_original_choice_passed_in(store):
    [cid] = make_comparisons(store, 1)
    item = next_comparison(store, "alice", LEASE)
    add_edited_response(store, "alice", cid, "A0 fixed", item.shown_order, edited_from="a", original_choice="a")
    [original_label] = labels_of(store, cid)
    assert original_label.choice == "a" and status_of(store, cid) == "done"


def test_an_edit_after_labelling_keeps_the_first_label(store):
    [cid] = make_comparisons(store, 1)
    label(store, "alice", "b")
    add_edited_response(store, "alice", cid, "A0 fixed", "ab", edited_from="a", original_choice="a")
    assert [lb.choice for lb in labels_of(store, cid)] == ["b"]


def test_an_edit_that_changes_nothing_or_is_empty_is_refused_and_stores_nothing(store):
    [cid] = make_comparisons(store, 1)
    with pytest.raises(ValueError, match="does not change"):
        add_edited_response(store, "alice", cid, " A0 ", "ab", edited_from="a")
    with pytest.raises(ValueError, match="empty"):
        add_edited_response(store, "alice", cid, "  ", "ab", edited_from="a")
    with pytest.raises(ValueError, match="edited_from"):
        add_edited_response(store, "alice", cid, "new", "ab", edited_from="left")
    assert store.stats.summary()["responses"] == 2 and labels_of(store, cid) == []


# -- progress and the service layer --------------------------------------------------------------------------------
def test_queue_counts_show_what_is_left_and_done_today(store):
    make_comparisons(store, 3, overlap=2)
    label(store, "alice", "a")
    label(store, "alice", "skip")
    assert queue_counts(store, "alice") == {"open": 3, "left": 1, "labelled_today": 1}
    assert queue_counts(store, "bob") == {"open": 3, "left": 3, "labelled_today": 0}
    assert queue_counts(store) == {"open": 3, "left": 3, "labelled_today": 1, "leased": 0}
    next_comparison(store, "bob", lease_seconds=600)  # the console also counts what is in someone's hands now
    assert queue_counts(store)["leased"] == 1 and "leased" not in queue_counts(store, "bob")


def test_submit_and_next_labels_and_leases_the_next_in_one_go(store):
    first, second = make_comparisons(store, 2)
    item = next_comparison(store, "alice", LEASE)
    assert item.comparison_id == first
    result, after = submit_and_next(store, "alice", first, "a", item.shown_order, LEASE)
    assert result.created and result.done and after.comparison_id == second
    assert [(lease.comparison_id, lease.annotator) for lease in leases(store)] == [(second, "alice")]
    again, same = submit_and_next(store, "alice", first, "a", item.shown_order, LEASE)  # a retry
    assert not again.created and again.label_id == result.label_id and same.lease_id == after.lease_id
    with pytest.raises(LabelConflict):
        submit_and_next(store, "alice", first, "b", item.shown_order, LEASE)
    done, nothing = submit_and_next(store, "alice", second, "tie", after.shown_order, LEASE)
    assert done.done and nothing is None and leases(store) == []
    assert [lb.choice for lb in labels_of(store, first)] == ["a"]


def test_the_queue_queries_are_index_driven(store, backend):
    """No full scan of comparisons, labels or leases on the hot path (the query planner's own word)."""
    from data import queue

    statements = [queue._HELD, *queue._FIRST.values(), queue._ROOM, queue._ITEM, queue._MY_LABEL, queue._MY_LEASE,
                  queue._FILLED, queue._GOLD, queue._GOLD_LEFT]
    if backend == "postgresql":
        statements += [*queue._FIRST_LOCKED.values(), queue._COMPARISON_LOCKED]
    plan_of = sqlite_plan if backend == "sqlite" else postgresql_plan
    with store.engine.begin() as conn:
        for statement in statements:
            plan = plan_of(conn, str(statement))
            if backend == "sqlite":
                assert not [step for step in plan if step.startswith("SCAN") and "CONSTANT ROW" not in step], plan
            else:
                assert not [step for step in plan if "Seq Scan" in step], plan
            if statement is queue._HELD:  # the annotator's lease first, not a walk over every open comparison
                lease_first = plan[:1] if backend == "sqlite" else plan  # PostgreSQL nests the scans under its joins
                assert [step for step in lease_first if "ix_lease_annotator" in step], plan


def sqlite_plan(conn, sql: str) -> list[str]:
    """EXPLAIN QUERY PLAN's steps, outermost first."""
    import re

    return [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + re.sub(r":\w+", "NULL", sql))]


def postgresql_plan(conn, sql: str) -> list[str]:
    """EXPLAIN's lines with sequential scans priced out: a Seq Scan left means no index can serve the query
    (an empty table would be scanned anyway). Real values, not NULL, which the planner folds to 'no rows'."""
    import re

    values = {"annotator": "'alice'", "now": "now()", "comparison_id": "1", "overlap_default": "1", "tried": "'{2}'"}
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    sql = re.sub(r":(\w+)", lambda m: values[m.group(1)], sql)
    return [row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql)]


# -- concurrency -----------------------------------------------------------------------------------------------
def annotate_until_empty(store: Store, annotator: str, index: int, timeout_s: float = 240) -> dict[str, list]:
    """One annotator's session: take, sometimes abandon or skip, label, double-click. Returns what it saw:
    acked (labels acknowledged), places (comparison, annotator, from, to: spans it surely held a lease, and its
    counted labels from their acknowledgement on, on the machine-wide monotonic clock) and refused (submits the
    queue turned down: work lost)."""
    seen: dict[str, list] = {"acked": [], "places": [], "refused": []}
    abandoned = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        item = next_comparison(store, annotator, LEASE)
        if item is None:
            # Nothing free now; what others hold may still come back (a skip or an abandoned lease).
            if queue_counts(store, annotator)["left"] == 0:
                return seen
            time.sleep(0.01)
            continue
        leased = time.monotonic()  # the lease is committed: from here until we let go, nobody else may hold it
        cid = item.comparison_id
        if cid % 11 == index % 11 and cid not in abandoned:
            abandoned.add(cid)
            seen["places"].append((cid, annotator, leased, time.monotonic()))
            release_lease(store, annotator, cid)
            continue
        # At most a few annotators skip any one comparison, so every comparison can still fill its overlap.
        side = "skip" if (cid + index) % 7 == 0 else ("left", "right", "tie")[(cid + index) % 3]
        choice = choice_from_side(side, item.shown_order)
        seen["places"].append((cid, annotator, leased, time.monotonic()))
        try:
            result = submit_label(store, annotator, cid, choice, item.shown_order)
        except (ComparisonUnavailable, LabelConflict) as refused:
            seen["refused"].append((cid, annotator, str(refused)))
            continue
        again = submit_label(store, annotator, cid, choice, item.shown_order)  # the double click
        assert result.created and not again.created and again.label_id == result.label_id
        seen["acked"].append((cid, annotator, choice, result.label_id))
        if choice != "skip":
            seen["places"].append((cid, annotator, time.monotonic(), math.inf))
    raise AssertionError(f"{annotator} still had comparisons to label after {timeout_s}s")


_START = None  # in each worker process: the barrier all of them pass together


def _start_together(barrier) -> None:
    global _START
    _START = barrier


def annotate_in_own_process(url: str, annotator: str, index: int) -> dict[str, list]:
    store = Store(url)
    try:
        _START.wait(timeout=120)  # all four begin at once (spawn start-up takes seconds): they contend, not take turns
        return annotate_until_empty(store, annotator, index)
    finally:
        store.close()


def merged(sessions: list[dict[str, list]]) -> dict[str, list]:
    return {key: [row for seen in sessions for row in seen[key]] for key in ("acked", "places", "refused")}


def assert_exactly_overlap(store: Store, ids: list[int], overlap: int, seen: dict[str, list]) -> None:
    assert_never_over_leased(seen["places"], overlap)
    assert seen["refused"] == [], "a submit under a live lease was refused: that annotator's work was lost"
    with store.read() as s:
        rows = [(lb.comparison_id, lb.annotator, lb.choice, lb.id) for lb in s.exec(select(Label)).all()]
        statuses = {c.id: c.status for c in s.exec(select(Comparison)).all()}
    assert sorted(rows) == sorted(seen["acked"]), "every stored label was acknowledged, every acknowledged one stored"
    assert len({(cid, who) for cid, who, _, _ in rows}) == len(rows)
    for cid in ids:
        counted = [row for row in rows if row[0] == cid and row[2] != "skip"]
        assert len(counted) == overlap, f"comparison {cid} has {len(counted)} labels, wants {overlap}"
    assert set(statuses.values()) == {"done"}
    assert leases(store) == []


def assert_never_over_leased(places: list[tuple[int, str, float, float]], overlap: int) -> None:
    """At no instant did more than `overlap` annotators hold a lease on, or have labelled, one comparison. The spans
    are conservative (a lease from after it was committed to before it was let go, a label from after it was
    acknowledged), so an overlap of them is a real double lease."""
    # Sorted by time, and at a tie a release (-1) before a lease (+1).
    events = sorted((t, step, cid, who) for cid, who, start, end in places for t, step in ((start, 1), (end, -1)))
    holders: dict[int, set] = {}
    for _, step, cid, who in events:
        mine = holders.setdefault(cid, set())
        if step < 0:
            mine.discard(who)
            continue
        mine.add(who)
        assert len(mine) <= overlap, f"comparison {cid} leased to {sorted(mine)} at once (overlap {overlap})"


def test_one_annotators_simultaneous_requests_lease_one_comparison(store):
    """A double click, or two tabs, sending next at the same instant: one lease, the same comparison to both."""
    make_comparisons(store, 40)
    with ThreadPoolExecutor(8) as pool:
        for who in [f"alice{i}" for i in range(6)]:  # six races: a missing lock shows in one of them
            items = list(pool.map(lambda _, who=who: next_comparison(store, who, LEASE), range(8)))
            assert len({item.comparison_id for item in items}) == 1
    assert sorted(lease.annotator for lease in leases(store)) == [f"alice{i}" for i in range(6)]


@pytest.mark.parametrize("overlap", [1, 2])
def test_sixteen_threads_label_every_comparison_exactly_overlap_times(store, overlap):
    ids = make_comparisons(store, 60, overlap=overlap)
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(annotate_until_empty, store, f"t{i}", i) for i in range(16)]
        seen = merged([f.result(timeout=300) for f in futures])  # .result() re-raises any error in a thread
    assert_exactly_overlap(store, ids, overlap, seen)


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [1, 2])
def test_four_processes_label_every_comparison_exactly_overlap_times(store, overlap):
    """Four OS processes, each with its own Store on the one database: the queue's rules hold across processes
    (SQLite's write lock; PostgreSQL's row locks), not only across threads sharing a Store."""
    ids = make_comparisons(store, 60, overlap=overlap)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4, initializer=_start_together, initargs=(ctx.Barrier(4),)) as pool:
        work = pool.starmap_async(annotate_in_own_process, [(store.url, f"p{i}", i) for i in range(4)])
        seen = merged(work.get(timeout=300))
    assert len({who for _, who, _, _ in seen["acked"]}) > 1, "the processes took turns, not one took everything"
    assert_exactly_overlap(store, ids, overlap, seen)


# -- my recent labels ---------------------------------------------------------------------------------------------
def test_recent_labels_are_the_persons_last_ones_as_they_clicked_them_with_discards_marked(store):
    from data.curation import discard
    from data.recent import recent_labels

    ids = make_comparisons(store, 5)
    clicked = []
    for side in ("left", "right", "tie"):
        item = next_comparison(store, "alice", LEASE)
        clicked.append((item.comparison_id, side))
        submit_label(store, "alice", item.comparison_id, choice_from_side(side, item.shown_order), item.shown_order)
    other = next_comparison(store, "bob", LEASE)
    submit_label(store, "bob", other.comparison_id, "a", other.shown_order)  # someone else's: never listed
    item = next_comparison(store, "alice", LEASE)
    add_edited_response(store, "alice", item.comparison_id, "a better answer", item.shown_order, edited_from="a")
    mine = [x for x in labels_of_all(store) if x.annotator == "alice"]
    discard(store, "label", next(x.id for x in mine if x.comparison_id == clicked[0][0]), "spam", actor="olivia")

    recent = recent_labels(store, "alice", limit=5)
    assert len(recent) == 5 and all(r.comparison_id != other.comparison_id for r in recent)
    edit = next(r for r in recent[:2] if r.side == "edit")  # the pair the rewrite made, and the original, skipped
    assert edit.comparison_id not in ids
    edited = {(edit.comparison_id, "edit"), (item.comparison_id, "skip")}
    assert {(r.comparison_id, r.side) for r in recent[:2]} == edited
    assert [(r.comparison_id, r.side) for r in recent[2:]] == clicked[::-1]  # newest first, as clicked
    assert [r.discarded for r in recent] == [False, False, False, False, True]
    assert all(r.prompt.startswith("prompt ") and r.created_at.tzinfo for r in recent)
    assert [r.label_id for r in recent_labels(store, "alice", limit=2)] == [r.label_id for r in recent[:2]]
    assert recent_labels(store, "carol") == []


def labels_of_all(store: Store) -> list[Label]:
    with store.read() as s:
        return list(s.exec(select(Label).order_by(Label.id)).all())


# -- who may label what ------------------------------------------------------------------------------------------
def test_a_person_labels_only_the_comparison_they_were_handed(store):
    handed, other = make_comparisons(store, 2)
    item = next_comparison(store, "alice", LEASE)
    assert item.comparison_id == handed
    with pytest.raises(NotHanded, match=f"comparison {other} is not one you were handed"):
        submit_label(store, "alice", other, "a", "ab", handed_only=True)
    with pytest.raises(NotHanded):
        submit_and_next(store, "alice", other, "a", "ab", LEASE)
    with pytest.raises(NotHanded):
        add_edited_response(store, "alice", other, "a rewrite", "ab", edited_from="a")
    assert labels_of(store, other) == [] and status_of(store, other) == "open"
    first = submit_label(store, "alice", handed, "b", item.shown_order, handed_only=True)
    again = submit_label(store, "alice", handed, "b", item.shown_order, handed_only=True)  # a retry, lease gone
    assert first.created and not again.created and again.label_id == first.label_id


def test_a_person_whose_hold_was_cleared_is_refused_and_the_place_goes_to_the_next_person(store):
    cid, = make_comparisons(store, 1)
    item = next_comparison(store, "alice", LEASE)
    age_all_leases(store)
    assert next_comparison(store, "bob", LEASE).comparison_id == cid  # clears alice's expired lease
    with pytest.raises(NotHanded):
        submit_label(store, "alice", cid, "a", item.shown_order, handed_only=True)


# -- gold questions ------------------------------------------------------------------------------------------------
def test_gold_questions_are_mixed_in_at_the_configured_rate(store):
    import random

    random.seed(14)
    ordinary = make_comparisons(store, 240)
    gold = make_comparisons(store, 120)
    set_columns(store, gold, gold_choice="a")
    handing = Handing(gold_rate=0.25)
    handed_gold = 0
    for _ in range(200):
        item = next_comparison(store, "alice", LEASE, handing=handing)
        handed_gold += item.comparison_id in gold
        submit_label(store, "alice", item.comparison_id, "a", item.shown_order, handed_only=True)
    # 200 draws at 0.25: mean 50, standard deviation 6.1; these bounds are 4 deviations wide.
    assert 25 <= handed_gold <= 75
    assert all(next_comparison(store, f"p{k}", LEASE).comparison_id in ordinary for k in range(20))  # rate 0: none


def test_every_annotator_answers_each_gold_question_once_and_it_fills_no_overlap(store):
    ordinary = make_comparisons(store, 3)
    gold, = make_comparisons(store, 1)
    set_columns(store, [gold], gold_choice="b")
    always = Handing(gold_rate=1.0)
    for name in ("alice", "bob", "carol"):
        item = next_comparison(store, name, LEASE, handing=always)
        assert item.comparison_id == gold
        assert submit_label(store, name, gold, "a", item.shown_order, handed_only=True).done  # as overlap 1 says
        following = next_comparison(store, name, LEASE, handing=always)  # answered: ordinary work from now on
        assert following.comparison_id in ordinary
        submit_label(store, name, following.comparison_id, "a", following.shown_order, handed_only=True)
    assert status_of(store, gold) == "open" and len(labels_of(store, gold)) == 3
    assert [status_of(store, cid) for cid in ordinary] == ["done"] * 3


def test_gold_is_never_the_only_thing_left_and_never_counted_as_work(store):
    gold = make_comparisons(store, 3)
    set_columns(store, gold, gold_choice="tie")
    assert next_comparison(store, "alice", LEASE, handing=Handing(gold_rate=1.0)) is None
    assert queue_counts(store, "alice") == {"open": 0, "left": 0, "labelled_today": 0}


def test_answering_gold_moves_an_annotators_counts_as_answering_ordinary_work_does(store):
    make_comparisons(store, 3)
    gold = make_comparisons(store, 2)
    set_columns(store, gold, gold_choice="a")
    handing = Handing(gold_rate=0.5)
    assert queue_counts(store, overlap_default=1) == {"open": 3, "left": 3, "labelled_today": 0, "leased": 0}
    before = queue_counts(store, "alice", handing=handing)
    assert before == {"open": 5, "left": 5, "labelled_today": 0}
    for step in range(1, 4):  # whatever each hand-out is, the counts fall by one
        item = next_comparison(store, "alice", LEASE, handing=handing)
        submit_label(store, "alice", item.comparison_id, "a", item.shown_order, handed_only=True)
        after = queue_counts(store, "alice", handing=handing)
        left = 5 - step if after["left"] else 0  # once ordinary work is done, unanswered gold is never handed
        assert (after["open"], after["left"]) == (left, left)


def test_a_retired_or_discarded_gold_question_is_not_handed_out(store):
    cid, = make_comparisons(store, 1)
    retired, discarded = make_comparisons(store, 2)
    set_columns(store, [retired, discarded], gold_choice="a")
    set_columns(store, [retired], status="retired")
    set_columns(store, [discarded], discarded_at=utcnow())
    assert next_comparison(store, "alice", LEASE, handing=Handing(gold_rate=1.0)).comparison_id == cid


# -- priority orders -----------------------------------------------------------------------------------------------
def test_uncertainty_hands_out_the_margin_closest_to_zero_first_and_unscored_ones_last(store):
    unscored, far, near, negative = make_comparisons(store, 4)
    for cid, margin in ((far, 2.5), (near, 0.05), (negative, -0.4)):
        set_columns(store, [cid], margin=margin)
    order = [label(store, f"p{k}", lease_seconds=LEASE, handing=Handing(priority="uncertainty"))[0].comparison_id
             for k in range(4)]
    assert order == [near, negative, far, unscored]


def test_judge_disagreement_hands_out_the_most_split_first_then_the_oldest(store):
    calm, split_once, split_twice, calm_too = make_comparisons(store, 4)
    set_columns(store, [split_once], judge_split=1)
    set_columns(store, [split_twice], judge_split=2)
    order = [label(store, f"p{k}", handing=Handing(priority="judge_disagreement"))[0].comparison_id
             for k in range(4)]
    assert order == [split_twice, split_once, calm, calm_too]


def test_an_operator_set_priority_still_comes_before_any_order(store):
    near, = make_comparisons(store, 1)
    set_columns(store, [near], margin=0.0, judge_split=5)
    urgent, = make_comparisons(store, 1, overlap=2, priority=3)
    for priority in ("uncertainty", "judge_disagreement"):
        assert next_comparison(store, f"x-{priority}", LEASE, handing=Handing(priority=priority)).comparison_id \
            == urgent


def test_unknown_orders_and_rates_are_refused():
    with pytest.raises(ValueError, match="priority must be one of"):
        Handing(priority="newest")
    with pytest.raises(ValueError, match="gold_rate must be between 0 and 1"):
        Handing(gold_rate=1.5)


# -- rankings, ratings and thumbs ----------------------------------------------------------------------------------
def test_a_ranking_is_handed_out_with_all_its_responses_shuffled_the_same_on_every_reload(store):
    make_kind_comparison(store, "ranking", 4)
    item = next_comparison(store, "ann", LEASE)
    assert item.kind == "ranking" and sorted(r.text for r in item.responses) == ["R0", "R1", "R2", "R3"]
    assert [r.text for r in item.responses] == [f"R{r.position}" for r in item.responses]
    again = next_comparison(store, "ann", LEASE)
    assert again.responses == item.responses and again.lease_id == item.lease_id
    orders = set()
    for _ in range(12):  # fresh leases show other orders: no position is always first
        cid = make_kind_comparison(store, "ranking", 4)
        got = next_comparison(store, f"ann-{cid}", LEASE)
        orders.add(tuple(r.position for r in got.responses))
    assert len(orders) > 1


def test_a_ranking_label_stores_its_ranks_by_position_with_ties_in_competition_form(store):
    cid = make_kind_comparison(store, "ranking", 3)
    item = next_comparison(store, "ann", LEASE)
    result = submit_label(store, "ann", cid, "ranked", item.shown_order, given=Given(ranking=[2, 1, 1]),
                          handed_only=True)
    assert result.created and result.done
    (stored,) = labels_of(store, cid)
    assert stored.choice == "ranked" and stored.ranking == [3, 1, 1] and stored.ratings is None
    again = submit_label(store, "ann", cid, "ranked", "ab", given=Given(ranking=[3, 1, 1]))
    assert not again.created and again.label_id == result.label_id  # the same ranking: a retry
    with pytest.raises(LabelConflict):
        submit_label(store, "ann", cid, "ranked", "ab", given=Given(ranking=[1, 2, 3]))


@pytest.mark.parametrize("choice, given, message", [
    ("a", Given(), "takes the choices ranked, skip"),
    ("ranked", Given(), "rank of each of the 3"),
    ("ranked", Given(ranking=[1, 2]), "rank of each of the 3"),
    ("ranked", Given(ranking=[1, 2, 4]), "from 1 to 3"),
    ("ranked", Given(ranking=[1, 2, True]), "from 1 to 3"),
    ("skip", Given(ranking=[1, 2, 3]), "carries no ranking"),
])
def test_a_malformed_ranking_is_refused_saying_what_is_wrong(store, choice, given, message):
    cid = make_kind_comparison(store, "ranking", 3)
    with pytest.raises(ValueError, match=message):
        submit_label(store, "ann", cid, choice, "ab", given=given)
    assert labels_of(store, cid) == []


def test_a_rating_label_stores_scores_per_criterion_and_refuses_scores_off_the_scale(store):
    cid = make_kind_comparison(store, "rating", 2)
    ratings = {"helpfulness": [5, 2], "honesty": [4, 4]}
    assert submit_label(store, "ann", cid, "rated", "ab", given=Given(ratings=ratings)).created
    assert labels_of(store, cid)[0].ratings == ratings
    other = make_kind_comparison(store, "rating", 2)
    for bad, message in [({"helpfulness": [9, 1]}, "from 1 to 7"), ({}, "at least one criterion"),
                         ({"helpfulness": [1]}, "each of the 2")]:
        with pytest.raises(ValueError, match=message):
            submit_label(store, "ann", other, "rated", "ab", given=Given(ratings=bad))
    with pytest.raises(ValueError, match="takes the choices"):
        submit_label(store, "ann", other, "ranked", "ab", given=Given(ranking=[1, 2]))


def test_a_thumbs_comparison_shows_one_response_and_takes_up_down_or_skip(store):
    cid = make_kind_comparison(store, "thumbs", 1)
    item = next_comparison(store, "ann", LEASE)
    assert item.kind == "thumbs" and [r.text for r in item.responses] == ["R0"] and item.left_text == "R0"
    with pytest.raises(ValueError, match="takes the choices up, down, skip"):
        submit_label(store, "ann", cid, "a", item.shown_order)
    assert submit_label(store, "ann", cid, "down", item.shown_order, handed_only=True).done
    with pytest.raises(LabelConflict):
        submit_label(store, "ann", cid, "up", item.shown_order)


def test_rankings_fill_exactly_their_overlap_and_a_skip_fills_nothing(store):
    cid = make_kind_comparison(store, "ranking", 3, overlap=2)
    for name, choice, given in [("x", "skip", Given()), ("y", "ranked", Given(ranking=[1, 2, 3])),
                                ("z", "ranked", Given(ranking=[1, 3, 2]))]:
        item = next_comparison(store, name, LEASE)
        assert item.comparison_id == cid
        submit_label(store, name, cid, choice, item.shown_order, given=given, handed_only=True)
    assert status_of(store, cid) == "done"
    assert next_comparison(store, "w", LEASE) is None
    with pytest.raises(ComparisonUnavailable):
        submit_label(store, "w", cid, "ranked", "ab", given=Given(ranking=[1, 2, 3]))


def test_only_a_pair_can_be_rewritten_as_an_edit(store):
    cid = make_kind_comparison(store, "ranking", 3)
    item = next_comparison(store, "ann", LEASE)
    with pytest.raises(ValueError, match="only a pair's response can be rewritten"):
        add_edited_response(store, "ann", cid, "better", item.shown_order, edited_from="a")
