"""prefloop's settings, declared once: this declaration drives the config file, the environment and the CLI.

Precedence: defaults < `<workdir>/prefloop.toml` < `PREFLOOP_<SECTION>_<FIELD>` variables < CLI flags."""

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_NAME = "prefloop.toml"
ENV_PREFIX = "PREFLOOP_"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(Section):
    base: str = Field("tiny", description="Base model (v0): a local folder, a Hugging Face Hub id, or 'tiny' for "
                                          "the offline tiny model that prefloop builds itself.")
    backend: Literal["hf", "vllm"] = Field("hf", description="Generator backend: 'hf' (transformers, CPU or GPU) "
                                                             "or 'vllm' (GPU only, install the vllm extra).")
    device: str = Field("auto", description="Device for the hf backend: 'auto', 'cpu' or 'cuda[:N]'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype for generation; 'auto' is float32 on CPU and bfloat16 on GPU.")
    gpu_memory_utilization: float = Field(0.45, gt=0, le=1, description="vLLM: share of GPU memory the engine "
                                                                         "may take (the trainer needs the rest).")


class GenerationSettings(Section):
    samples_per_prompt: int = Field(4, ge=2, le=64, description="Responses sampled per prompt (n).")
    temperature: float = Field(0.8, gt=0, le=2, description="Sampling temperature; must be > 0 so samples differ.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(64, ge=1, description="Longest response in tokens; longer ones end with "
                                                      "finish reason 'length'.")
    seed: int = Field(0, description="Seed for sampling; a run with the same seed and model repeats itself.")
    batch_size: int = Field(8, ge=1, description="Prompts per generation batch (the hf backend halves it when "
                                                 "memory runs out).")
    pairing: Literal["random", "diverse", "all"] = Field(
        "random", description="Which samples make a comparison: 'random' distinct pair, 'diverse' (the most "
                              "different pair by text distance), or 'all' pairs up to max_pairs_per_prompt.")
    max_pairs_per_prompt: int = Field(6, ge=1, description="Cap on comparisons per prompt with pairing='all'.")
    bad_samples: Literal["drop", "keep"] = Field(
        "drop", description="Empty or truncated (finish reason 'length') samples: 'drop' stores them but never "
                            "pairs them; 'keep' pairs them like any other.")
    on_deploy: Literal["retire", "keep"] = Field(
        "retire", description="When a new version is deployed, open unlabelled comparisons of older versions are "
                              "'retire'd (labels stay on-policy) or kept in the queue.")
    queue_target: int = Field(32, ge=1, description="generate --watch keeps this many open comparisons queued.")
    watch_interval_s: float = Field(5.0, gt=0, description="Seconds between queue checks in generate --watch.")


class LabellingSettings(Section):
    overlap: int = Field(1, ge=1, le=10, description="Labels wanted per comparison, each from a different "
                                                     "annotator.")
    lease_seconds: int = Field(600, ge=10, description="How long a handed-out comparison stays reserved for "
                                                       "its annotator before it returns to the queue.")
    guidelines: str = Field(
        "Pick the response that is more helpful, honest and harmless. Use Tie when they are equally good, "
        "Both bad when neither is acceptable, Skip when you cannot judge.",
        description="Guidelines shown to annotators beside every comparison (Markdown).")


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address the web UI listens on.")
    port: int = Field(7860, ge=1, le=65535, description="Port the web UI listens on.")


# -- training (DPO rounds) -----------------------------------------------------------------------------------------
class TrainingSettings(Section):
    judge_labels: Literal["never", "fill", "always"] = Field(
        "never", description="LLM-judge labels in training pairs: 'never'; 'fill' only comparisons no human has "
                             "labelled; 'always' any comparison that human and imported labels leave unresolved.")
    min_pairs: int = Field(16, ge=1, description="A round refuses to start with fewer new training pairs than this.")
    replay_fraction: float = Field(0.25, ge=0, le=10, description="Older, already trained-on pairs replayed in a "
                                                                  "round, as a share of its new pairs.")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Share of prompts held out for evaluation (chosen "
                                                              "by a hash of the prompt, so fixed across rounds).")
    beta: float = Field(0.1, gt=0, description="DPO beta: how far the policy may move from the reference.")
    loss_type: str = Field("sigmoid", description="TRL DPO loss type ('sigmoid', 'ipo', 'hinge', 'robust', ...).")
    learning_rate: float = Field(5e-6, gt=0, description="Peak learning rate of the round.")
    epochs: float = Field(1.0, gt=0, description="Epochs over the round's pairs (ignored when max_steps > 0).")
    max_steps: int = Field(0, ge=0, description="Optimizer steps per round; 0 means train for `epochs`.")
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step.")
    max_length: int = Field(512, ge=8, description="Longest prompt + response in tokens; longer ones are cut.")
    lora: bool = Field(False, description="Train a LoRA adapter (peft) on the parent instead of all weights.")
    lora_rank: int = Field(16, ge=1, description="LoRA rank r (used when lora is true).")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha scaling (used when lora is true).")
    reference: Literal["parent", "initial"] = Field(
        "parent", description="DPO reference model: 'parent' (the round's starting version) or 'initial' (v0). "
                              "LoRA rounds always use the parent (the adapter switched off).")
    precompute_ref_log_probs: bool = Field(
        True, description="Compute the reference log-probs once before training, so the reference model is not "
                          "kept in memory while training.")
    eval_max_pairs: int = Field(256, ge=0, description="Most held-out pairs scored before and after a round.")
    probe_prompts: int = Field(16, ge=0, description="Held-out prompts sampled before and after a round to measure "
                                                     "response length and EOS rate (0 skips the probes).")
    probe_samples: int = Field(2, ge=1, description="Samples per probe prompt.")
    auto_every: int = Field(0, ge=0, description="Start a round automatically after this many newly resolved "
                                                 "pairs (0 turns automatic rounds off).")
    auto_retry_s: float = Field(60.0, ge=0, description="After a failed automatic round, wait this long before the "
                                                        "next automatic try; the wait doubles with each failure "
                                                        "in a row.")
    auto_retry_max_s: float = Field(3600.0, ge=0, description="The longest wait between failed automatic rounds.")
    auto_max_failures: int = Field(3, ge=0, description="Pause automatic rounds after this many failures in a row, "
                                                        "until an operator resumes them (console, or `prefloop "
                                                        "rounds --resume-auto`); 0 never pauses.")
    auto_deploy: bool = Field(False, description="Deploy a round's version automatically when it passes the gate.")
    deploy_min_accuracy: float = Field(0.0, ge=0, le=1, description="Gate for automatic deploys: the held-out "
                                                                    "implicit-reward accuracy after the round must "
                                                                    "reach this (0 means no gate).")
    stale_after_s: float = Field(120.0, gt=0, description="A running round whose heartbeat is older than this (or "
                                                          "whose process is gone) is marked failed.")
    seed: int = Field(0, description="Seed for replay sampling and training.")
    win_rate_judge: bool = Field(False, description="Evaluate each round's win-rate against its parent with the "
                                                    "[judge] settings (both orders, ties count half).")


# -- issue #6: the LLM-judge worker ----------------------------------------------------------------------------------
class JudgeSettings(Section):
    kind: Literal["llm", "openai", "reward-model", "python"] = Field(
        "llm", description="Judge type: 'llm' (a local chat model via the hf/vllm backend), 'openai' (an "
                           "OpenAI-compatible chat endpoint), 'reward-model' (a sequence classifier scores each "
                           "response) or 'python' (a module:function rule).")
    name: str = Field("", description="Judge name; its labels are stored with annotator 'judge:<name>' "
                                      "(empty: the kind).")
    model_path: str = Field("", description="llm / reward-model: the model folder or Hub id (llm, empty: the "
                                            "deployed version).")
    backend: Literal["hf", "vllm"] = Field("hf", description="llm: the generator backend that runs the judge model.")
    device: str = Field("auto", description="llm (hf) / reward-model: 'auto', 'cpu' or 'cuda[:N]'.")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="openai: base URL of the endpoint "
                                                                  "(…/chat/completions is appended).")
    model: str = Field("", description="openai: the model name sent with every request.")
    api_key_env: str = Field("PREFLOOP_JUDGE_API_KEY", description="openai: environment variable holding the API "
                                                                   "key (sent as a Bearer token; unset: none).")
    timeout_s: float = Field(60.0, gt=0, description="openai: seconds before a request times out (then retried).")
    max_retries: int = Field(3, ge=0, description="openai: retries after a timeout, connection error, 429 or 5xx; "
                                                  "still failing, the pair is abstained (no label).")
    backoff_s: float = Field(1.0, ge=0, description="openai: first retry delay in seconds, doubled each retry.")
    concurrency: int = Field(4, ge=1, description="openai: requests in flight at once.")
    temperature: float = Field(0.0, ge=0, le=2, description="llm / openai: sampling temperature of the judge; "
                                                            "0 is greedy.")
    max_new_tokens: int = Field(512, ge=1, description="llm / openai: longest judge answer in tokens (explanation "
                                                       "and verdict).")
    margin: float = Field(0.5, ge=0, description="reward-model: score difference below which the verdict is a tie.")
    function: str = Field("", description="python: the rule as 'module:function', called with (prompt messages, "
                                          "response A, response B); e.g. 'generation.judges:prefer_shorter'.")
    mode: Literal["all", "unseen", "calibration"] = Field(
        "unseen", description="Which comparisons the judge labels: 'all' open ones, 'unseen' open ones no human "
                              "holds or has labelled, 'calibration' a fixed share that humans label too.")
    calibration_share: float = Field(0.1, gt=0, le=1, description="mode 'calibration': share of comparisons "
                                                                  "(picked by a hash of the id) the judge labels.")
    batch_size: int = Field(16, ge=1, description="Comparisons judged per batch (each in both orders); the run's "
                                                  "counts are saved after every batch.")
    watch_interval_s: float = Field(10.0, gt=0, description="judge --watch: seconds between checks for new "
                                                            "comparisons when none is left.")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    database_url: str = Field("", description="SQLAlchemy URL of the database; empty means the SQLite file "
                                              "prefloop.db in the workdir. Use PostgreSQL for many annotators.")
    model: ModelSettings = Field(default_factory=ModelSettings, description="The base model and the generator.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings,
                                           description="Sampling responses and pairing them into comparisons.")
    labelling: LabellingSettings = Field(default_factory=LabellingSettings,
                                         description="The label queue and what annotators see.")
    server: ServerSettings = Field(default_factory=ServerSettings, description="The web UI server.")
    training: TrainingSettings = Field(default_factory=TrainingSettings,
                                       description="DPO rounds: which pairs, how to train, when to deploy.")
    judge: JudgeSettings = Field(default_factory=JudgeSettings,  # issue #6
                                 description="The LLM-judge worker: which judge, how to call it, what it "
                                             "labels.")


class SettingsError(ValueError):
    """A setting's value is wrong; the message says where it came from."""


def sections() -> dict[str, type[Section]]:
    return {name: f.annotation for name, f in Settings.model_fields.items() if _is_section(f.annotation)}


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Section)


def load_settings(workdir: Path, overrides: dict[str, str] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Read defaults, the workdir's config file, PREFLOOP_* variables and `overrides` ('section.field': value)."""
    data = _read_config(workdir / CONFIG_NAME)
    for key, value in _env_values(os.environ if environ is None else environ).items():
        _assign(data, key, value)
    for key, value in (overrides or {}).items():
        _assign(data, key, value)
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise SettingsError(_describe(e)) from None


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path}: {e}") from None


def _env_values(environ: dict[str, str]) -> dict[str, str]:
    """PREFLOOP_GENERATION_TEMPERATURE=0.7 -> {'generation.temperature': '0.7'}; PREFLOOP_DATABASE_URL too."""
    found = {}
    for key in setting_keys():
        var = ENV_PREFIX + key.replace(".", "_").upper()
        if var in environ:
            found[key] = environ[var]
    return found


def setting_keys() -> list[str]:
    """Every setting's dotted name, in declaration order."""
    keys = []
    for name, f in Settings.model_fields.items():
        if _is_section(f.annotation):
            keys += [f"{name}.{sub}" for sub in f.annotation.model_fields]
        else:
            keys.append(name)
    return keys


def _assign(data: dict[str, Any], key: str, value: Any) -> None:
    if key not in setting_keys():
        raise SettingsError(f"unknown setting {key!r}; known settings: {', '.join(setting_keys())}")
    section, _, name = key.rpartition(".")
    target = data.setdefault(section, {}) if section else data
    target[name] = value


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"setting {where}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def render_config() -> str:
    """The commented config file `prefloop init` writes: every setting, its help and its default."""
    lines = ["# prefloop settings. Every line is a default: uncomment and edit to change it.",
             f"# Environment variables override this file: {ENV_PREFIX}<SECTION>_<FIELD>, "
             f"e.g. {ENV_PREFIX}GENERATION_TEMPERATURE=0.7.", ""]
    for name, f in Settings.model_fields.items():
        if _is_section(f.annotation):
            lines += [f"# {f.description}", f"[{name}]"]
            lines += _render_fields(f.annotation)
        else:
            lines += _render_field(name, f)
        lines.append("")
    return "\n".join(lines)


def _render_fields(model: type[BaseModel]) -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        out += _render_field(name, f)
    return out


def _render_field(name: str, f) -> list[str]:
    import json

    value = f.get_default(call_default_factory=True)
    literal = json.dumps(value, ensure_ascii=False)  # a JSON scalar is valid TOML for str/int/float
    literal = literal.lower() if isinstance(value, bool) else literal
    return [f"# {f.description}", f"# {name} = {literal}"]


def describe_settings(settings: Settings) -> list[tuple[str, Any, str]]:
    """(dotted name, current value, help) for every setting, for `prefloop config`."""
    rows = []
    for key in setting_keys():
        section, _, name = key.rpartition(".")
        owner = getattr(settings, section) if section else settings
        field = type(owner).model_fields[name]
        rows.append((key, getattr(owner, name), field.description or ""))
    return rows
