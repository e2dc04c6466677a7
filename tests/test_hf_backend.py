"""The transformers backend on the real offline tiny model: batched sampling, seeds, skips, errors, swaps."""

import time
from dataclasses import replace

import pytest

from generation.backend import ModelLoadError, SkipReason
from generation.backends import load_backend
from generation.chat_prompt import encode_prompt
from generation.config import SamplingConfig
from generation.hf_backend import HFBackend, left_pad, run_adaptive, sample_next
from generation.weights import reference_logprobs, token_logprobs

CFG = SamplingConfig(samples_per_prompt=3, max_new_tokens=24, batch_size=4, seed=0)
PROMPTS = [
    [{"role": "user", "content": "What does json.dumps do?"}],
    [{"role": "user", "content": "Explain collections.Counter."}],
    [{"role": "system", "content": "You are a helpful assistant that explains Python."},
     {"role": "user", "content": "Briefly, what does os.path.join do?"}],
]



@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    b = load_backend("hf", str(tiny_model_dir), device="cpu")
    yield b
    b.close()



def test_batched_generation_returns_n_samples_per_prompt_with_token_counts_and_finish_reasons(backend):
    results = backend.generate(PROMPTS, 3, CFG)
    assert len(results) == len(PROMPTS)
    for samples in results:
        assert len(samples) == 3
        for sample in samples:
            assert sample.finish_reason in ("stop", "length")
            assert 1 <= sample.token_count <= CFG.max_new_tokens
            assert sample.text == sample.text.strip()
            if sample.finish_reason == "length":
                assert sample.token_count == CFG.max_new_tokens
    assert any(s.text for samples in results for s in samples)


def test_a_sample_that_stops_counts_its_eos_token(backend):
    cfg = SamplingConfig(samples_per_prompt=4, max_new_tokens=96, seed=1)
    stopped = [s for samples in backend.generate(PROMPTS, 4, cfg) for s in samples if s.finish_reason == "stop"]
    assert stopped, "the warmed-up tiny model ends most answers well before 96 tokens"
    tokenizer = backend.current.tokenizer
    for sample in stopped:
        # The text's own tokens plus the EOS token (re-encoding may merge a token or two differently).
        assert abs(sample.token_count - (len(tokenizer(sample.text, add_special_tokens=False)["input_ids"]) + 1)) <= 2


def test_same_seed_repeats_a_run_and_another_seed_differs(backend):
    first = backend.generate(PROMPTS, 3, CFG)
    again = backend.generate(PROMPTS, 3, CFG)
    other = backend.generate(PROMPTS, 3, replace(CFG, seed=7))
    assert first == again
    assert first != other


def test_the_batched_sampler_matches_transformers_greedy_generate_at_near_zero_temperature(backend):
    """Left padding, positions, the shared prefill and dropping finished rows all leave the model's output intact."""
    import torch

    loaded = backend.current
    greedy = SamplingConfig(max_new_tokens=40, temperature=1e-6, top_p=1.0)
    mine = backend.generate(PROMPTS, 2, greedy)
    input_ids, mask = left_pad([encode_prompt(loaded.tokenizer, p) for p in PROMPTS], loaded.tokenizer.pad_token_id)
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False, max_new_tokens=40,
                                    pad_token_id=loaded.tokenizer.pad_token_id)
    for k, samples in enumerate(mine):
        row = out[k, input_ids.shape[1]:].tolist()
        eos = loaded.tokenizer.eos_token_id
        end = row.index(eos) if eos in row else len(row)
        expected = loaded.tokenizer.decode(row[:end], skip_special_tokens=True).strip()
        assert [s.text for s in samples] == [expected, expected]
        assert samples[0].token_count == (end + 1 if end < len(row) else len(row))


@pytest.mark.parametrize("candidates", [2, 64])
def test_sample_next_draws_from_the_top_p_nucleus_in_proportion(candidates):
    import torch

    probs = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02])
    logits = probs.log().repeat(20000, 1)
    generator = torch.Generator().manual_seed(0)
    drawn = sample_next(logits, 1.0, 0.75, generator, candidates=candidates)
    counts = torch.bincount(drawn, minlength=len(probs)).float() / len(drawn)
    nucleus = probs[:3] / probs[:3].sum()  # 0.4 + 0.25 < 0.75 <= 0.4 + 0.25 + 0.15
    assert counts[3:].sum() == 0
    assert torch.allclose(counts[:3], nucleus, atol=0.015)


def test_a_prompt_longer_than_the_context_is_skipped_with_a_reason(backend):
    long_prompt = [{"role": "user", "content": "word " * (backend.context_length + 50)}]
    results = backend.generate([PROMPTS[0], long_prompt, PROMPTS[1]], 2, CFG)
    assert isinstance(results[1], SkipReason)
    assert "context" in results[1].reason and str(backend.context_length) in results[1].reason
    assert len(results[0]) == 2 and len(results[2]) == 2


def test_a_prompt_that_only_fits_without_the_response_is_skipped(backend):
    cfg = SamplingConfig(max_new_tokens=backend.context_length)  # any prompt + this many tokens is too long
    assert isinstance(backend.generate(PROMPTS[:1], 2, cfg)[0], SkipReason)


def test_an_unknown_hub_id_offline_fails_fast_with_a_clear_error():
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as error:
        HFBackend("prefloop-tests/no-such-model-anywhere", device="cpu")
    assert time.perf_counter() - started < 10
    message = str(error.value)
    assert "prefloop-tests/no-such-model-anywhere" in message
    assert "prefloop tiny-model DIR" in message and "model.base" in message


def test_a_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no folder"):
        HFBackend(str(tmp_path / "nothing-here"), device="cpu")


def test_load_version_swaps_to_another_model_in_place_and_changes_outputs(tiny_model_dir, v1_dir):
    b = HFBackend(str(tiny_model_dir), device="cpu")
    before = b.generate(PROMPTS, 3, CFG)
    b.load_version(str(v1_dir))
    assert b.path == str(v1_dir)
    after = b.generate(PROMPTS, 3, CFG)
    assert after != before
    b.load_version(str(tiny_model_dir))  # and back: the same seed gives the first outputs again
    assert b.generate(PROMPTS, 3, CFG) == before
    b.close()


def test_a_failed_swap_keeps_serving_the_old_version(backend, tmp_path):
    before = backend.generate(PROMPTS[:1], 2, CFG)
    with pytest.raises(ModelLoadError):
        backend.load_version(str(tmp_path / "missing"))
    assert backend.generate(PROMPTS[:1], 2, CFG) == before


def test_out_of_memory_halves_the_batch_and_retries():
    import torch

    seen = []

    def run(chunk):
        seen.append(len(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in chunk]

    results, size = run_adaptive(list(range(8)), 8, run)
    assert results == [x * 10 for x in range(8)]
    assert size == 2
    assert seen[:3] == [8, 4, 2]


def test_errors_other_than_out_of_memory_are_not_retried():
    def run(chunk):
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        run_adaptive([1, 2, 3], 2, run)


def test_reference_logprobs_agree_with_the_models_own_loss(backend, tiny_model_dir):
    import torch

    loaded = backend.current
    ids = loaded.tokenizer(loaded.tokenizer.apply_chat_template(
        PROMPTS[0] + [{"role": "assistant", "content": "It serializes an object to JSON."}], tokenize=False),
        add_special_tokens=False)["input_ids"]
    [logprobs] = reference_logprobs(str(tiny_model_dir), [ids], device="cpu")
    assert logprobs == pytest.approx(token_logprobs(loaded.model, [ids])[0], abs=1e-5)
    with torch.no_grad():
        loss = loaded.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert -sum(logprobs) / len(logprobs) == pytest.approx(loss, abs=1e-4)


@pytest.mark.slow
def test_a_lora_adapter_folder_is_served_merged_into_its_base(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # Random A and B (not the usual zero B) so the adapter changes the model's outputs.
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    b = HFBackend(str(tiny_model_dir), device="cpu")
    before = b.generate(PROMPTS, 2, CFG)
    b.load_version(str(tmp_path / "adapter"))
    assert b.generate(PROMPTS, 2, CFG) != before
    b.close()
