"""RoundConfig: one round's settings as plain data, so training/ never imports app/.

The app builds it from `settings.training` (same field names and defaults) plus the few generation settings
the probes need; it is stored in TrainingRun.config, where the round process reads it back."""

from dataclasses import asdict, dataclass, fields
from typing import Any

JUDGE_MODES = ("never", "fill", "always")
REFERENCES = ("parent", "initial")


@dataclass(frozen=True)
class RoundConfig:
    """Mirrors app.settings.TrainingSettings field by field, plus probe sampling and what to do after."""
    judge_labels: str = "never"
    min_pairs: int = 16
    replay_fraction: float = 0.25
    eval_fraction: float = 0.1
    beta: float = 0.1
    loss_type: str = "sigmoid"
    learning_rate: float = 5e-6
    epochs: float = 1.0
    max_steps: int = 0
    batch_size: int = 8
    max_length: int = 512
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    reference: str = "parent"
    precompute_ref_log_probs: bool = True
    eval_max_pairs: int = 256
    probe_prompts: int = 16
    probe_samples: int = 2
    auto_every: int = 0
    auto_retry_s: float = 60.0
    auto_retry_max_s: float = 3600.0
    auto_max_failures: int = 3
    auto_deploy: bool = False
    deploy_min_accuracy: float = 0.0
    stale_after_s: float = 120.0
    seed: int = 0
    win_rate_judge: bool = False
    # -- not training settings: how probes sample, and what happens after the round --
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 64
    device: str = "auto"
    deploy: bool = False  # deploy the new version when the round succeeds (prefloop train --deploy)
    retire_open: bool = True  # generation.on_deploy == 'retire'
    judge: dict[str, Any] | None = None  # generation.judges.JudgeConfig as a dict: the win-rate judge (or None)

    def __post_init__(self):
        if self.judge_labels not in JUDGE_MODES:
            raise ValueError(f"training.judge_labels must be one of {', '.join(JUDGE_MODES)}, "
                             f"not {self.judge_labels!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"training.reference must be one of {', '.join(REFERENCES)}, not {self.reference!r}")
        if self.batch_size < 1 or self.min_pairs < 1:
            raise ValueError("training.batch_size and training.min_pairs must be at least 1")

    @property
    def sources(self) -> tuple[str, ...]:
        """Label sources that may resolve a training pair."""
        return ("human", "import") if self.judge_labels == "never" else ("human", "import", "judge")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RoundConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
