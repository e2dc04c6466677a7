"""The vLLM generator backend (GPU): vllm.LLM in-process with sleep mode, LoRA versions served through
LoRARequest, full-weight versions reloaded into the running engine, and a log-prob check after every weight
change that the new weights are really being served (TRL #5312 and vLLM #29341 fail silently otherwise).

Written against vLLM 0.31's documented API; vllm is imported only inside the functions that need it."""

import gc
import itertools
import threading
from pathlib import Path

from generation.backend import (
    Backend,
    ModelLoadError,
    Sample,
    SkipReason,
    adapter_base,
    content_seed,
    is_adapter,
    load_error_message,
    same_model,
    too_long_reason,
)
from generation.chat_prompt import encode_prompt
from generation.config import SamplingConfig
from generation.hub import hub_source
from generation.weights import reference_logprobs

# Fixed probe conversations: their log-probs under vLLM must match transformers' for the saved folder.
PROBES = [
    [{"role": "user", "content": "What does json.dumps do?"},
     {"role": "assistant", "content": "It serializes a Python object to a JSON formatted string."}],
    [{"role": "system", "content": "You are a helpful assistant that explains Python."},
     {"role": "user", "content": "Briefly, what does os.path.join do?"},
     {"role": "assistant", "content": "It joins one or more path segments intelligently."}],
    [{"role": "user", "content": "Explain collections.Counter."},
     {"role": "assistant", "content": "A dict subclass for counting hashable objects."}],
]
# Mean absolute difference of per-token log-probs. Healthy engines sit near 0.01-0.02 of the trainer's own
# numbers and stale weights near 0.2 (the measurements in TRL #5312), so 0.05 tells the two apart.
DEFAULT_PROBE_TOLERANCE = 0.05


class WeightsNotLive(RuntimeError):
    """After a weight change the engine's log-probs do not match the saved model's: it serves stale weights."""


class VLLMBackend(Backend):
    kind = "vllm"

    def __init__(self, path: str, dtype: str = "auto", gpu_memory_utilization: float = 0.45,
                 tensor_parallel_size: int = 1, max_model_len: int = 0, enable_lora: bool = False,
                 max_lora_rank: int = 64, seed: int = 0, probe_tolerance: float = DEFAULT_PROBE_TOLERANCE,
                 verify: bool = True, reference_device: str = "auto", **engine_kw):
        """`enable_lora`: serve LoRA adapter versions (on anyway when `path` is one); off, full-weight versions
        run faster. `max_model_len` 0 keeps the model's own context length. `reference_device`: where
        transformers computes the live-weights check's reference log-probs ('auto': CUDA when there is one)."""
        from vllm import LLM

        enable_lora = enable_lora or is_adapter(path)
        base = full_weight_base(path) if is_adapter(path) else path
        if max_model_len > 0:
            engine_kw["max_model_len"] = max_model_len
        if enable_lora:
            engine_kw["max_lora_rank"] = max_lora_rank
        try:
            self._llm = LLM(model=base, dtype=dtype, seed=seed, enable_sleep_mode=True, enable_lora=enable_lora,
                            gpu_memory_utilization=gpu_memory_utilization,
                            tensor_parallel_size=tensor_parallel_size, **engine_kw)
        except (OSError, ValueError) as error:
            raise ModelLoadError(load_error_message(base, error)) from error
        self._lock = threading.RLock()  # generate, swaps, sleep and wake never interleave
        self._lora_enabled = enable_lora
        self._lora_ids = itertools.count(1)  # vLLM caches adapters by id: a fresh id per load
        self._lora = None  # the LoRARequest of the version served, when it is an adapter
        self._weights_path = base  # whose full weights the engine holds
        self._sleep_level = 0
        self._broken: str | None = None  # set while the weights are not known to be right
        self.verify = verify
        self.probe_tolerance = probe_tolerance
        self.reference_device = _resolve_device(reference_device)
        self.tokenizer = _load_tokenizer(base)
        self.path = base
        self._reference = self._check_live(base) if verify else None
        if path != base:
            self.load_version(path)

    # -- the Backend interface ---------------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return int(self._llm.llm_engine.model_config.max_model_len)

    def generate(self, prompts: list[list[dict]], n: int, params: SamplingConfig,
                 logprobs: bool = False) -> list[list[Sample] | SkipReason]:
        """`logprobs`: each sampled token's log-prob, as vLLM returns it by default (logprobs_mode 'raw_logprobs':
        the model's own distribution, before temperature and top_p)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        with self._lock:
            self._check_ready()
            encoded = [encode_prompt(self.tokenizer, messages) for messages in prompts]
            results = [too_long_reason(len(ids), params.max_new_tokens, self.context_length) for ids in encoded]
            todo = [i for i, r in enumerate(results) if r is None]
            # vLLM batches and schedules by itself; a seed per prompt makes each prompt's samples repeatable.
            sampling = [SamplingParams(n=n, temperature=params.temperature, top_p=params.top_p,
                                       max_tokens=params.max_new_tokens, seed=content_seed(params.seed, prompts[i]),
                                       logprobs=0 if logprobs else None)
                        for i in todo]
            outputs = self._llm.generate([TokensPrompt(prompt_token_ids=encoded[i]) for i in todo], sampling,
                                         use_tqdm=False, lora_request=self._lora) if todo else []
            eos = _eos_ids(self.tokenizer)
            for i, out in zip(todo, outputs, strict=True):
                results[i] = [_to_sample(c, eos, logprobs) for c in out.outputs]
            return results

    @property
    def ready(self) -> bool:
        return self._broken is None

    def sequence_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """The served version's log-probs of each sequence (prompt_logprobs), on the engine itself."""
        with self._lock:
            self._check_ready()
            return self.live_logprobs(sequences)

    def load_version(self, path: str) -> None:
        """Serve `path`: an adapter folder as a LoRARequest, a full model by reloading weights in place. After a
        failed load the engine refuses to generate until a load succeeds, and that load reloads the weights in
        full: what the engine holds after a failure is not known."""
        with self._lock:
            if self._sleep_level:
                raise RuntimeError("the vLLM engine is asleep; call wake() before loading a version")
            self._check_servable(path)  # refused before the engine is touched: it serves what it served
            self._broken = f"{path} is being loaded"
            try:
                self._load(path)
            except Exception as error:
                self._weights_path = None
                self._broken = f"loading {path} failed: {error}"
                raise
            self._broken = None

    def close(self) -> None:
        import torch

        with self._lock:
            llm, self._llm = self._llm, None
        del llm
        gc.collect()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except ImportError:
            pass
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- sleep mode: the trainer takes the GPU -------------------------------------------------------------------
    def sleep(self, level: int = 1) -> None:
        """Level 1 offloads the weights to CPU memory, level 2 discards them; both free the KV cache."""
        with self._lock:
            self._llm.sleep(level=level)
            self._sleep_level = level

    def wake(self) -> None:
        """Back to serving; after level 2 the weights are reloaded from disk. Checked against the probes."""
        with self._lock:
            if not self._sleep_level:
                return
            level, self._sleep_level = self._sleep_level, 0
            before, self._broken = self._broken, "the engine is waking up"
            try:
                self._wake_engine(level)
                if self._weights_path is None:  # unknown since a failed load: the next load_version reloads them
                    self._broken = before
                    return
                if self._reference is not None:
                    check_logprobs(self.live_logprobs(self.probe_ids()), self._reference, self.probe_tolerance,
                                   f"waking {self.path}")
            except Exception as error:
                self._weights_path = None
                self._broken = f"waking {self.path} failed: {error}"
                raise
            self._broken = None

    def _wake_engine(self, level: int) -> None:
        if level == 1:
            self._llm.wake_up()
        else:
            # Level 2 discarded the weights: wake their memory, load them again, then the KV cache.
            self._llm.wake_up(tags=["weights"])
            try:
                if self._weights_path is not None:
                    self._reload_weights(self._weights_path)
            finally:
                self._llm.wake_up(tags=["kv_cache"])
        self._llm.reset_prefix_cache()

    @property
    def sleeping(self) -> bool:
        return bool(self._sleep_level)

    # -- weight changes ------------------------------------------------------------------------------------------
    def _check_servable(self, path: str) -> None:
        if not is_adapter(path):
            return
        if not self._lora_enabled:
            raise ModelLoadError(
                f"{path} is a LoRA adapter, but this vLLM engine was started without LoRA support (off while every "
                f"version is full-weight, for speed). Restart the sampling worker (Stop, then Start generation under "
                f"Console > Models and rounds, or restart `prefloop generate --watch`): it enables LoRA when a LoRA "
                f"version exists or training.lora is true.")
        full_weight_base(path)

    def _load(self, path: str) -> None:
        if is_adapter(path):
            self._serve_adapter(path)
        else:
            self._serve_full(path)
        self.tokenizer = _load_tokenizer(path if _has_tokenizer(path) else self._weights_path)
        self.path = path
        if self.verify:
            self._reference = self._check_live(path)

    def _serve_adapter(self, path: str) -> None:
        from vllm.lora.request import LoRARequest

        base = adapter_base(path)
        if not self._holds(base):
            self._swap_full_weights(base)
        lora_id = next(self._lora_ids)
        self._lora = LoRARequest(lora_name=f"{Path(path).name}-{lora_id}", lora_int_id=lora_id, lora_path=path)

    def _serve_full(self, path: str) -> None:
        self._lora = None
        if not self._holds(path):
            self._swap_full_weights(path)

    def _holds(self, path: str) -> bool:
        """Does the engine hold `path`'s full weights? Never after a failed load (_weights_path None)."""
        return self._weights_path is not None and same_model(path, self._weights_path)

    def _swap_full_weights(self, path: str) -> None:
        """Sleep (level 1: the KV cache is freed) -> wake the weights only -> load the new weights into them ->
        wake the KV cache -> drop prefix-cache blocks computed with the old weights. A reload that fails may
        have loaded part of the weights: they count as unknown, and the KV cache is woken all the same."""
        self._weights_path = None
        self._llm.sleep(level=1)
        self._llm.wake_up(tags=["weights"])
        try:
            self._reload_weights(path)
        finally:
            self._llm.wake_up(tags=["kv_cache"])
            self._llm.reset_prefix_cache()
        self._weights_path = path

    def _reload_weights(self, path: str) -> None:
        try:
            self._llm.collective_rpc("reload_weights", kwargs={"weights_path": path, "is_checkpoint_format": True})
        except Exception as error:
            raise ModelLoadError(f"vLLM could not load the weights of {path} in place: {error}") from error

    # -- the live-weights check ----------------------------------------------------------------------------------
    def probe_ids(self) -> list[list[int]]:
        return [self.tokenizer(self.tokenizer.apply_chat_template(p, tokenize=False),
                               add_special_tokens=False)["input_ids"] for p in PROBES]

    def live_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """log p(token_t | tokens_<t), t >= 1, as the engine computes them now (prompt_logprobs)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self._llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in sequences], params,
                                     use_tqdm=False, lora_request=self._lora)
        # prompt_logprobs[0] is None (nothing precedes the first token); each entry holds the prompt token's own.
        return [[entry[token].logprob for token, entry in zip(ids[1:], out.prompt_logprobs[1:], strict=True)]
                for ids, out in zip(sequences, outputs, strict=True)]

    def _check_live(self, path: str) -> list[list[float]]:
        probes = self.probe_ids()
        expected = reference_logprobs(path, probes, device=self.reference_device, dtype=self._dtype_name())
        check_logprobs(self.live_logprobs(probes), expected, self.probe_tolerance, f"loading {path}")
        return expected

    def _check_ready(self) -> None:
        if self._llm is None:
            raise RuntimeError("this backend is closed")
        if self._sleep_level:
            raise RuntimeError("the vLLM engine is asleep; call wake() first")
        if self._broken:
            raise RuntimeError(f"the vLLM engine is not serving verified weights: {self._broken}")

    def _dtype_name(self) -> str:
        return str(self._llm.llm_engine.model_config.dtype).removeprefix("torch.")


def check_logprobs(live: list[list[float]], expected: list[list[float]], tolerance: float, what: str) -> float:
    """Raise WeightsNotLive unless the mean absolute difference of the per-token log-probs is within tolerance."""
    pairs = [(a, b) for row_a, row_b in zip(live, expected, strict=True) for a, b in zip(row_a, row_b, strict=True)]
    if not pairs:
        raise ValueError("no probe tokens to compare")
    error = sum(abs(a - b) for a, b in pairs) / len(pairs)
    if error > tolerance:
        raise WeightsNotLive(
            f"after {what}, the engine's log-probs differ from the saved model's (computed with transformers) by "
            f"{error:.4f} per token on average, more than the tolerance {tolerance}: the new weights are not live")
    return error


def full_weight_base(path: str) -> str:
    """The full-weight model the LoRA adapter at `path` sits on: vLLM serves an adapter only on full weights."""
    base = adapter_base(path)
    if is_adapter(base):
        raise ModelLoadError(
            f"LoRA adapter {path} sits on another adapter ({base}), as LoRA versions were saved before each became "
            f"one adapter on one full-weight base. vLLM serves an adapter only on full weights: serve this version "
            f"with the hf backend (model.backend = \"hf\"), or train the next version without LoRA "
            f"(training.lora = false): vLLM serves that one, and LoRA versions built on it.")
    return base


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _to_sample(completion, eos_ids: frozenset[int], logprobs: bool = False) -> Sample:
    tokens = list(completion.token_ids)
    finish = "stop" if completion.finish_reason == "stop" else "length"
    # Count the EOS token like the hf backend does, whether or not the engine kept it in token_ids.
    count = len(tokens) + (1 if finish == "stop" and (not tokens or tokens[-1] not in eos_ids) else 0)
    scored = logprobs and completion.logprobs is not None and len(completion.logprobs) == len(tokens)
    total = (sum(entry[token].logprob for token, entry in zip(tokens, completion.logprobs, strict=True))
             if scored else None)
    return Sample(text=completion.text.strip(), finish_reason=finish, token_count=count,
                  token_ids=tokens if scored else None, logprob=total)


def _eos_ids(tokenizer) -> frozenset[int]:
    return frozenset(i for i in [tokenizer.eos_token_id] if i is not None)


def _has_tokenizer(path: str) -> bool:
    return (Path(path) / "tokenizer_config.json").is_file()


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    source, local_only = hub_source(path)
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as error:
        raise ModelLoadError(load_error_message(path, error)) from error
