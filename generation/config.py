"""SamplingConfig: one sampling job as plain data: the [generation] settings plus labelling's overlap.

Its fields come from GenerationSettings (generation/settings.py), never restated; the app builds it with
`SamplingConfig.from_settings(settings.generation, overlap=settings.labelling.overlap)`."""

from typing import Any

from generation.sections import SettingsData, settings_data
from generation.settings import GenerationSettings


@settings_data(GenerationSettings)
class SamplingConfig(SettingsData):
    """Every [generation] setting, with the same names and defaults, plus `overlap`. Looser than the settings
    where the judges and probes need it (one sample per prompt)."""

    overlap: int = 1  # labelling.overlap: labels wanted per comparison

    def __post_init__(self):
        self.check_choices("pairing", "bad_samples")
        if self.samples_per_prompt < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("samples_per_prompt, batch_size and max_new_tokens must be at least 1")

    def sampling_params(self) -> dict[str, Any]:
        """What is stored beside every response: enough to say how it was sampled."""
        return {"n": self.samples_per_prompt, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed}
