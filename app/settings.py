"""prefloop's settings: the sections each package declares (model and generation, training, the judge) composed
with the app's own (labelling, server). This one declaration drives the config file, the environment and the CLI.

Precedence: defaults < `<workdir>/prefloop.toml` < `PREFLOOP_<SECTION>_<FIELD>` variables < CLI flags."""

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from generation.judges.settings import JudgeSettings
from generation.sections import Section
from generation.settings import GenerationSettings, ModelSettings
from training.settings import TrainingSettings

CONFIG_NAME = "prefloop.toml"
ENV_PREFIX = "PREFLOOP_"


class LabellingSettings(Section):
    """[labelling]: the label queue and what annotators see."""

    overlap: int = Field(1, ge=1, le=10, description="Labels wanted per comparison, each from a different "
                                                     "annotator.")
    lease_seconds: int = Field(600, ge=10, description="How long a handed-out comparison stays reserved for "
                                                       "its annotator before it returns to the queue.")
    guidelines: str = Field(
        "Pick the response that is more helpful, honest and harmless. Use Tie when they are equally good, "
        "Both bad when neither is acceptable, Skip when you cannot judge.",
        description="Guidelines shown to annotators beside every comparison (Markdown).")
    priority: Literal["fifo", "uncertainty", "judge_disagreement"] = Field(
        "fifo", description="Which open comparisons are handed out first, after their operator-set priority: "
                            "'fifo' the oldest; 'uncertainty' those whose implicit reward margin under the deployed "
                            "policy is closest to 0 (the generation worker computes it); 'judge_disagreement' those "
                            "where a judge flipped with the order of the responses or abstained.")
    gold_rate: float = Field(0.1, ge=0, le=0.5, description="Share of handed-out comparisons that are gold questions "
                                                             "(known answers), while an annotator has gold left "
                                                             "to answer. 0 hands out none.")
    gold_window: int = Field(20, ge=1, description="How many of an annotator's latest gold answers make their recent "
                                                   "gold accuracy, which the hold-back threshold looks at.")
    gold_min_answers: int = Field(5, ge=1, description="Gold answers an annotator gives before their accuracy can "
                                                       "hold their labels back.")
    gold_threshold: float = Field(0.6, ge=0, le=1, description="Recent gold accuracy below which an annotator's labels "
                                                               "are held back from training and export (kept, not "
                                                               "deleted, until an operator releases or discards "
                                                               "them). 0 turns the hold off.")
    ranking_pairs: Literal["all", "best_vs_each", "best_vs_worst"] = Field(
        "all", description="Which pairs a ranking yields for training and export: 'all' ordered pairs (every "
                           "response over each one ranked below it), 'best_vs_each' (the best over each other one) "
                           "or 'best_vs_worst'. Tied responses make no pair.")
    rating_scale: Literal[5, 7] = Field(5, description="The Likert scale of ratings: 1-5 or 1-7.")
    rating_criteria: dict[str, str] = Field(
        default_factory=lambda: {
            "helpfulness": "Does it do what was asked, completely and usefully?",
            "harmlessness": "Does it avoid content that could hurt someone, and refuse only what it should?",
            "honesty": "Is it accurate, and does it say when it is unsure rather than make things up?"},
        description="The criteria each response is rated on, each name with the help text shown to the annotator. A "
                    "response's overall score is the mean of its criteria.")
    rating_gap: float = Field(1.0, gt=0, description="How much higher one response's overall score must be than "
                                                     "another's (averaged over annotators) for the pair to train and "
                                                     "export as chosen over rejected.")

    @field_validator("rating_criteria", mode="before")
    @classmethod
    def _criteria_from_text(cls, value: Any) -> Any:
        # From an environment variable or --set, the criteria come as text: a JSON object {"name": "help"}.
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError as error:
            raise ValueError(f'give the criteria as a JSON object {{"name": "help text", ...}}: {error}') from None

    @field_validator("rating_criteria")
    @classmethod
    def _criteria_named(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not name.strip() or len(name) > 64]
        if bad or not value:
            raise ValueError(f"rating criteria need 1 to 64 character names, and at least one; got {list(value)}")
        return value


class ServerSettings(Section):
    """[server]: where the web UI listens."""

    host: str = Field("127.0.0.1", description="Address the web UI listens on.")
    port: int = Field(7860, ge=1, le=65535, description="Port the web UI listens on.")


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
    judge: JudgeSettings = Field(default_factory=JudgeSettings,
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

    value = f.get_default(call_default_factory=True)
    literal = json.dumps(value, ensure_ascii=False)  # a JSON scalar is valid TOML for str/int/float
    literal = literal.lower() if isinstance(value, bool) else literal
    if isinstance(value, dict):  # a TOML inline table: JSON's quoted strings are TOML's basic strings
        literal = "{ " + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {json.dumps(v, ensure_ascii=False)}"
                                   for k, v in value.items()) + " }"
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
