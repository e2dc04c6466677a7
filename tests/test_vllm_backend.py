"""The vLLM backend on a GPU with the real tiny model (skipped without vllm or CUDA); everywhere, the live-weights
check's arithmetic and, against a stand-in for vllm's documented LLM API on the tiny model (tests/vllm_standin.py),
the backend's own logic: the engine's settings, the full-weight reload flow, the live-weights check refusing stale
weights, LoRA versions and sleep mode."""

import json
import shutil

import pytest
from vllm_standin import Engines

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


# -- against a stand-in for vllm on a real CPU model (tests/vllm_standin.py) -----------------------------------------
@pytest.fixture
def engines(monkeypatch) -> Engines:
    import torch

    stand_in = Engines()
    stand_in.install(monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's small matrices: one thread is many times faster on a busy machine
    yield stand_in
    torch.set_num_threads(threads)


def save_adapter(base_dir, folder, seed: int, init: bool = False):
    """A real LoRA adapter on the model at base_dir (saved without a tokenizer: it uses its base's). Not `init`:
    random LoRA weights, so the adapter changes the model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=init)
    get_peft_model(base, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model, as peft initialises it (it does not change outputs yet)."""
    return save_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), seed=0, init=True)


@pytest.fixture(scope="module")
def lora_versions(tiny_model_dir, v1_dir, tmp_path_factory):
    """LoRA versions as rounds now save them: two adapters on v0, one on the full-weight v1."""
    folder = tmp_path_factory.mktemp("lora-versions")
    return {"on v0": save_adapter(tiny_model_dir, folder / "a1", seed=1),
            "again on v0": save_adapter(tiny_model_dir, folder / "a2", seed=2),
            "on v1": save_adapter(v1_dir, folder / "b1", seed=3)}


@pytest.fixture(scope="module")
def chained_dir(lora_versions, tmp_path_factory):
    """An adapter whose base is another adapter: how LoRA rounds on a LoRA parent saved versions before."""
    folder = tmp_path_factory.mktemp("chained") / "a2-on-a1"
    shutil.copytree(lora_versions["again on v0"], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(lora_versions["on v0"])
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def broken_dir(v1_dir, tmp_path_factory):
    """v1's files, but its weights hold one tensor the model has no place for (sorted after the layers): a reload
    loads part of v1, then fails."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("broken") / "v-broken"
    shutil.copytree(v1_dir, folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.9.mlp.up_proj.weight"] = tensors["model.norm.weight"].clone()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def start(path, **kw):
    """The vLLM backend on the stand-in, verifying every weight change (reference log-probs on the CPU)."""
    return load_backend("vllm", str(path), dtype="float32", **kw)


def engine_calls(engines: Engines) -> list[tuple]:
    """The weight and memory calls on the engine, in order (generate left out)."""
    return [call for call in engines.calls if call[0] != "generate"]


def served(engines: Engines) -> list[tuple[str, object]]:
    """(weights, LoRARequest) of each generate call, in order: the live checks' and the samples'."""
    return [(weights, lora) for _, _, weights, lora in engines.named("generate")]


def samples_of(path, **kw) -> list:
    """What a fresh engine started on `path` samples for PROMPTS: what serving `path` must give."""
    with start(path, verify=False, **kw) as fresh:
        return fresh.generate(PROMPTS, 3, CFG)


RELOAD = ("sleep", 1), ("wake_up", ["weights"]), ("collective_rpc", "reload_weights"), ("wake_up", ["kv_cache"])


def reloads(engines: Engines) -> list[str]:
    return [kwargs["weights_path"] for _, _, kwargs in engines.named("collective_rpc")]


def test_a_full_weight_model_starts_the_engine_without_lora_and_with_the_engine_settings(engines, tiny_model_dir):
    backend = load_backend("vllm", str(tiny_model_dir), dtype="float32", gpu_memory_utilization=0.3,
                           tensor_parallel_size=2, max_model_len=512, verify=False)
    [built] = engines.built
    assert built["model"] == str(tiny_model_dir) and built["enable_lora"] is False
    assert built["enable_sleep_mode"] is True
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


# -- the reload flow -------------------------------------------------------------------------------------------------
def test_a_full_weight_version_is_reloaded_into_the_running_engine_and_sampled_from(
        engines, tiny_model_dir, v1_dir):
    backend = start(tiny_model_dir)
    before = backend.generate(PROMPTS, 3, CFG)
    engines.calls.clear()
    backend.load_version(str(v1_dir))  # verified: the engine's log-probs are v1's
    assert [call[:2] for call in engine_calls(engines)] == [*RELOAD, ("reset_prefix_cache",)]
    assert engines.named("collective_rpc") == [
        ("collective_rpc", "reload_weights", {"weights_path": str(v1_dir), "is_checkpoint_format": True})]
    assert engines.last.weights == str(v1_dir) and backend.path == str(v1_dir)
    after = backend.generate(PROMPTS, 3, CFG)
    assert after != before and after == samples_of(v1_dir)
    assert len(engines.built) == 2  # the first engine was never rebuilt; the second is samples_of's
    backend.load_version(str(tiny_model_dir))
    assert backend.generate(PROMPTS, 3, CFG) == before
    backend.close()


@pytest.mark.parametrize("then_load", ["the same version", "the version before"])
def test_an_engine_that_keeps_serving_stale_weights_is_refused_until_a_load_succeeds(
        engines, tiny_model_dir, v1_dir, then_load):
    backend = start(tiny_model_dir)
    engines.stale_reload = True  # reload_weights quietly keeps v0
    with pytest.raises(WeightsNotLive, match=f"after loading {v1_dir}.*not live"):
        backend.load_version(str(v1_dir))
    with pytest.raises(RuntimeError, match="not serving verified weights.*not live"):
        backend.generate(PROMPTS, 3, CFG)
    engines.stale_reload = False
    target = v1_dir if then_load == "the same version" else tiny_model_dir
    engines.calls.clear()
    backend.load_version(str(target))
    assert reloads(engines) == [str(target)]  # what the engine held was unknown: reloaded in full
    assert backend.generate(PROMPTS, 3, CFG) == samples_of(target)
    backend.close()


def test_the_sampling_worker_loads_a_version_again_after_its_load_failed(engines, tiny_model_dir, v1_dir):
    from types import SimpleNamespace

    from generation.worker import ensure_serving

    backend = start(tiny_model_dir)
    v1 = SimpleNamespace(name="v1", path=str(v1_dir))
    engines.stale_reload = True
    with pytest.raises(WeightsNotLive):
        ensure_serving(backend, v1)
    assert not backend.ready  # it names v1 but does not serve it: the next batch must not take it as loaded
    engines.stale_reload = False
    assert ensure_serving(backend, v1) and backend.ready
    assert backend.generate(PROMPTS, 3, CFG) == samples_of(v1_dir)
    assert not ensure_serving(backend, v1)
    backend.close()


def test_a_failed_reload_leaves_the_engine_refusing_until_a_load_reloads_it_in_full(
        engines, tiny_model_dir, broken_dir):
    backend = start(tiny_model_dir)
    before = backend.generate(PROMPTS, 3, CFG)
    engines.calls.clear()
    with pytest.raises(ModelLoadError, match="could not load the weights of .*v-broken in place"):
        backend.load_version(str(broken_dir))
    assert engines.last.weights == f"part of {broken_dir}"
    assert engine_calls(engines)[-2:] == [("wake_up", ["kv_cache"]), ("reset_prefix_cache",)]  # awake again
    with pytest.raises(RuntimeError, match=f"not serving verified weights: loading {broken_dir} failed"):
        backend.generate(PROMPTS, 3, CFG)
    engines.calls.clear()
    backend.load_version(str(tiny_model_dir))  # the version it served before: its weights are reloaded
    assert reloads(engines) == [str(tiny_model_dir)]
    assert backend.generate(PROMPTS, 3, CFG) == before
    backend.close()


# -- LoRA versions ---------------------------------------------------------------------------------------------------
def test_lora_versions_on_one_base_swap_adapters_with_fresh_ids_and_keep_the_base_weights(
        engines, tiny_model_dir, lora_versions):
    backend = start(tiny_model_dir, enable_lora=True)
    base = backend.generate(PROMPTS, 3, CFG)
    a1, a2 = str(lora_versions["on v0"]), str(lora_versions["again on v0"])
    engines.calls.clear()
    samples = {}
    for path in [a1, a2, a1]:
        backend.load_version(path)  # verified against transformers + peft
        samples.setdefault(path, []).append(backend.generate(PROMPTS, 3, CFG))
    assert engine_calls(engines) == []  # no sleep, no reload: the base weights stay
    requests = list(dict.fromkeys(lora for _, lora in served(engines)))
    assert [(r.lora_int_id, r.lora_path) for r in requests] == [(1, a1), (2, a2), (3, a1)]  # vLLM caches by id
    assert samples[a1][0] == samples[a1][1] and len({str(base), str(samples[a1][0]), str(samples[a2][0])}) == 3
    backend.load_version(str(tiny_model_dir))  # back to the base: no adapter, still no reload
    assert backend.generate(PROMPTS, 3, CFG) == base and engine_calls(engines) == []
    backend.close()


def test_an_adapter_on_another_full_weight_model_reloads_that_model_first(
        engines, tiny_model_dir, v1_dir, lora_versions):
    backend = start(tiny_model_dir, enable_lora=True)
    engines.calls.clear()
    backend.load_version(str(lora_versions["on v1"]))
    assert reloads(engines) == [str(v1_dir)] and engines.last.weights == str(v1_dir)
    assert served(engines)[-1][1].lora_path == str(lora_versions["on v1"])
    backend.close()


def test_an_adapter_on_another_adapter_is_refused_before_the_engine_is_touched(
        engines, tiny_model_dir, chained_dir):
    backend = start(tiny_model_dir, enable_lora=True)
    before = backend.generate(PROMPTS, 3, CFG)
    engines.calls.clear()
    with pytest.raises(ModelLoadError, match=r"sits on another adapter.*hf backend.*training\.lora = false"):
        backend.load_version(str(chained_dir))
    assert engines.calls == [] and backend.path == str(tiny_model_dir)
    assert backend.generate(PROMPTS, 3, CFG) == before  # still serving v0
    backend.close()
    with pytest.raises(ModelLoadError, match="sits on another adapter"):
        start(chained_dir)
    assert len(engines.built) == 1  # no engine was started on an adapter folder


# -- sleep mode ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("version", ["full", "lora"])
def test_sleep_refuses_work_and_wake_serves_the_same_version(
        engines, tiny_model_dir, v1_dir, lora_versions, level, version):
    backend = start(tiny_model_dir, enable_lora=True)
    path = str(v1_dir if version == "full" else lora_versions["on v1"])
    backend.load_version(path)  # the engine now holds v1's weights, not those it started with
    before = backend.generate(PROMPTS, 3, CFG)
    backend.sleep(level)
    assert backend.sleeping
    with pytest.raises(RuntimeError, match="asleep"):
        backend.generate(PROMPTS, 3, CFG)
    with pytest.raises(RuntimeError, match="asleep"):
        backend.load_version(str(tiny_model_dir))
    engines.calls.clear()
    backend.wake()  # checks the probes again
    assert not backend.sleeping and backend.path == path
    assert reloads(engines) == ([str(v1_dir)] if level == 2 else [])  # level 2 threw the weights away
    assert engines.last.weights == str(v1_dir)
    assert backend.generate(PROMPTS, 3, CFG) == before
    backend.close()


def test_waking_on_stale_weights_is_refused_until_a_load_succeeds(engines, tiny_model_dir, v1_dir):
    backend = start(tiny_model_dir)
    backend.load_version(str(v1_dir))
    backend.sleep(2)
    engines.stale_reload = True  # the reload after level 2 brings back v0, the engine's first weights
    with pytest.raises(WeightsNotLive, match=f"after waking {v1_dir}"):
        backend.wake()
    with pytest.raises(RuntimeError, match="not serving verified weights"):
        backend.generate(PROMPTS, 3, CFG)
    engines.stale_reload = False
    backend.load_version(str(v1_dir))
    assert backend.generate(PROMPTS, 3, CFG) == samples_of(v1_dir)
    backend.close()


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
