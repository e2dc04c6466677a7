"""RoundConfig: one round as plain data, so training/ never imports app/.

Its setting fields come from the declarations (training/settings.py, and the few generation and model settings the
probes need), never restated; it is stored in TrainingRun.config, where the round process reads it back."""

import importlib
from dataclasses import asdict, fields
from typing import Any

from generation.sections import SettingsData, choices, pick, settings_data
from generation.settings import GenerationSettings, ModelSettings
from training.settings import TrainingSettings

JUDGE_MODES = choices(TrainingSettings, "judge_labels")
REFERENCES = choices(TrainingSettings, "reference")
METHODS = choices(TrainingSettings, "method")


@settings_data(TrainingSettings, pick(GenerationSettings, "temperature", "top_p", "max_new_tokens"),
               pick(ModelSettings, "device"))
class RoundConfig(SettingsData):
    """Every [training] setting, how the probes sample (generation.temperature, top_p, max_new_tokens) and where
    the round runs (model.device), with the same names and defaults; plus what happens after the round."""

    deploy: bool = False  # deploy the new version when the round succeeds (prefloop train --deploy)
    retire_open: bool = True  # generation.on_deploy == 'retire'
    judge: dict[str, Any] | None = None  # generation.judges.JudgeConfig as a dict: the win-rate judge (or None)
    # data.quality.GoldPolicy as a dict (the labelling.gold_* settings): whose labels are held back when the round
    # process reads its pairs back, as when they were selected. None: GoldPolicy's defaults.
    gold: dict[str, Any] | None = None
    # data.derived.Derivation as a dict (labelling.ranking_pairs, rating_gap): the pairs rankings and ratings yield.
    derivation: dict[str, Any] | None = None

    def __post_init__(self):
        self.check_choices("method", "judge_labels", "reference", prefix="training.")
        if self.batch_size < 1 or self.min_pairs < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("training.batch_size, training.gradient_accumulation_steps and training.min_pairs must "
                             "be at least 1")
        problem = four_bit_problem(self) if self.load_in_4bit else None
        if problem:  # refused when the round is queued, before anything is loaded
            raise ValueError(problem)

    @property
    def sources(self) -> tuple[str, ...]:
        """Label sources that may resolve a training pair."""
        return ("human", "import") if self.judge_labels == "never" else ("human", "import", "judge")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RoundConfig":
        """Read back a stored config; keys an older (or newer) prefloop wrote that this one lacks are ignored, and
        missing ones take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def four_bit_problem(cfg: RoundConfig) -> str | None:
    """Why a training.load_in_4bit round cannot run here (None when it can): bitsandbytes quantizes the weights
    on a CUDA GPU, and 4-bit weights cannot be trained themselves, only a LoRA adapter on them (QLoRA)."""
    if not cfg.lora:
        return "training.load_in_4bit needs training.lora = true (QLoRA trains an adapter on the 4-bit weights)"
    from generation.hf_backend import resolve_device

    device = resolve_device(cfg.device)
    if not device.startswith("cuda"):
        return f"training.load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit); the round runs on {device}"
    try:
        importlib.import_module("bitsandbytes")
    except ImportError:
        return "training.load_in_4bit needs the bitsandbytes package: pip install bitsandbytes"
    return None
