"""The sampling worker on a real SQLite store and the real tiny model: lineage, pairing, skips, deploys, watch."""

import threading
import time
from dataclasses import replace
from math import comb

import pytest
from sqlmodel import select

from data.models import Comparison, Response
from generation.backend import Sample
from generation.backends import load_backend
from generation.config import SamplingConfig
from generation.pairing import pairable
from generation.worker import NoDeployedVersion, generate_once, watch

CFG = SamplingConfig(samples_per_prompt=3, max_new_tokens=24, batch_size=4, seed=0, bad_samples="keep")
QUESTIONS = ["What does json.dumps do?", "Explain collections.Counter.", "What is pathlib.Path for?",
             "Briefly, what does os.path.join do?"]


@pytest.fixture(scope="module")
def sampler(tiny_model_dir):
    """The hf backend on the tiny model, loaded once (`backend` is the database the tests run on)."""
    b = load_backend("hf", str(tiny_model_dir), device="cpu")
    yield b
    b.close()


@pytest.fixture
def v0(store, tiny_model_dir):
    store.versions.add("v0", str(tiny_model_dir))
    store.versions.deploy("v0")
    return store.versions.get("v0")


@pytest.fixture
def prompt_ids(store):
    return store.prompts.add(QUESTIONS, source="test").ids


def responses(store, **where) -> list[Response]:
    with store.read() as s:
        q = select(Response)
        for name, value in where.items():
            q = q.where(getattr(Response, name) == value)
        return list(s.exec(q).all())


def comparisons(store) -> list[Comparison]:
    with store.read() as s:
        return list(s.exec(select(Comparison)).all())


def test_every_response_knows_the_version_and_params_that_made_it(store, sampler, v0, prompt_ids):
    report = generate_once(store, sampler, CFG)
    assert report.version == "v0"
    assert report.prompts_sampled == len(QUESTIONS)
    assert report.responses_stored == len(QUESTIONS) * CFG.samples_per_prompt
    stored = responses(store)
    assert len(stored) == report.responses_stored
    for r in stored:
        assert r.model_version_id == v0.id
        assert r.source == "generated"
        assert r.sampling_params == {**CFG.sampling_params(), "backend": "hf"}
        assert r.finish_reason in ("stop", "length") and r.token_count >= 1
    assert {r.prompt_id for r in stored} == set(prompt_ids)


def test_a_second_run_under_the_same_version_samples_nothing_new(store, sampler, v0, prompt_ids):
    generate_once(store, sampler, CFG)
    again = generate_once(store, sampler, CFG)
    assert again.prompts_sampled == 0 and again.responses_stored == 0


def test_again_tied_samples_once_more_only_the_prompts_whose_comparisons_all_tied(store, sampler, v0, prompt_ids):
    from sqlmodel import select

    from data.models import Comparison, Label

    generate_once(store, sampler, CFG)
    with store.write() as s:  # the first prompt's comparisons all end in a tie; the others stay open
        for c in s.exec(select(Comparison).where(Comparison.prompt_id == prompt_ids[0])).all():
            c.status = "done"
            s.add(c)
            s.add(Label(comparison_id=c.id, annotator="ann", source="human", choice="tie"))
    assert generate_once(store, sampler, CFG).prompts_sampled == 0  # nothing new to sample: the loop stalls
    again = generate_once(store, sampler, CFG, again_tied=True)
    assert again.prompts_sampled == 1 and again.comparisons_created > 0
    with store.read() as s:
        fresh = s.exec(select(Comparison).where(Comparison.prompt_id == prompt_ids[0],
                                                Comparison.status == "open")).all()
    assert len(fresh) == again.comparisons_created
    # its new comparisons are open: it does not qualify again until they too end without a preference
    assert generate_once(store, sampler, CFG, again_tied=True).prompts_sampled == 0


def test_limit_caps_the_prompts_sampled(store, sampler, v0, prompt_ids):
    assert generate_once(store, sampler, CFG, limit=2).prompts_sampled == 2
    assert generate_once(store, sampler, CFG).prompts_sampled == len(QUESTIONS) - 2


@pytest.mark.parametrize("pairing", ["random", "diverse", "all"])
def test_comparisons_follow_the_pairing_strategy(store, sampler, v0, prompt_ids, pairing):
    cfg = replace(CFG, pairing=pairing, max_pairs_per_prompt=2, overlap=2)
    report = generate_once(store, sampler, cfg)
    comps = comparisons(store)
    assert report.comparisons_created == len(comps) > 0
    by_id = {r.id: r for r in responses(store)}
    for prompt_id in prompt_ids:
        mine = [c for c in comps if c.prompt_id == prompt_id]
        samples = [Sample(r.text, r.finish_reason, r.token_count) for r in by_id.values() if r.prompt_id == prompt_id]
        usable = len(pairable(samples, cfg.bad_samples))
        expected = min(comb(usable, 2), 1 if pairing != "all" else cfg.max_pairs_per_prompt)
        assert len(mine) == expected
    for c in comps:
        a, b = by_id[c.response_a_id], by_id[c.response_b_id]
        assert a.prompt_id == b.prompt_id == c.prompt_id
        assert a.text != b.text
        assert c.model_version_id == v0.id and c.status == "open" and c.overlap == 2


def kind_groups(store) -> dict[int, list[int]]:
    """Each comparison's responses by position (ComparisonResponse rows)."""
    from data.models import ComparisonResponse

    with store.read() as s:
        rows = s.exec(select(ComparisonResponse).order_by(ComparisonResponse.comparison_id,
                                                         ComparisonResponse.position)).all()
    groups: dict[int, list[int]] = {}
    for row in rows:
        assert row.position == len(groups.setdefault(row.comparison_id, []))  # positions 0 .. k-1, no gap
        groups[row.comparison_id].append(row.response_id)
    return groups


def usable_of(store, prompt_id, bad_samples) -> int:
    samples = [Sample(r.text, r.finish_reason, r.token_count) for r in responses(store, prompt_id=prompt_id)]
    return len(pairable(samples, bad_samples))


@pytest.mark.parametrize("feedback", ["ranking", "rating"])
def test_rankings_and_ratings_hold_k_samples_of_one_prompt_by_position(store, sampler, v0, prompt_ids, feedback):
    cfg = replace(CFG, feedback=feedback, samples_per_prompt=4, responses_per_comparison=3, overlap=2)
    report = generate_once(store, sampler, cfg)
    comps, groups = comparisons(store), kind_groups(store)
    assert report.comparisons_created == len(comps) == len(groups) > 0
    by_id = {r.id: r for r in responses(store)}
    for prompt_id in prompt_ids:
        mine = [c for c in comps if c.prompt_id == prompt_id]
        usable = usable_of(store, prompt_id, cfg.bad_samples)
        assert len(mine) == (1 if usable >= 2 else 0)  # one comparison per prompt: one open item in the queue
        for c in mine:
            group = groups[c.id]
            assert len(group) == min(3, usable) and [c.response_a_id, c.response_b_id] == group[:2]
            assert {by_id[r].prompt_id for r in group} == {prompt_id}
            assert len({by_id[r].text for r in group}) == len(group)
            assert c.kind == feedback and c.status == "open" and c.overlap == 2 and c.margin is None


def test_thumbs_judge_each_usable_sample_alone(store, sampler, v0, prompt_ids):
    from generation.margins import MarginScorer

    cfg = replace(CFG, feedback="thumbs")
    # A margin compares two responses: a thumbs comparison gets none (and no model is loaded for it).
    report = generate_once(store, sampler, cfg, margins=MarginScorer(0.1))
    comps, groups = comparisons(store), kind_groups(store)
    assert report.comparisons_created == len(comps) == sum(usable_of(store, p, "keep") for p in prompt_ids)
    assert len({c.response_a_id for c in comps}) == len(comps)
    for c in comps:
        assert c.kind == "thumbs" and c.response_a_id == c.response_b_id and groups[c.id] == [c.response_a_id]
        assert c.margin is None and report.margin_error is None


def test_watch_counts_a_ranking_as_one_open_comparison_toward_the_queue_target(store, sampler, v0, prompt_ids):
    cfg = replace(CFG, feedback="ranking", responses_per_comparison=3, batch_size=1, queue_target=2,
                  watch_interval_s=0.05)
    report = watch_until_full(store, sampler, cfg)
    assert store.prompts.open_comparison_count() == 2 and len(kind_groups(store)) == 2
    assert report.prompts_sampled == 2 < len(QUESTIONS)


def test_a_group_that_does_not_fit_its_kind_is_refused_and_nothing_is_stored(store, v0, prompt_ids):
    two = [Sample("one", "stop", 1), Sample("two", "stop", 1)]
    for kind, group in (("pair", (0,)), ("thumbs", (0, 1)), ("ranking", (1,)), ("rating", (0, 0)), ("stars", (0, 1))):
        with pytest.raises(ValueError, match=f"{kind}"):
            store.prompts.add_samples(prompt_ids[0], v0.id, two, [group], {}, 1, kind=kind)
    assert not responses(store) and not comparisons(store)


@pytest.mark.parametrize("kind, choice, given", [("ranking", "ranked", {"ranking": [2, 1]}),
                                                 ("rating", "rated", {"ratings": {"helpfulness": [2, 4]}}),
                                                 ("thumbs", "down", {})])
def test_again_tied_leaves_out_prompts_whose_ranking_rating_or_thumbs_was_labelled(store, v0, prompt_ids, kind,
                                                                                    choice, given):
    from data.models import Label

    two = [Sample("one", "stop", 1), Sample("two", "stop", 1)]
    labelled, tied = prompt_ids[:2]
    cids = [store.prompts.add_samples(labelled, v0.id, two, [(0,) if kind == "thumbs" else (0, 1)], {}, 1,
                                      kind=kind)[0],
            store.prompts.add_samples(tied, v0.id, two, [(0, 1)], {}, 1)[0]]
    with store.write() as s:
        for cid, (label_choice, extra) in zip(cids, [(choice, given), ("tie", {})], strict=True):
            s.get(Comparison, cid).status = "done"
            s.add(Label(comparison_id=cid, annotator="ann", source="human", choice=label_choice, **extra))
    assert [p.id for p in store.prompts.to_sample(v0.id, 10, again_tied=True)] == [tied]


# -- multi-turn: labelled conversations continue ---------------------------------------------------------------------
def label_all(store, choice: str = "a") -> list[int]:
    """Every open comparison labelled `choice` by one person (overlap 1: done); their ids."""
    from data.models import Label

    with store.write() as s:
        done = list(s.exec(select(Comparison).where(Comparison.status == "open")).all())
        for c in done:
            c.status = "done"
            s.add(c)
            s.add(Label(comparison_id=c.id, annotator="ann", source="human", choice=choice))
    return [c.id for c in done]


def test_a_labelled_turn_is_continued_sampled_and_compared_up_to_continue_turns(store, sampler, v0):
    from data.models import Prompt

    store.prompts.add([QUESTIONS[0]])
    cfg = replace(CFG, continue_turns=1, follow_up="Give an example.", bad_samples="keep")
    assert generate_once(store, sampler, cfg).continuations == 0
    [labelled] = label_all(store)
    report = generate_once(store, sampler, cfg)
    assert report.continuations == 1 and report.prompts_sampled == 1 and report.comparisons_created == 1
    assert store.prompts.to_sample(v0.id, 10) == []  # the continuation was sampled in the same call
    with store.read() as s:
        second = s.exec(select(Prompt).where(Prompt.parent_comparison_id == labelled)).one()
    assert second.depth == 1 and second.messages[0]["content"] == QUESTIONS[0]
    assert second.messages[-1] == {"role": "user", "content": "Give an example."}
    [second_turn] = [c.id for c in comparisons(store) if c.status == "open"]
    assert [c.prompt_id for c in comparisons(store) if c.status == "open"] == [second.id]
    label_all(store)
    assert generate_once(store, sampler, cfg).continuations == 0  # depth 1 is as deep as continue_turns = 1
    assert generate_once(store, sampler, replace(cfg, continue_turns=0)).continuations == 0
    deeper = generate_once(store, sampler, replace(cfg, continue_turns=2))
    assert deeper.continuations == 1 and deeper.prompts_sampled == 1
    with store.read() as s:
        third = s.exec(select(Prompt).where(Prompt.parent_comparison_id == second_turn)).one()
    assert third.depth == 2 and third.messages[:len(second.messages)] == second.messages


def test_watch_continues_labelled_conversations_before_it_samples(store, sampler, v0):
    store.prompts.add([QUESTIONS[1]])
    cfg = replace(CFG, continue_turns=3, follow_up="Why?", bad_samples="keep", watch_interval_s=0.01)
    watch(store, sampler, cfg, threading.Event(), max_batches=1)
    label_all(store, "b")
    report = watch(store, sampler, cfg, threading.Event(), max_batches=1)
    assert report.continuations == 1 and report.prompts_sampled == 1
    assert "1 conversations continued" in report.summary()


def test_drop_stores_truncated_samples_but_never_pairs_them(store, sampler, v0, prompt_ids):
    cfg = replace(CFG, max_new_tokens=6, bad_samples="drop", pairing="all")  # 6 tokens truncates nearly all
    generate_once(store, sampler, cfg)
    by_id = {r.id: r for r in responses(store)}
    assert any(r.finish_reason == "length" for r in by_id.values())
    for c in comparisons(store):
        for rid in (c.response_a_id, c.response_b_id):
            assert by_id[rid].finish_reason == "stop" and by_id[rid].text


def test_long_prompts_are_recorded_as_skipped_with_a_reason(store, sampler, v0, prompt_ids):
    [long_id] = store.prompts.add(["word " * (sampler.context_length + 10)]).ids
    report = generate_once(store, sampler, CFG)
    assert list(report.skipped) == [long_id]
    assert "context" in store.prompts.get(long_id).skip_reason
    assert report.prompts_sampled == len(QUESTIONS)
    assert not responses(store, prompt_id=long_id)
    assert generate_once(store, sampler, CFG).prompts_skipped == 0  # not retried


def test_generation_without_a_deployed_version_is_a_clear_error(store, sampler, prompt_ids):
    with pytest.raises(NoDeployedVersion, match="deploy"):
        generate_once(store, sampler, CFG)


def test_deploying_with_retire_retires_the_old_versions_open_comparisons(store, sampler, v0, prompt_ids, v1_dir):
    cfg = replace(CFG, on_deploy="retire")
    generate_once(store, sampler, cfg)
    open_before = store.prompts.open_comparison_count(v0.id)
    assert open_before > 0
    store.versions.add("v1", str(v1_dir), parent_id=v0.id, round=1)
    assert store.versions.deploy("v1", retire_open=cfg.on_deploy == "retire") == open_before
    assert store.prompts.open_comparison_count() == 0
    report = generate_once(store, sampler, cfg)
    v1 = store.versions.get("v1")
    assert report.version == "v1" and report.versions_loaded == ["v1"]
    assert report.prompts_sampled == len(QUESTIONS)  # every prompt again, now on-policy for v1
    open_now = store.prompts.open_comparison_count()
    assert open_now == store.prompts.open_comparison_count(v1.id) == report.comparisons_created


def test_deploying_with_keep_leaves_the_old_versions_comparisons_open(store, sampler, v0, prompt_ids, v1_dir):
    cfg = replace(CFG, on_deploy="keep")
    generate_once(store, sampler, cfg)
    open_before = store.prompts.open_comparison_count(v0.id)
    store.versions.add("v1", str(v1_dir), parent_id=v0.id, round=1)
    assert store.versions.deploy("v1", retire_open=cfg.on_deploy == "retire") == 0
    generate_once(store, sampler, cfg)
    assert store.prompts.open_comparison_count(v0.id) == open_before
    assert store.prompts.open_comparison_count(store.versions.get("v1").id) > 0


def test_watch_picks_up_a_newly_deployed_version_and_new_responses_carry_it(store, sampler, v0, prompt_ids, v1_dir):
    cfg = replace(CFG, batch_size=2, queue_target=1000, watch_interval_s=0.01)
    v1 = store.versions.add("v1", str(v1_dir), parent_id=v0.id, round=1)

    def deploy_v1_after_first_batch(report):
        if report.batches == 1:
            store.versions.deploy("v1", retire_open=False)

    report = watch(store, sampler, cfg, threading.Event(), max_batches=2, on_batch=deploy_v1_after_first_batch)
    assert report.batches == 2
    assert report.versions_loaded[-1] == "v1" and report.version == "v1"
    assert sampler.path == str(v1_dir)
    assert len({r.prompt_id for r in responses(store, model_version_id=v0.id)}) == 2
    assert len({r.prompt_id for r in responses(store, model_version_id=v1.id)}) == 2
    by_id = {r.id: r for r in responses(store)}
    for c in comparisons(store):  # a comparison pairs responses of the version it is filed under
        assert by_id[c.response_a_id].model_version_id == by_id[c.response_b_id].model_version_id == c.model_version_id


def watch_until_full(store, sampler, cfg):
    """Run watch in a thread until the queue reaches cfg.queue_target, a few intervals more, then stop it; its
    report."""
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(report=watch(store, sampler, cfg, stop)))
    thread.start()
    deadline = time.monotonic() + 60
    while store.prompts.open_comparison_count() < cfg.queue_target and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # several watch intervals with a full queue: no more sampling
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return result["report"]


def test_watch_tops_the_queue_up_to_the_target_then_waits_until_stopped(store, sampler, v0, prompt_ids):
    cfg = replace(CFG, batch_size=4, queue_target=2, watch_interval_s=0.05, pairing="all", max_pairs_per_prompt=3)
    report = watch_until_full(store, sampler, cfg)
    assert store.prompts.open_comparison_count() >= cfg.queue_target
    assert report.prompts_sampled < len(QUESTIONS)  # it stopped once the queue was full
    assert report.prompts_sampled == len({r.prompt_id for r in responses(store)})


def test_an_idle_watch_with_a_margin_scorer_gives_open_comparisons_margins_under_the_deployed_version(
        store, sampler, v0, prompt_ids):
    from generation.margins import MarginScorer

    generate_once(store, sampler, replace(CFG, pairing="all"))  # no scorer: no margins
    assert {(c.margin, c.margin_version_id) for c in comparisons(store)} == {(None, None)}
    stop = threading.Event()
    cfg = replace(CFG, queue_target=1, watch_interval_s=0.05)  # the queue is full: nothing to sample
    thread = threading.Thread(target=watch, args=(store, sampler, cfg, stop), kwargs={"margins": MarginScorer(0.1)})
    thread.start()
    deadline = time.monotonic() + 30
    while any(c.margin is None for c in comparisons(store)) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)
    # v0 has no parent: it is its own reference, every margin 0, and nothing else was sampled
    assert {(c.margin, c.margin_version_id) for c in comparisons(store)} == {(0.0, v0.id)}
    assert len(responses(store)) == len(QUESTIONS) * CFG.samples_per_prompt


def test_watch_without_a_deployed_version_waits_and_stops_on_request(store, sampler, prompt_ids):
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    report = watch(store, sampler, replace(CFG, watch_interval_s=0.05), stop)
    assert time.monotonic() - started < 5
    assert report.batches == 0 and not responses(store)


# -- the in-server worker's status: true in every state ------------------------------------------------------------
def test_status_says_what_the_worker_does_while_running_and_after_stop(tiny_app):
    import re

    from app.services.workers import GenerationWorker

    app = tiny_app(training__auto_every=1000, generation__queue_target=10000, generation__batch_size=1)
    app.store.prompts.add([f"Say something about number {i}." for i in range(40)])
    worker = GenerationWorker(app)
    idle = worker.status()
    assert idle.startswith("Generation is stopped.") and "none starts until generation is started again" in idle
    assert worker.start() == "generation started"
    try:
        running = worker.status()
        assert re.search(r"Generation is running: sampling \d+ of 40 prompts from v0", running), running
        assert "A round starts every 1000 new labelled pairs" in running
        assert re.fullmatch(r"sampling \d+ of 40 prompts from v0", worker.sampling_note())
    finally:
        stopping = worker.stop()
    assert "Generation is stopping after the current batch" in stopping or "Generation is stopped" in stopping
    for text in (worker.status(), (worker._thread.join(60), worker.status())[1]):
        assert "Generation is stopping after the current batch" in text or "Generation is stopped" in text
        assert "A round starts" not in text and "until generation is started again (then one every 1000" in text
    assert not worker.running and worker.sampling_note() == ""
    assert worker.status().startswith("Generation is stopped.")


def test_status_with_automatic_rounds_off_or_paused_and_a_finished_backlog(tiny_app, round_launches):
    from conftest import add_labelled_pairs, short_long_pairs

    from app.services import rounds
    from app.services.workers import GenerationWorker, sampling_progress

    off = GenerationWorker(tiny_app("off"))
    assert "Automatic rounds are off (training.auto_every = 0)" in off.status()
    app = tiny_app("paused", training__auto_every=2, training__min_pairs=2, training__eval_fraction=0,
                   training__auto_max_failures=1, generation__queue_target=10000)
    add_labelled_pairs(app.store, app.store.versions.get("v0").id, short_long_pairs(4))
    run_id = rounds.maybe_auto_round(app)
    assert run_id is not None
    app.store.runs.finish(run_id, "failed", error="out of memory")
    progress = sampling_progress(app)  # the labelled pairs' 4 prompts
    assert progress.total == 4 and progress.version == "v0"
    worker = GenerationWorker(app)
    worker.start()
    try:
        text = worker.status()
        assert "Automatic rounds are paused" in text and "out of memory" in text and "A round starts" not in text
    finally:
        worker.stop(wait=60)
    assert replace(progress, sampled=1).text() == "sampling 1 of 4 prompts from v0"
    full = replace(progress, sampled=1, open=10000, target=10000)
    assert not full.sampling and full.text().startswith("waiting while the queue is full")
    done = replace(progress, sampled=4, open=0)
    assert done.text() == "all 4 prompts are sampled from v0; new prompts are sampled as they are imported"
