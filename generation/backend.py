"""The one generator interface (Backend), its results (Sample, SkipReason), its errors and the helpers every
backend shares. It imports no backend: `hf` and `vllm` (generation/hf_backend.py, generation/vllm_backend.py) are
started by generation/backends.py's load_backend."""

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from generation.config import SamplingConfig

__all__ = ["Backend", "ModelLoadError", "Sample", "SamplingConfig", "SkipReason"]

ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class Sample:
    """One sampled response, as a generator backend returns it. Asked for log-probs (generate(logprobs=True)), a
    backend that has them gives the tokens it sampled (the EOS included when it stopped) and the sum of their
    log-probs under the model's own distribution (not the tempered, top-p one sampled from)."""
    text: str
    finish_reason: str  # stop|length
    token_count: int
    token_ids: list[int] | None = None
    logprob: float | None = None


@dataclass(frozen=True)
class SkipReason:
    """Why a prompt got no samples (e.g. it is too long for the model's context)."""
    reason: str


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names it and says what to do."""


class Backend(ABC):
    """Samples n responses per chat prompt from the model version it currently serves."""

    kind: str = ""  # 'hf', 'vllm' or 'remote'; stored with every response's sampling params
    path: str  # the model folder (or Hub id) being served now

    @property
    def ready(self) -> bool:
        """False after a load of `path` failed part-way: a caller that wants `path` must load it again."""
        return True

    @abstractmethod
    def generate(self, prompts: list[list[dict]], n: int, params: SamplingConfig,
                 logprobs: bool = False) -> list[list[Sample] | SkipReason]:
        """One entry per prompt, in order: its n samples, or why it was skipped. Never raises for one bad prompt.
        `logprobs`: fill Sample.token_ids and Sample.logprob where this backend can (the margins of
        generation/margins.py)."""

    def sequence_logprobs(self, sequences: list[list[int]]) -> list[list[float]] | None:
        """log p(token_t | tokens_<t), t >= 1, of each token sequence under the model served now; None when this
        backend cannot compute them (the caller then loads the version with transformers)."""
        return None

    @abstractmethod
    def load_version(self, path: str) -> None:
        """Serve the model at `path` from now on, in place, without restarting the process.

        A generate() call never sees a half-loaded model."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Most tokens (prompt + response) the model takes."""

    @abstractmethod
    def close(self) -> None:
        """Free the model's memory."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def is_adapter(path: str) -> bool:
    """A version folder holding adapter_config.json is a LoRA adapter on a base model."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str) -> str:
    """The base model a LoRA adapter folder was trained on."""
    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"LoRA adapter {path} does not name its base model (base_model_name_or_path)")
    return base


def same_model(a: str, b: str) -> bool:
    """Do two version paths name the same model? Folders compare by their resolved location."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def content_seed(seed: int, prompts: list) -> int:
    """A seed from the run seed and the prompts themselves: the same prompts with the same seed and model
    sample the same responses in any run, whatever else ran before."""
    key = json.dumps([seed, prompts], sort_keys=True, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF


def too_long_reason(prompt_tokens: int, max_new_tokens: int, context_length: int) -> SkipReason | None:
    if prompt_tokens + max_new_tokens <= context_length:
        return None
    return SkipReason(f"prompt is {prompt_tokens} tokens; with max_new_tokens={max_new_tokens} it exceeds the "
                      f"model's context of {context_length} tokens")


def load_error_message(model: str, cause: BaseException | str) -> str:
    return (f"could not load model {model!r}: {cause}. If this machine is offline or the model is not a local "
            f"folder, build the offline tiny model with `prefloop tiny-model DIR` and set model.base to DIR "
            f"(or to 'tiny'), or set model.base to a local model folder.")
