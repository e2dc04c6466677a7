"""Proof that the loop learns: generate -> label (a programmatic annotator, through the same service calls
the UI makes) -> train -> deploy -> generate, three rounds on CPU with the tiny model.

Rule "prefer the shorter answer": mean held-out response length must fall at least 30% below round 0's with
an EOS rate of at least 0.95. Rule "prefer more ' the '": the word's rate per 100 characters must at least double
(a rate, so that getting longer cannot pass it; the lengths are reported beside it). A control annotator flipping
coins must reach neither. The 'the' rule and the control run once with DPO rounds and once with KTO rounds
(training.method = "kto", the same pairwise labels as desirable/undesirable examples), on the same settings; and
once more as thumbs (generation.feedback = "thumbs"): each sample alone judged good when it says 'the', KTO rounds
on those thumbs, against a control giving thumbs by coin."""

import random

import pytest

from app.services import labelling, workers
from app.services import rounds as training_rounds
from app.services import versions as model_versions
from data.queue import choice_from_side
from generation.backends import load_backend
from generation.config import SamplingConfig
from generation.tiny_model import CORPUS_MODULES, LONG_QUESTIONS, SHORT_QUESTIONS, SYSTEM_PROMPT
from training.evaluate import probe_backend

ROUNDS = 3
SETTINGS = {
    "training.learning_rate": "5e-4", "training.beta": "0.1", "training.max_steps": "8", "training.batch_size": "8",
    "training.min_pairs": "8", "training.probe_prompts": "0", "training.eval_fraction": "0.1",
    "generation.max_new_tokens": "48", "generation.pairing": "diverse", "generation.bad_samples": "drop",
    "model.device": "cpu",
}


# KTO needs no override of these: with the same learning rate and steps it moves the 'the' rate as far as DPO does
# (1.34 -> 3.84 per 100 chars in three rounds where the bar is 2x, 60 -> 71 chars), so both methods are held to the same
# criteria. A higher rate is no help: at 1e-3 KTO runs away in length (60 -> 183 chars, EOS rate 0.46).
METHODS = ["dpo", "kto"]


def loop_app(tiny_app, name: str, **extra: str):
    """A workdir on the tiny model with SETTINGS (and `extra`, dotted names) applied."""
    return tiny_app(name, **{k.replace(".", "__"): v for k, v in {**SETTINGS, **extra}.items()})


def chat(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def questions() -> tuple[list[str], list[str]]:
    """(held-out, training) prompts: the held-out ones are never imported, so never sampled or trained on."""
    qs = [q.format(name=m) for m in CORPUS_MODULES for q in LONG_QUESTIONS + SHORT_QUESTIONS]
    random.Random(0).shuffle(qs)
    return qs[:24], qs[24:120]


def held_out_metrics(app, held: list[str]) -> dict:
    params = SamplingConfig(samples_per_prompt=4, temperature=0.8, top_p=0.95, max_new_tokens=48, seed=1,
                            batch_size=24)
    with load_backend("hf", app.store.versions.deployed().path, device="cpu") as backend:
        result = probe_backend(backend, [chat(q) for q in held], 4, params)
    texts = [t for per_prompt in result.texts for t in per_prompt]
    the_rate = 100 * sum(map(the_count, texts)) / max(1, sum(map(len, texts)))
    return {**result.as_dict(), "the_per_100_chars": the_rate}


def the_count(text: str) -> int:
    """How often the word 'the' stands in `text` (any case)."""
    return f" {text.lower()} ".count(" the ")


def label_everything(app, annotator: str, prefer) -> int:
    """Label the queue as the UI does: next_for -> look at left/right -> submit the side clicked."""
    n = 0
    while (item := labelling.next_for(app, annotator)) is not None:
        side = prefer(item.left_text, item.right_text)
        labelling.label(app, annotator, item.comparison_id, item.shown_order,
                        choice=choice_from_side(side, item.shown_order), time_spent_s=0.1)
        n += 1
    return n


def thumbs_everything(app, annotator: str, good) -> int:
    """Give every thumbs comparison of the queue a thumb as the UI does: up when `good(response)`, else down."""
    n = 0
    while (item := labelling.next_for(app, annotator)) is not None:
        assert item.kind == "thumbs" and len(item.responses) == 1
        labelling.label(app, annotator, item.comparison_id, item.shown_order,
                        choice="up" if good(item.responses[0].text) else "down", time_spent_s=0.1)
        n += 1
    return n


def run_loop(app, prefer, label=label_everything) -> list[dict]:
    held, train = questions()
    app.store.prompts.add([chat(q) for q in train], source="loop")
    history = [held_out_metrics(app, held)]
    for _ in range(ROUNDS):
        report = workers.generate(app)
        assert report.comparisons_created > 0
        assert label(app, "rule-bot", prefer) == report.comparisons_created
        run_id = training_rounds.start_round(app, deploy=True, inline=True)
        status = training_rounds.round_status(app, run_id)
        assert status["status"] == "done", status["error"]
        history.append(held_out_metrics(app, held))
    return history


def shorter(left: str, right: str) -> str:
    return "left" if len(left) <= len(right) else "right"


def passes(history: list[dict]) -> bool:
    first, last = history[0], history[-1]
    return last["mean_chars"] <= 0.7 * first["mean_chars"] and last["eos_rate"] >= 0.95


def more_the(left: str, right: str) -> str:
    return "left" if the_count(left) >= the_count(right) else "right"


def passes_the(history: list[dict]) -> bool:
    return history[-1]["the_per_100_chars"] >= 2 * history[0]["the_per_100_chars"]


def trace(history: list[dict]) -> str:
    """Per round (0 = before any): the rate of 'the' per 100 chars and the mean length, for failure messages."""
    return ", ".join(f"{h['the_per_100_chars']:.2f}/100 chars at {h['mean_chars']:.0f} chars" for h in history)


@pytest.mark.slow
def test_three_rounds_preferring_shorter_answers_make_answers_shorter(tiny_app):
    app = loop_app(tiny_app, "rule")
    history = run_loop(app, shorter)
    chars = [round(h["mean_chars"], 1) for h in history]
    tokens = [round(h["mean_tokens"], 1) for h in history]
    assert passes(history), f"mean chars per round {chars}, tokens {tokens}, eos {history[-1]['eos_rate']}"
    assert history[-1]["mean_tokens"] <= 0.8 * history[0]["mean_tokens"], tokens
    # the lineage: v0 <- v1 <- v2 <- v3, the last one deployed
    versions = model_versions.list_versions(app)
    assert [(v["name"], v["parent"], v["round"]) for v in versions] == [
        ("v0", None, 0), ("v1", "v0", 1), ("v2", "v1", 2), ("v3", "v2", 3)]
    assert versions[-1]["deployed"]
    # truncated samples never enter pairs (generation.bad_samples='drop'): TRL would append an EOS to them,
    # teaching the model to stop where max_new_tokens cut it off
    assert truncated_in_trained_pairs(app) == 0


def truncated_in_trained_pairs(app) -> int:
    from sqlmodel import col, select

    from data.models import Comparison, Response

    ids = {cid for run in app.store.runs.all() for cid in run.comparison_ids}
    with app.store.read() as s:
        comps = s.exec(select(Comparison).where(col(Comparison.id).in_(ids))).all()
        response_ids = {c.response_a_id for c in comps} | {c.response_b_id for c in comps}
        reasons = s.exec(select(Response.finish_reason).where(col(Response.id).in_(response_ids))).all()
    return sum(r == "length" for r in reasons)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_coin_flip_preferences_do_not_pass_the_threshold(tiny_app, method):
    app = loop_app(tiny_app, "coin", **{"training.method": method})
    coin = random.Random(7)
    history = run_loop(app, lambda left, right: coin.choice(["left", "right"]))
    print(method, trace(history))  # how far from each bar, in the report of `pytest -rA`
    assert not passes(history), [round(h["mean_chars"], 1) for h in history]
    assert not passes_the(history), trace(history)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_three_rounds_preferring_more_the_raise_its_rate_not_just_the_length(tiny_app, method):
    app = loop_app(tiny_app, "the", **{"training.method": method})
    history = run_loop(app, more_the)
    print(method, trace(history))  # how far above the bar, in the report of `pytest -rA`
    assert [run.report["train"]["method"] for run in app.store.runs.all()] == [method] * ROUNDS
    assert passes_the(history), trace(history)
    assert history[-1]["mean_chars"] <= 1.5 * history[0]["mean_chars"], trace(history)  # no runaway length


@pytest.mark.slow
def test_with_bad_samples_kept_truncated_samples_do_enter_pairs(tiny_app):
    """The other choice, for contrast: with 'keep', truncated samples are paired (and would be trained on)."""
    app = tiny_app("keep", **{"generation__max_new_tokens": "6", "generation__bad_samples": "keep",
                              "model__device": "cpu"})
    held, train = questions()
    app.store.prompts.add([chat(q) for q in train[:16]], source="loop")
    workers.generate(app)
    label_everything(app, "rule-bot", shorter)
    run_id = training_rounds.start_round(app, inline=True)
    assert truncated_in_trained_pairs(app) > 0, training_rounds.round_status(app, run_id)["error"]


THUMBS = {"generation.feedback": "thumbs", "training.method": "kto"}


def says_the(text: str) -> bool:
    return the_count(text) >= 1


@pytest.mark.slow
def test_kto_rounds_on_thumbs_for_saying_the_raise_its_rate(tiny_app):
    app = loop_app(tiny_app, "thumbs", **THUMBS)
    history = run_loop(app, says_the, label=thumbs_everything)
    print("thumbs", trace(history))
    assert [run.report["train"]["method"] for run in app.store.runs.all()] == ["kto"] * ROUNDS
    assert passes_the(history), trace(history)
    assert history[-1]["mean_chars"] <= 1.5 * history[0]["mean_chars"], trace(history)


@pytest.mark.slow
def test_kto_rounds_on_coin_flip_thumbs_do_not_pass_the_threshold(tiny_app):
    app = loop_app(tiny_app, "thumbs-coin", **THUMBS)
    coin = random.Random(7)
    history = run_loop(app, lambda text: coin.random() < 0.5, label=thumbs_everything)
    print("thumbs coin", trace(history))
    assert not passes(history), [round(h["mean_chars"], 1) for h in history]
    assert not passes_the(history), trace(history)
