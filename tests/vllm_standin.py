"""A stand-in for the vllm package on CPU, backed by a real transformers model: the documented surface of vllm.LLM
that the vLLM backend uses (generate with SamplingParams and LoRARequest, sleep/wake_up(tags),
collective_rpc("reload_weights"), reset_prefix_cache) with real log-probs, so the backend's own logic is tested
where vLLM cannot be installed. It tests our code, not vLLM."""

import copy
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

TAGS = ("weights", "kv_cache")


# -- the request and result types, as vllm documents them -------------------------------------------------------------
@dataclass(frozen=True)
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


class TokensPrompt(TypedDict):
    prompt_token_ids: list[int]


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None  # with SamplingParams.logprobs: each sampled token's raw log-prob
    finish_reason: str | None  # 'stop' (EOS sampled, kept in token_ids) or 'length'
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None  # [0] is None: nothing precedes the first token
    outputs: list[CompletionOutput]
    finished: bool = True


# -- what the engines did, for the tests ------------------------------------------------------------------------------
@dataclass
class Engines:
    """Every LLM made (its keyword arguments, in `built`) and every call made on one (in `calls`). `refuse`: making
    an LLM fails after it is noted, as vLLM does without a GPU. `stale_reload`: reload_weights ignores weights_path
    and reloads what the engine started with, silently (vLLM #32718, TRL #5312)."""

    built: list[dict] = field(default_factory=list)
    calls: list[tuple] = field(default_factory=list)
    refuse: bool = False
    stale_reload: bool = False
    last: "LLM | None" = None

    def install(self, monkeypatch) -> None:
        """Put the stand-in in sys.modules as vllm, vllm.inputs, vllm.lora and vllm.lora.request."""
        vllm = types.ModuleType("vllm")
        vllm.LLM = type("LLM", (LLM,), {"engines": self})
        vllm.SamplingParams = SamplingParams
        inputs = types.ModuleType("vllm.inputs")
        inputs.TokensPrompt = TokensPrompt
        request = types.ModuleType("vllm.lora.request")
        request.LoRARequest = LoRARequest
        for name, module in [("vllm", vllm), ("vllm.inputs", inputs), ("vllm.lora", types.ModuleType("vllm.lora")),
                             ("vllm.lora.request", request)]:
            monkeypatch.setitem(sys.modules, name, module)

    def named(self, name: str) -> list[tuple]:
        return [call for call in self.calls if call[0] == name]


# -- the engine -------------------------------------------------------------------------------------------------------
class LLM:
    """vllm.LLM on one CPU model. `weights` names the folder whose weights it holds now ('garbage' once memory of
    weights that a level-2 sleep discarded is woken without a reload)."""

    engines: Engines

    def __init__(self, model: str, **settings):
        self.engines.built.append({"model": model, **settings})
        if self.engines.refuse:
            raise ValueError("the stand-in engine has no GPU")
        if not (Path(model) / "config.json").is_file():
            raise ValueError(f"Invalid repository ID or local directory specified: {model!r}")
        self.engines.last = self
        self.settings = settings
        self._model, self.tokenizer = _load(model, settings.get("dtype", "auto"))
        max_len = settings.get("max_model_len") or self._model.config.max_position_embeddings
        config = types.SimpleNamespace(model=model, max_model_len=max_len, dtype=self._model.dtype)
        self.llm_engine = types.SimpleNamespace(model_config=config)
        self.weights = model
        self._asleep: set[str] = set()  # the tags whose memory is released
        self._discarded = False  # a level-2 sleep threw the weights' contents away
        self._adapters: dict[int, str] = {}  # lora_int_id -> path: vLLM caches an adapter by its id
        self._with_adapter: dict[int, object] = {}  # lora_int_id -> the model with it applied, until weights change
        self._seeds = _generator(settings.get("seed", 0))  # seeds for requests that bring none

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params=None, *, use_tqdm: bool = True, lora_request=None, **_):
        prompts = prompts if isinstance(prompts, list) else [prompts]
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        loras = lora_request if isinstance(lora_request, list) else [lora_request] * len(prompts)
        if not len(prompts) == len(params) == len(loras):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        self.engines.calls.append(("generate", len(prompts), self.weights, lora_request))
        self._need_awake("generate")
        return [self._request(i, prompt, sp or SamplingParams(), self._model_for(lora))
                for i, (prompt, sp, lora) in enumerate(zip(prompts, params, loras, strict=True))]

    def sleep(self, level: int = 1) -> None:
        """Level 1 keeps the weights (vLLM backs them up in CPU memory), level 2 throws them away."""
        self.engines.calls.append(("sleep", level))
        if not self.settings.get("enable_sleep_mode"):
            raise ValueError("Sleep mode is not enabled: start the engine with enable_sleep_mode=True")
        self._asleep = set(TAGS)
        self._discarded = self._discarded or level == 2

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.engines.calls.append(("wake_up", tags))
        tags = set(TAGS if tags is None else tags)
        if "weights" in tags and "weights" in self._asleep and self._discarded:
            _scramble(self._model)  # the weights' memory comes back holding whatever was there
            self._weights_changed("garbage")
            self._discarded = False
        self._asleep -= tags

    def reset_prefix_cache(self) -> bool:
        self.engines.calls.append(("reset_prefix_cache",))
        return True

    def collective_rpc(self, method: str, timeout: float | None = None, args: tuple = (), kwargs: dict | None = None):
        """Runs `method` on every worker (one here); vLLM's workers answer reload_weights."""
        self.engines.calls.append(("collective_rpc", method, kwargs))
        if method != "reload_weights":
            raise AttributeError(f"the stand-in worker has no method {method!r}")
        return [self._reload_weights(*args, **(kwargs or {}))]

    # -- inside the engine ---------------------------------------------------------------------------------------
    def _reload_weights(self, weights_iterator=None, weights_path: str | None = None,
                        is_checkpoint_format: bool = True) -> None:
        """Reads the checkpoint's tensors into the model one by one, as vLLM's load_weights does: an unknown name or
        a wrong shape fails part way, with the tensors before it already loaded."""
        if "weights" in self._asleep:
            raise RuntimeError("reload_weights while the weights' memory is asleep: wake_up(tags=['weights']) first")
        path = self.llm_engine.model_config.model if self.engines.stale_reload or not weights_path else weights_path
        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise RuntimeError(f"Cannot find any model weights with {path!r}")
        self._weights_changed(f"part of {path}")
        _copy_in(self._model, files)
        self._weights_changed(path)
        self._discarded = False

    def _weights_changed(self, name: str) -> None:
        self.weights = name
        self._with_adapter.clear()

    def _need_awake(self, what: str) -> None:
        if self._asleep:
            raise RuntimeError(f"{what} while the engine is asleep ({', '.join(sorted(self._asleep))})")

    def _model_for(self, lora: LoRARequest | None):
        if lora is None:
            return self._model
        if not self.settings.get("enable_lora"):
            raise ValueError(f"LoRA is not enabled: {lora.lora_name} needs an engine started with enable_lora=True")
        path = self._adapters.setdefault(lora.lora_int_id, lora.lora_path)  # an id seen before keeps its adapter
        if lora.lora_int_id not in self._with_adapter:
            rank = json.loads((Path(path) / "adapter_config.json").read_text())["r"]
            max_rank = self.settings.get("max_lora_rank", 16)
            if rank > max_rank:
                raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank {max_rank}")
            self._with_adapter[lora.lora_int_id] = _with_adapter(self._model, path)
        return self._with_adapter[lora.lora_int_id]

    def _request(self, index: int, prompt, sp: SamplingParams, model) -> RequestOutput:
        ids = list(prompt["prompt_token_ids"]) if isinstance(prompt, dict) else self.tokenizer(prompt)["input_ids"]
        max_len = self.llm_engine.model_config.max_model_len
        if len(ids) >= max_len:
            raise ValueError(f"The prompt (length {len(ids)}) is longer than the maximum model length of {max_len}.")
        logprobs = prompt_logprobs(model, ids) if sp.prompt_logprobs is not None else None
        max_new = min(sp.max_tokens or max_len, max_len - len(ids))
        seed = sp.seed if sp.seed is not None else _randint(self._seeds)
        samples = sample(model, ids, sp, max_new, self.tokenizer.eos_token_id, seed)
        wanted = sp.logprobs is not None
        outputs = [CompletionOutput(i, self.tokenizer.decode(tokens, skip_special_tokens=sp.skip_special_tokens),
                                    tokens, sum(lps) if wanted else None,
                                    [{t: Logprob(v)} for t, v in zip(tokens, lps, strict=True)] if wanted else None,
                                    finish)
                   for i, (tokens, lps, finish) in enumerate(samples)]
        return RequestOutput(str(index), prompt if isinstance(prompt, str) else None, ids, logprobs, outputs)


# -- the model's arithmetic ------------------------------------------------------------------------------------------
def prompt_logprobs(model, ids: list[int]) -> list[dict[int, Logprob] | None]:
    """vLLM's prompt_logprobs=0: for each prompt token after the first, its own log-prob."""
    import torch

    with torch.inference_mode():
        x = torch.tensor([ids])
        logprobs = torch.log_softmax(model(input_ids=x).logits.float()[0, :-1], dim=-1)
    return [None] + [{token: Logprob(float(logprobs[t, token]))} for t, token in enumerate(ids[1:])]


def sample(model, ids: list[int], sp: SamplingParams, max_new: int, eos: int,
           seed: int) -> list[tuple[list[int], list[float], str]]:
    """n samples of at most max_new tokens: (token ids, their raw log-probs, 'stop' or 'length'), repeatable by
    seed. The log-probs are of the model's logits before temperature and top_p, as vLLM's default logprobs_mode
    ('raw_logprobs') returns them. No top-k (vLLM's default); temperature 0 is greedy."""
    import torch

    generator = _generator(seed)
    x = torch.tensor([ids] * sp.n)
    tokens: list[list[int]] = [[] for _ in range(sp.n)]
    scores: list[list[float]] = [[] for _ in range(sp.n)]
    done = [False] * sp.n
    past = None
    with torch.inference_mode():
        for _ in range(max_new):
            out = model(input_ids=x, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = _pick(out.logits[:, -1].float(), sp, generator)
            raw = torch.log_softmax(out.logits[:, -1].float(), dim=-1).gather(1, nxt[:, None])[:, 0].tolist()
            for row, token in enumerate(nxt.tolist()):
                if not done[row]:
                    tokens[row].append(token)
                    scores[row].append(raw[row])
                    done[row] = token == eos
            if all(done):
                break
            x = nxt[:, None]
    return [(t, lp, "stop" if t and t[-1] == eos else "length") for t, lp in zip(tokens, scores, strict=True)]


def _pick(logits, sp: SamplingParams, generator):
    import torch

    if sp.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / sp.temperature, dim=-1)
    if sp.top_p < 1:
        ordered, order = probs.sort(dim=-1, descending=True)
        drop = ordered.cumsum(dim=-1) - ordered > sp.top_p  # keep the smallest head whose mass reaches top_p
        probs = probs.scatter(-1, order, ordered.masked_fill(drop, 0.0))
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


def _randint(generator) -> int:
    import torch

    return torch.randint(2**31 - 1, (1,), generator=generator).item()


def _load(path: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(path, local_files_only=True)


def _copy_in(model, files: list[Path]) -> None:
    import torch
    from safetensors.torch import load_file

    params = dict(model.named_parameters())
    with torch.no_grad():
        for file in files:
            for name, tensor in sorted(load_file(str(file)).items()):
                if name == "lm_head.weight" and model.config.tie_word_embeddings:
                    continue
                param = params[name]  # KeyError for a tensor the model has no place for, as in vLLM
                if param.shape != tensor.shape:
                    raise AssertionError(f"Attempted to load weight {tuple(tensor.shape)} into parameter "
                                         f"{tuple(param.shape)} ({name})")
                param.copy_(tensor.to(param.dtype))


def _scramble(model) -> None:
    import torch

    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator).to(param.dtype))


def _with_adapter(model, path: str):
    """The model with the LoRA adapter at `path` applied on the weights it holds now (whatever base the adapter
    names: vLLM applies an adapter to the weights it serves)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(model), path).merge_and_unload().eval()
