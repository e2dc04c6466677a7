"""SamplingConfig: one sampling job as plain data: the [generation] settings plus labelling's overlap.

Its fields come from GenerationSettings (generation/settings.py), never restated; the app builds it with
`SamplingConfig.from_settings(settings.generation, overlap=settings.labelling.overlap)`."""

from typing import Any

from data.rules import MAX_K
from generation.sections import SettingsData, settings_data
from generation.settings import GenerationSettings


@settings_data(GenerationSettings)
class SamplingConfig(SettingsData):
    """Every [generation] setting, with the same names and defaults, plus `overlap`. Looser than the settings
    where the judges and probes need it (one sample per prompt)."""

    overlap: int = 1  # labelling.overlap: labels wanted per comparison

    def __post_init__(self):
        self.check_choices("pairing", "bad_samples", "feedback")
        if self.samples_per_prompt < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("samples_per_prompt, batch_size and max_new_tokens must be at least 1")
        if self.continue_turns < 0:
            raise ValueError(f"generation.continue_turns must be 0 (off) or more, not {self.continue_turns}")
        if self.feedback in ("ranking", "rating"):
            self._check_k()

    def _check_k(self) -> None:
        """A ranking or rating holds k of one prompt's samples: 2 <= k <= samples_per_prompt (and rules.MAX_K)."""
        k, n = self.responses_per_comparison, self.samples_per_prompt
        if not 2 <= k <= MAX_K:
            raise ValueError(f"generation.responses_per_comparison must be between 2 and {MAX_K}, not {k}")
        if k > n:
            raise ValueError(f"generation.responses_per_comparison ({k}) is more than generation.samples_per_prompt "
                             f"({n}): a {self.feedback} comparison holds only samples of one prompt; raise "
                             "samples_per_prompt or lower responses_per_comparison")

    def sampling_params(self) -> dict[str, Any]:
        """What is stored beside every response: enough to say how it was sampled."""
        return {"n": self.samples_per_prompt, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed}
