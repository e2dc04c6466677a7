"""Implicit reward margins on the real tiny model: what the sampling worker stores on each comparison equals beta *
[log pi/pi_ref(A) - log pi/pi_ref(B)] recomputed with plain transformers; 0 under a version without a parent; only
with labelling.priority = uncertainty; the sampling pass's log-probs are the model's own (not the tempered ones);
open comparisons made before a deploy are rescored while the worker is idle."""

import threading
import time

import pytest
from sqlmodel import select

from app.services import workers
from data.models import Comparison, Response
from generation.backends import load_backend
from generation.config import SamplingConfig
from generation.margins import MarginScorer
from generation.weights import token_logprobs
from generation.worker import generate_once, watch

CFG = SamplingConfig(samples_per_prompt=3, max_new_tokens=16, batch_size=4, seed=0, temperature=0.8, top_p=0.9,
                     pairing="all", bad_samples="keep")
QUESTIONS = ["What does json.dumps do?", "Explain collections.Counter.", "What is pathlib.Path for?"]
BETA = 0.1


@pytest.fixture(scope="module")
def models(tiny_model_dir, v1_dir):
    """Plain transformers copies of v0 and v1 and the tokenizer: the independent side of the comparison."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    load = AutoModelForCausalLM.from_pretrained
    return {"v0": load(tiny_model_dir).eval(), "v1": load(v1_dir).eval(),
            "tokenizer": AutoTokenizer.from_pretrained(tiny_model_dir)}


@pytest.fixture
def lineage(store, tiny_model_dir, v1_dir):
    """v0, and v1 trained from it (its reference); the prompts."""
    v0 = store.versions.add("v0", str(tiny_model_dir))
    v1 = store.versions.add("v1", str(v1_dir), parent_id=v0.id, round=1, config={"reference": "parent"})
    store.prompts.add(QUESTIONS, source="test")
    return v0, v1


def comparisons(store) -> list[tuple[Comparison, str, str, list[dict]]]:
    from data.models import Prompt

    with store.read() as s:
        out = []
        for c in s.exec(select(Comparison).order_by(Comparison.id)).all():
            a, b = s.get(Response, c.response_a_id).text, s.get(Response, c.response_b_id).text
            out.append((c, a, b, s.get(Prompt, c.prompt_id).messages))
        return out


def response_logp(model, tokenizer, messages: list[dict], text: str) -> float:
    """log p(response | prompt) as a DPO trainer scores a conversational pair, in plain transformers."""
    import torch

    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": text}], tokenize=False)
    start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    return float(logps.gather(1, ids[0, 1:, None])[start - 1:].sum())


def test_the_stored_margin_is_beta_times_the_difference_of_log_ratios_recomputed_with_transformers(
        store, lineage, models, v1_dir):
    _v0, v1 = lineage
    store.versions.deploy("v1")
    scorer = MarginScorer(BETA, device="cpu")
    with load_backend("hf", str(v1_dir), device="cpu") as backend:
        report = generate_once(store, backend, CFG, margins=scorer)
    rows = comparisons(store)
    assert report.comparisons_created == len(rows) >= len(QUESTIONS)
    assert scorer.used["sampling pass"] > 0  # most policy log-probs came from sampling, not another forward pass
    tok = models["tokenizer"]
    for c, a, b, messages in rows:
        ratio = {t: response_logp(models["v1"], tok, messages, t) - response_logp(models["v0"], tok, messages, t)
                 for t in (a, b)}
        assert c.margin_version_id == v1.id
        assert c.margin == pytest.approx(BETA * (ratio[a] - ratio[b]), abs=1e-4), (a, b)
    assert any(abs(c.margin) > 1e-3 for c, *_ in rows)  # v1 differs from v0: not all zero


def test_a_version_without_a_parent_gives_every_comparison_a_margin_of_zero(store, lineage, tiny_model_dir):
    v0, _v1 = lineage
    store.versions.deploy("v0")
    with load_backend("hf", str(tiny_model_dir), device="cpu") as backend:
        generate_once(store, backend, CFG, margins=MarginScorer(BETA))
    assert {(c.margin, c.margin_version_id) for c, *_ in comparisons(store)} == {(0.0, v0.id)}


@pytest.mark.parametrize("kind", ["hf", "vllm"])
def test_sampled_log_probs_are_the_models_own_not_the_tempered_ones(kind, tiny_model_dir, monkeypatch):
    import torch
    from vllm_standin import Engines

    if kind == "vllm":
        Engines().install(monkeypatch)
    with load_backend(kind, str(tiny_model_dir), dtype="float32") as backend:
        tokenizer = backend.current.tokenizer if kind == "hf" else backend.tokenizer
        chats = [[{"role": "user", "content": q}] for q in QUESTIONS[:2]]
        results = backend.generate(chats, 2, CFG, logprobs=True)
        plain = backend.generate(chats, 2, CFG)
    from transformers import AutoModelForCausalLM

    from generation.chat_prompt import encode_prompt

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for chat, samples, same in zip(chats, results, plain, strict=True):
        assert [s.text for s in samples] == [s.text for s in same]  # asking for log-probs changes no sample
        prompt = encode_prompt(tokenizer, chat)
        for s in samples:
            expected = sum(token_logprobs(model, [prompt + s.token_ids])[0][len(prompt) - 1:])
            assert s.logprob == pytest.approx(expected, abs=1e-3)
            assert s.token_ids[-1] == tokenizer.eos_token_id or s.finish_reason == "length"
    assert all(s.token_ids is None and s.logprob is None for samples in plain for s in samples)


def test_margins_are_computed_only_with_priority_uncertainty(tiny_app):
    for priority, scored in (("fifo", False), ("uncertainty", True)):
        app = tiny_app(priority, labelling__priority=priority, generation__bad_samples="keep")
        app.store.prompts.add(QUESTIONS[:2], source="test")
        assert (workers.margin_scorer(app) is not None) == scored
        workers.generate(app)
        margins = {c.margin for c, *_ in comparisons(app.store)}
        assert margins == ({0.0} if scored else {None}), priority  # v0 has no parent: 0


def test_the_idle_worker_rescores_open_comparisons_made_under_the_previous_version(store, lineage, tiny_model_dir,
                                                                                  models):
    v0, v1 = lineage
    store.versions.deploy("v0")
    scorer = MarginScorer(BETA)
    with load_backend("hf", str(tiny_model_dir), device="cpu") as backend:
        generate_once(store, backend, CFG, margins=scorer)
        store.versions.deploy("v1", retire_open=False)  # generation.on_deploy = keep: they stay open
        stop = threading.Event()
        cfg = SamplingConfig(**{**CFG.__dict__, "queue_target": 1, "watch_interval_s": 0.05})
        thread = threading.Thread(target=watch, args=(store, backend, cfg, stop), kwargs={"margins": scorer})
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while {c.margin_version_id for c, *_ in comparisons(store)} != {v1.id} and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            thread.join(60)
    tok = models["tokenizer"]
    rows = comparisons(store)
    assert {c.margin_version_id for c, *_ in rows} == {v1.id}
    c, a, b, messages = rows[0]
    ratio = {t: response_logp(models["v1"], tok, messages, t) - response_logp(models["v0"], tok, messages, t)
             for t in (a, b)}
    assert c.margin == pytest.approx(BETA * (ratio[a] - ratio[b]), abs=1e-4)


def test_the_reference_model_is_loaded_once_and_freed_on_sleep_and_when_the_deployed_version_changes(
        store, lineage, v1_dir, tiny_model_dir):
    v0, v1 = lineage
    store.versions.deploy("v1")
    scorer = MarginScorer(BETA)
    assert scorer.loaded == {}  # nothing until a margin needs it
    with load_backend("hf", str(v1_dir), device="cpu") as backend:
        generate_once(store, backend, CFG, limit=1, margins=scorer)
        assert scorer.loaded == {"reference": str(tiny_model_dir)}  # v1's parent; the policy is the backend's
        sleeper = scorer.sleeping_with(backend)
        sleeper.sleep()  # a round takes the device: the reference goes with the backend's weights
        assert scorer.loaded == {} and backend.sleeping
        sleeper.wake()
        generate_once(store, backend, CFG, limit=1, margins=scorer)
        assert scorer.loaded == {"reference": str(tiny_model_dir)}
        store.versions.deploy("v0", retire_open=False)
        generate_once(store, backend, CFG, limit=1, margins=scorer)
        assert scorer.loaded == {}  # v0 has no reference: the one held is freed


def test_with_a_remote_backend_the_policy_is_scored_by_a_transformers_copy_of_the_lora_version(
        store, tiny_model_dir, tmp_path, models):
    import torch
    from peft import LoraConfig, get_peft_model
    from test_remote_backend import StandInVLLM
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # it changes the outputs
    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora)
    adapter.save_pretrained(tmp_path / "v1")
    policy = adapter.merge_and_unload().eval()
    v0 = store.versions.add("v0", str(tiny_model_dir))
    v1 = store.versions.add("v1", str(tmp_path / "v1"), parent_id=v0.id, kind="lora", config={"lora": True})
    store.versions.deploy("v1")
    store.prompts.add(QUESTIONS[:2], source="test")
    server = StandInVLLM(str(tiny_model_dir), eos_id=models["tokenizer"].eos_token_id)
    scorer = MarginScorer(BETA)
    try:
        with load_backend("remote", str(tmp_path / "v1"), url=server.url) as backend:
            generate_once(store, backend, CFG, margins=scorer)
    finally:
        server.close()
    assert scorer.loaded == {"reference": str(tiny_model_dir), "policy": str(tmp_path / "v1")}
    tok = models["tokenizer"]
    rows = comparisons(store)
    assert rows
    for c, a, b, messages in rows:
        ratio = {t: response_logp(policy, tok, messages, t) - response_logp(models["v0"], tok, messages, t)
                 for t in (a, b)}
        assert (c.margin_version_id, c.margin) == (v1.id, pytest.approx(BETA * (ratio[a] - ratio[b]), abs=1e-4))
