"""The vLLM backend on a GPU with the real tiny model (skipped without vllm or CUDA); everywhere, the live-weights
check's arithmetic and, against a stand-in for vllm's documented LLM API, how the engine is built."""

import sys
import types
from dataclasses import dataclass

import pytest

from generation.backend import ModelLoadError, SkipReason
from generation.backends import load_backend
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



# -- how the engine is built, against a stand-in for vllm (CPU) ------------------------------------------------------
@dataclass(frozen=True)
class StandInLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


class StandInEngines:
    """A stand-in for the vllm package: vllm.LLM's documented constructor and weight calls, and LoRARequest. It
    serves nothing; `built` holds the keyword arguments of each LLM made. With `refuse` set, making one fails
    after it is noted, as vLLM does on a machine without a GPU."""

    def __init__(self):
        self.built: list[dict] = []
        self.refuse = False

    def module(self) -> types.ModuleType:
        engines = self

        class LLM:
            def __init__(self, model: str, **settings):
                engines.built.append({"model": model, **settings})
                if engines.refuse:
                    raise ValueError("the stand-in engine has no GPU")
                config = types.SimpleNamespace(max_model_len=settings.get("max_model_len", 2048), dtype="float32")
                self.llm_engine = types.SimpleNamespace(model_config=config)

            def sleep(self, level: int = 1) -> None: ...

            def wake_up(self, tags: list[str] | None = None) -> None: ...

            def reset_prefix_cache(self) -> None: ...

            def collective_rpc(self, method: str, kwargs: dict | None = None) -> None: ...

        vllm = types.ModuleType("vllm")
        vllm.LLM = LLM
        return vllm


@pytest.fixture
def engines(monkeypatch) -> StandInEngines:
    stand_in = StandInEngines()
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = StandInLoRARequest
    monkeypatch.setitem(sys.modules, "vllm", stand_in.module())
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    return stand_in


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A real LoRA adapter folder on the tiny model (saved without a tokenizer: it uses its base's)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    folder = tmp_path_factory.mktemp("adapter")
    adapter.save_pretrained(folder)
    return folder


def test_a_full_weight_model_starts_the_engine_without_lora_and_with_the_engine_settings(engines, tiny_model_dir):
    backend = load_backend("vllm", str(tiny_model_dir), dtype="float32", gpu_memory_utilization=0.3,
                           tensor_parallel_size=2, max_model_len=512, verify=False)
    [built] = engines.built
    assert built["model"] == str(tiny_model_dir) and built["enable_lora"] is False
    assert "max_lora_rank" not in built  # a LoRA setting only where LoRA is on
    assert (built["tensor_parallel_size"], built["max_model_len"], built["gpu_memory_utilization"]) == (2, 512, 0.3)
    assert backend.context_length == 512
    backend.close()


def test_max_model_len_zero_leaves_the_context_length_to_the_model(engines, tiny_model_dir):
    load_backend("vllm", str(tiny_model_dir), max_model_len=0, verify=False).close()
    assert "max_model_len" not in engines.built[0]
    assert engines.built[0]["tensor_parallel_size"] == 1


def test_serving_an_adapter_from_the_start_turns_lora_on(engines, tiny_model_dir, adapter_dir):
    backend = load_backend("vllm", str(adapter_dir), verify=False)
    [built] = engines.built
    assert built["model"] == str(tiny_model_dir) and built["enable_lora"] is True and built["max_lora_rank"] == 64
    assert backend.path == str(adapter_dir)
    backend.close()


def test_an_adapter_deployed_to_an_engine_without_lora_says_to_restart_the_sampling_worker(
        engines, tiny_model_dir, adapter_dir):
    backend = load_backend("vllm", str(tiny_model_dir), verify=False)
    with pytest.raises(ModelLoadError, match="LoRA adapter.*Restart the sampling worker.*LoRA version exists"):
        backend.load_version(str(adapter_dir))
    assert backend.path == str(tiny_model_dir)  # still serving what it served
    backend.close()


@pytest.mark.parametrize(("lora_setting", "lora_version", "expected"),
                         [(False, False, False), (True, False, True), (False, True, True)],
                         ids=["full-weight-only", "training-lora", "lora-version-registered"])
def test_the_sampling_worker_enables_lora_only_when_a_lora_version_exists_or_training_asks(
        engines, tiny_app, adapter_dir, lora_setting, lora_version, expected):
    from app.services.errors import Unavailable
    from app.services.workers import open_generator

    app = tiny_app(model__backend="vllm", model__tensor_parallel_size=2, model__max_model_len=1024,
                   training__lora=str(lora_setting).lower())
    if lora_version:
        app.store.versions.add("v1", str(adapter_dir), parent_id=app.store.versions.get("v0").id, kind="lora")
    engines.refuse = True  # the engine settings are what is under test; the stand-in serves no model
    with pytest.raises(Unavailable, match="no GPU"):
        open_generator(app)
    [built] = engines.built
    assert built["model"] == app.store.versions.get("v0").path and built["enable_lora"] is expected
    assert (built["tensor_parallel_size"], built["max_model_len"]) == (2, 1024)


@pytest.fixture(scope="module")
def vllm_backend(tiny_model_dir):
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("the vllm backend needs CUDA")
    from generation.vllm_backend import VLLMBackend

    # float32 keeps vLLM's and transformers' log-probs close enough for a tight probe tolerance.
    backend = VLLMBackend(str(tiny_model_dir), dtype="float32", gpu_memory_utilization=0.3, max_model_len=512,
                          enable_lora=True, enforce_eager=True, probe_tolerance=0.02)
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
    from generation.weights import reference_logprobs

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
