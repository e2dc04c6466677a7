"""SamplingConfig: the generation settings as plain data, so generation/ never imports app/.

The app builds it with `SamplingConfig(**settings.generation.model_dump(), overlap=settings.labelling.overlap)`."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplingConfig:
    """Mirrors app.settings.GenerationSettings field by field (same names, same defaults), plus `overlap`."""
    samples_per_prompt: int = 4
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 64
    seed: int = 0
    batch_size: int = 8
    pairing: str = "random"  # random|diverse|all
    max_pairs_per_prompt: int = 6
    bad_samples: str = "drop"  # drop|keep
    on_deploy: str = "retire"  # retire|keep
    queue_target: int = 32
    watch_interval_s: float = 5.0
    overlap: int = 1  # labelling.overlap: labels wanted per comparison

    def __post_init__(self):
        if self.pairing not in ("random", "diverse", "all"):
            raise ValueError(f"pairing must be random, diverse or all, not {self.pairing!r}")
        if self.bad_samples not in ("drop", "keep"):
            raise ValueError(f"bad_samples must be drop or keep, not {self.bad_samples!r}")
        if self.samples_per_prompt < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("samples_per_prompt, batch_size and max_new_tokens must be at least 1")

    def sampling_params(self) -> dict[str, Any]:
        """What is stored beside every response: enough to say how it was sampled."""
        return {"n": self.samples_per_prompt, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed}
