"""The vLLM backend on a GPU with the real tiny model (skipped without vllm or CUDA); the live-weights check's
arithmetic is tested everywhere."""


import pytest

from generation.backend import SkipReason
from generation.config import SamplingConfig
from generation.vllm_backend import WeightsNotLive, check_logprobs

CFG = SamplingConfig(samples_per_prompt=3, max_new_tokens=32, seed=0)
PROMPTS = [
    [{"role": "user", "content": "What does json.dumps do?"}],
    [{"role": "user", "content": "Explain collections.Counter."}],
]


def test_the_live_weights_check_passes_within_tolerance():
    expected = [[-1.0, -2.0, -0.5], [-3.0]]
    live = [[-1.01, -1.98, -0.52], [-3.01]]
    assert check_logprobs(live, expected, 0.05, "loading v1") == pytest.approx(0.015)


def test_the_live_weights_check_raises_when_the_engine_serves_other_weights():
    expected = [[-1.0, -2.0, -0.5], [-3.0]]
    stale = [[-1.4, -1.2, -0.9], [-2.1]]
    with pytest.raises(WeightsNotLive, match="not live"):
        check_logprobs(stale, expected, 0.05, "loading v1")



@pytest.fixture(scope="module")
def vllm_backend(tiny_model_dir):
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("the vllm backend needs CUDA")
    from generation.vllm_backend import VLLMBackend

    # float32 keeps vLLM's and transformers' log-probs close enough for a tight probe tolerance.
    backend = VLLMBackend(str(tiny_model_dir), dtype="float32", gpu_memory_utilization=0.3, max_model_len=512,
                          enforce_eager=True, probe_tolerance=0.02)
    yield backend
    backend.close()



@pytest.fixture
def on_v0(vllm_backend, tiny_model_dir):
    vllm_backend.load_version(str(tiny_model_dir))
    return vllm_backend


@pytest.mark.gpu
def test_generate_returns_n_samples_per_prompt_with_counts_and_finish_reasons(on_v0):
    results = on_v0.generate(PROMPTS, 3, CFG)
    for samples in results:
        assert len(samples) == 3
        for s in samples:
            assert s.finish_reason in ("stop", "length") and 1 <= s.token_count <= CFG.max_new_tokens
            if s.finish_reason == "length":
                assert s.token_count == CFG.max_new_tokens
    assert on_v0.generate(PROMPTS, 3, CFG) == results  # seeded per prompt


@pytest.mark.gpu
def test_a_prompt_longer_than_the_context_is_skipped(on_v0):
    long_prompt = [{"role": "user", "content": "word " * (on_v0.context_length + 10)}]
    results = on_v0.generate([long_prompt, PROMPTS[0]], 2, CFG)
    assert isinstance(results[0], SkipReason) and len(results[1]) == 2


@pytest.mark.gpu
def test_a_full_weight_swap_changes_outputs_and_the_new_weights_are_live(on_v0, tiny_model_dir, v1_dir):
    from generation.hf_backend import reference_logprobs

    before = on_v0.generate(PROMPTS, 3, CFG)
    on_v0.load_version(str(v1_dir))  # raises WeightsNotLive if the engine still served v0
    assert on_v0.path == str(v1_dir)
    assert on_v0.generate(PROMPTS, 3, CFG) != before
    probes = on_v0.probe_ids()
    live = on_v0.live_logprobs(probes)
    check_logprobs(live, reference_logprobs(str(v1_dir), probes, device="cuda", dtype="float32"), 0.02, "v1")
    with pytest.raises(WeightsNotLive):  # the check can tell the versions apart
        check_logprobs(live, reference_logprobs(str(tiny_model_dir), probes, device="cuda", dtype="float32"),
                       0.02, "v0")
    on_v0.load_version(str(tiny_model_dir))
    assert on_v0.generate(PROMPTS, 3, CFG) == before


@pytest.mark.gpu
@pytest.mark.parametrize("level", [1, 2])
def test_sleep_frees_the_gpu_and_wake_serves_the_same_weights(on_v0, level):
    import torch

    before = on_v0.generate(PROMPTS, 2, CFG)
    free_awake = torch.cuda.mem_get_info()[0]
    on_v0.sleep(level)
    assert on_v0.sleeping
    assert torch.cuda.mem_get_info()[0] > free_awake
    with pytest.raises(RuntimeError, match="asleep"):
        on_v0.generate(PROMPTS, 2, CFG)
    on_v0.wake()  # checks the probes against the saved model again
    assert not on_v0.sleeping
    assert on_v0.generate(PROMPTS, 2, CFG) == before


@pytest.mark.gpu
def test_a_lora_adapter_version_is_served_with_a_lora_request(on_v0, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "adapter")
    before = on_v0.generate(PROMPTS, 2, CFG)
    on_v0.load_version(str(tmp_path / "adapter"))  # verified against transformers + peft inside
    assert on_v0.generate(PROMPTS, 2, CFG) != before
