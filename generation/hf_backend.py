"""The transformers generator backend (the default; CPU or GPU): batched sampling of n responses per prompt,
in-place version swaps, and halving the batch when memory runs out."""

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generation.backend import (
    Backend,
    ModelLoadError,
    Sample,
    SkipReason,
    adapter_base,
    content_seed,
    is_adapter,
    load_error_message,
    too_long_reason,
)
from generation.chat_prompt import encode_prompt
from generation.config import SamplingConfig
from generation.hub import hub_source
from generation.weights import free_memory, load_weights, resolve_dtype

FALLBACK_CONTEXT = 2048


@dataclass(frozen=True)
class LoadedModel:
    """Everything one model version needs to sample; swapped as a whole, never edited."""
    path: str
    model: Any
    tokenizer: Any
    eos_ids: frozenset[int]
    context_length: int


class HFBackend(Backend):
    kind = "hf"

    def __init__(self, path: str, device: str = "auto", dtype: str = "auto"):
        self.device = resolve_device(device)
        self.dtype = dtype
        self._lock = threading.Lock()
        self._loaded = load_model(path, self.device, dtype)
        self._batch_cap = 1 << 30  # lowered for good when memory runs out
        self._asleep = False

    # -- the Backend interface ---------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.current.path

    @property
    def context_length(self) -> int:
        return self.current.context_length

    def load_version(self, path: str) -> None:
        self._check_awake()
        loaded = load_model(path, self.device, self.dtype)  # fully loaded before anyone can see it
        with self._lock:
            old, self._loaded = self._loaded, loaded
        del old
        free_memory()

    def sequence_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """The served model's log-probs of each sequence, one forward pass each (generation/weights.py)."""
        from generation.weights import token_logprobs

        self._check_awake()
        return token_logprobs(self.current.model, sequences)

    def close(self) -> None:
        with self._lock:
            self._loaded = None
        free_memory()

    def generate(self, prompts: list[list[dict]], n: int, params: SamplingConfig,
                 logprobs: bool = False) -> list[list[Sample] | SkipReason]:
        self._check_awake()
        loaded = self.current  # one version for the whole call, even if a swap lands meanwhile
        encoded = [encode_prompt(loaded.tokenizer, messages) for messages in prompts]
        results: list[list[Sample] | SkipReason | None] = [
            too_long_reason(len(ids), params.max_new_tokens, loaded.context_length) for ids in encoded]
        todo = [i for i, r in enumerate(results) if r is None]

        def run(chunk: list[int]) -> list[list[Sample]]:
            return _sample(loaded, [encoded[i] for i in chunk], [prompts[i] for i in chunk], n, params, logprobs)

        outputs, self._batch_cap = run_adaptive(todo, min(params.batch_size, self._batch_cap), run)
        for i, samples in zip(todo, outputs, strict=True):
            results[i] = samples
        return results

    # -- sleep: a round takes the device (training.handoff) -------------------------------------------------------
    def sleep(self, level: int = 1) -> None:
        """Stop serving until wake(). On a GPU the weights move to CPU memory, so the round gets the GPU's memory
        (levels 1 and 2 alike: the weights are kept, as vLLM's level 1 does); on the CPU nothing moves."""
        with self._lock:
            if self._asleep or self._loaded is None:
                return
            self._asleep = True
            model = self._loaded.model
        if self.device.startswith("cuda"):
            model.to("cpu")
            free_memory()

    def wake(self) -> None:
        """Serve again: the weights go back to the device they were on."""
        with self._lock:
            if not self._asleep:
                return
            loaded = self._loaded
        if loaded is not None and self.device.startswith("cuda"):
            loaded.model.to(self.device)
        with self._lock:
            self._asleep = False

    @property
    def sleeping(self) -> bool:
        return self._asleep

    def _check_awake(self) -> None:
        if self._asleep:
            raise RuntimeError("the hf backend is asleep (a round has the device); call wake() first")

    @property
    def current(self) -> LoadedModel:
        """The model version served now (model, tokenizer, EOS ids, context length)."""
        with self._lock:
            if self._loaded is None:
                raise RuntimeError("this backend is closed")
            return self._loaded


# -- loading -----------------------------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: str, device: str, dtype: str) -> LoadedModel:
    """Load tokenizer and weights (a LoRA adapter folder is merged into its base); fails fast with ModelLoadError."""
    try:
        tokenizer = _load_tokenizer(path)
        model = load_weights(path, resolve_dtype(dtype, device)).to(device).eval()
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(load_error_message(path, error)) from error
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(path=path, model=model, tokenizer=tokenizer, eos_ids=_eos_ids(model, tokenizer),
                       context_length=_context_length(model, tokenizer))


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if is_adapter(path) and not (Path(path) / "tokenizer_config.json").is_file():
        path = adapter_base(path)  # an adapter saved without its tokenizer uses the base model's
    source, local_only = hub_source(path)
    return AutoTokenizer.from_pretrained(source, local_files_only=local_only)


def _eos_ids(model, tokenizer) -> frozenset[int]:
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return frozenset(i for i in ids if i is not None)


def _context_length(model, tokenizer) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (1e30).
    return int(limit) if limit and limit < 1_000_000 else FALLBACK_CONTEXT


# -- sampling ----------------------------------------------------------------------------------------------------
def _sample(loaded: LoadedModel, ids_list: list[list[int]], prompts: list[list[dict]], n: int,
            params: SamplingConfig, logprobs: bool = False) -> list[list[Sample]]:
    """n samples for each prompt of one batch: prefill the prompts once, copy each prompt's cache n times, then
    decode all rows together, dropping a row from the batch as soon as it emits EOS. With `logprobs` each sample
    keeps its tokens and their summed log-prob under the model's logits as they are, before temperature and top_p
    (the policy's own log pi, which the implicit reward margin needs), taken in the same decoding passes."""
    import torch

    device = loaded.model.device
    generator = torch.Generator(device=device).manual_seed(content_seed(params.seed, prompts))
    input_ids, mask = left_pad(ids_list, loaded.tokenizer.pad_token_id)
    with torch.inference_mode():
        state = _prefill(loaded.model, input_ids.to(device), mask.to(device), n)
        rows, sums = _decode(loaded.model, state, torch.tensor(sorted(loaded.eos_ids), device=device), params,
                             generator, logprobs)
    samples = [_to_sample(loaded, tokens, stopped, total) for (tokens, stopped), total in zip(rows, sums, strict=True)]
    return [samples[k * n:(k + 1) * n] for k in range(len(ids_list))]


def _prefill(model, input_ids, mask, n: int) -> dict:
    """Run the prompts once and repeat their cache n times: the n samples of a prompt share its prefill."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions count real tokens only
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                **_last_logits_only(model))
    out.past_key_values.batch_repeat_interleave(n)
    return {"cache": out.past_key_values, "logits": out.logits[:, -1].repeat_interleave(n, dim=0),
            "mask": mask.repeat_interleave(n, dim=0), "position": positions[:, -1:].repeat_interleave(n, dim=0)}


def _decode(model, state: dict, eos, params: SamplingConfig, generator,
            logprobs: bool = False) -> tuple[list[tuple[list[int], bool]], list[float | None]]:
    """(tokens, stopped at EOS) per row, decoding up to max_new_tokens; and per row the summed raw log-prob of its
    tokens (None without `logprobs`)."""
    import torch

    cache, logits, mask, position = state["cache"], state["logits"], state["mask"], state["position"]
    rows: list[tuple[list[int], bool]] = [([], False) for _ in range(logits.shape[0])]
    sums: list[float | None] = [0.0 if logprobs else None] * logits.shape[0]
    alive = torch.arange(logits.shape[0], device=logits.device)  # which sample each batch row is
    for step in range(params.max_new_tokens):
        next_tokens = sample_next(logits, params.temperature, params.top_p, generator)
        if logprobs:
            chosen = torch.log_softmax(logits.float(), dim=-1).gather(1, next_tokens[:, None])[:, 0]
            for row, value in zip(alive.tolist(), chosen.tolist(), strict=True):
                sums[row] += value
        done = torch.isin(next_tokens, eos)
        for row, token, is_done in zip(alive.tolist(), next_tokens.tolist(), done.tolist(), strict=True):
            rows[row][0].append(token)
            rows[row] = (rows[row][0], is_done)
        if done.all() or step == params.max_new_tokens - 1:
            break
        if done.any():  # finished rows leave the batch, so the long tail costs only what still runs
            keep = (~done).nonzero()[:, 0]
            cache.batch_select_indices(keep)
            alive, mask, position, next_tokens = alive[keep], mask[keep], position[keep], next_tokens[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        position = position + 1
        out = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=position,
                    past_key_values=cache, use_cache=True)
        logits = out.logits[:, -1]
    return rows, sums


def sample_next(logits, temperature: float, top_p: float, generator, candidates: int = 64):
    """One token per row from softmax(logits / temperature) restricted to the top_p nucleus.

    Exact, but cheap: the nucleus is looked for among the top `candidates` tokens; only the rows whose nucleus
    is larger look again among 8x as many, up to a full sort of the vocabulary."""
    import torch

    scaled = logits.float() / temperature
    if top_p >= 1.0:
        return torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)[:, 0]
    values, index = scaled.topk(min(candidates, scaled.shape[-1]), dim=-1)
    probs = (values - torch.logsumexp(scaled, dim=-1, keepdim=True)).exp()
    cumulative = probs.cumsum(dim=-1)
    keep = (cumulative - probs) < top_p  # the most likely token is always kept
    choice = torch.multinomial(torch.where(keep, probs, 0.0), 1, generator=generator)
    result = index.gather(1, choice)[:, 0]
    wide = cumulative[:, -1] < top_p
    if wide.any() and values.shape[-1] < scaled.shape[-1]:
        rows = wide.nonzero()[:, 0]
        result[rows] = sample_next(logits[rows], temperature, top_p, generator, candidates=candidates * 8)
    return result


def _last_logits_only(model) -> dict:
    """Ask for the last position's logits only when the model supports it: prefill logits over a big
    vocabulary are the largest tensor of the whole batch."""
    import inspect

    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def left_pad(ids_list: list[list[int]], pad_id: int):
    import torch

    width = max(len(ids) for ids in ids_list)
    input_ids = torch.full((len(ids_list), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids_list), width), dtype=torch.long)
    for row, ids in enumerate(ids_list):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids):] = 1
    return input_ids, mask


def _to_sample(loaded: LoadedModel, tokens: list[int], stopped: bool, logprob: float | None = None) -> Sample:
    """A row that emitted EOS stopped ('stop'; the EOS counts as a token); any other ran out ('length')."""
    body = tokens[:-1] if stopped else tokens
    text = loaded.tokenizer.decode(body, skip_special_tokens=True).strip()
    return Sample(text=text, finish_reason="stop" if stopped else "length", token_count=len(tokens),
                  token_ids=list(tokens) if logprob is not None else None, logprob=logprob)


# -- memory ------------------------------------------------------------------------------------------------------
def run_adaptive(items: Sequence, batch_size: int, run: Callable[[list], list]) -> tuple[list, int]:
    """run() over items in batches; on out-of-memory halve the batch and retry it. Returns (results, final size)."""
    results: list = []
    size, start = max(1, batch_size), 0
    while start < len(items):
        chunk = list(items[start:start + size])
        try:
            results.extend(run(chunk))
        except Exception as error:
            if not is_out_of_memory(error) or len(chunk) == 1:
                raise
            size = max(1, len(chunk) // 2)
            free_memory()
            continue
        start += len(chunk)
    return results, size


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
