"""Settings declared once: each section by the package that uses it, and the running code's configs derived from
those declarations (same names, defaults and help), never a field restated."""

import dataclasses

import pytest

from app.settings import Settings, load_settings, sections
from generation.config import SamplingConfig
from generation.judges import JudgeConfig, JudgeSettings, JudgeSpec
from generation.sections import Section, SettingsData, choices, pick, settings_data
from generation.settings import GenerationSettings, ModelSettings
from training.config import JUDGE_MODES, REFERENCES, RoundConfig
from training.settings import TrainingSettings


def test_each_section_is_declared_by_its_package_and_composed_in_the_app():
    owners = {name: section.__module__ for name, section in sections().items()}
    assert owners == {"model": "generation.settings", "generation": "generation.settings",
                      "labelling": "app.settings", "server": "app.settings", "training": "training.settings",
                      "judge": "generation.judges.settings"}


def setting_fields(*sources) -> dict[str, tuple]:
    """name -> (default, help) of these sections' fields, or of the (section, names) given."""
    out = {}
    for source in sources:
        section, names = source if isinstance(source, tuple) else (source, list(source.model_fields))
        for name in names:
            info = section.model_fields[name]
            out[name] = (info.default, info.description)
    return out


def config_fields(cls) -> dict[str, tuple]:
    return {f.name: (f.default, f.metadata.get("help")) for f in dataclasses.fields(cls)}


def test_sampling_config_is_the_generation_section_plus_overlap():
    own = {"overlap": (1, None)}
    assert config_fields(SamplingConfig) == {**setting_fields(GenerationSettings), **own}
    assert SamplingConfig.from_settings(GenerationSettings(), overlap=1) == SamplingConfig()


def test_round_config_is_the_training_section_plus_what_the_probes_and_the_round_need():
    probes = (GenerationSettings, ["temperature", "top_p", "max_new_tokens"])
    own = {"deploy": (False, None), "retire_open": (True, None), "judge": (None, None), "gold": (None, None),
           "derivation": (None, None)}
    expected = {**setting_fields(TrainingSettings, probes, (ModelSettings, ["device"])), **own}
    assert config_fields(RoundConfig) == expected
    assert list(config_fields(RoundConfig)) == list(expected)  # declaration order, as stored in TrainingRun.config


def test_judge_config_is_the_judge_spec_and_the_judge_section_adds_only_the_worker_fields():
    assert config_fields(JudgeConfig) == setting_fields(JudgeSpec)
    assert issubclass(JudgeSettings, JudgeSpec)
    worker = set(JudgeSettings.model_fields) - set(JudgeSpec.model_fields)
    assert worker == {"mode", "calibration_share", "batch_size", "watch_interval_s"}
    assert list(JudgeSettings.model_fields)[:len(JudgeSpec.model_fields)] == list(JudgeSpec.model_fields)


def test_allowed_values_come_from_the_declaration():
    assert JUDGE_MODES == ("never", "fill", "always") and REFERENCES == ("parent", "initial")
    assert choices(GenerationSettings, "pairing") == ("random", "diverse", "all")
    with pytest.raises(TypeError, match="not a Literal"):
        choices(GenerationSettings, "seed")
    with pytest.raises(ValueError, match="pairing must be one of random, diverse, all, not 'best'"):
        SamplingConfig(pairing="best")
    with pytest.raises(ValueError, match="training.reference must be one of parent, initial"):
        RoundConfig(reference="grandparent")
    with pytest.raises(ValueError, match="training.judge_labels must be one of never, fill, always"):
        RoundConfig(judge_labels="sometimes")


def test_configs_stay_looser_than_the_settings_where_the_judges_and_probes_need_it():
    assert SamplingConfig(samples_per_prompt=1).samples_per_prompt == 1  # the setting wants at least 2
    with pytest.raises(ValueError, match="at least 1"):
        SamplingConfig(samples_per_prompt=0)
    with pytest.raises(ValueError, match="at least 1"):
        RoundConfig(min_pairs=0)


def test_from_settings_takes_each_field_from_the_section_that_declares_it(tmp_path):
    env = {"PREFLOOP_TRAINING_SEED": "7", "PREFLOOP_GENERATION_SEED": "3", "PREFLOOP_GENERATION_TOP_P": "0.5",
           "PREFLOOP_TRAINING_BATCH_SIZE": "2", "PREFLOOP_MODEL_DEVICE": "cpu", "PREFLOOP_JUDGE_KIND": "python"}
    s = load_settings(tmp_path, {"generation.samples_per_prompt": "5", "judge.mode": "all"}, environ=env)
    cfg = RoundConfig.from_settings(s.training, s.generation, s.model, deploy=True)
    assert (cfg.seed, cfg.batch_size, cfg.top_p, cfg.device, cfg.deploy) == (7, 2, 0.5, "cpu", True)
    sampling = SamplingConfig.from_settings(s.generation, overlap=3)
    assert (sampling.seed, sampling.samples_per_prompt, sampling.overlap) == (3, 5, 3)
    judge = JudgeConfig.from_settings(s.judge, name="rule")
    assert (judge.kind, judge.label_name) == ("python", "rule")  # the worker's mode is not the judge's
    assert SamplingConfig.from_settings(s.generation, samples_per_prompt=2).samples_per_prompt == 2
    with pytest.raises(TypeError, match="SamplingConfig takes no settings from TrainingSettings"):
        SamplingConfig.from_settings(s.training)


def test_round_config_round_trips_and_reads_configs_of_other_versions():
    cfg = RoundConfig.from_settings(Settings().training, Settings().generation, Settings().model, deploy=True,
                                    judge=dataclasses.asdict(JudgeConfig(kind="python", function="m:f")))
    assert RoundConfig.from_dict(cfg.to_dict()) == cfg
    old = {"min_pairs": 4, "beta": 0.2, "a_setting_since_removed": 1}  # and every newer field missing
    assert RoundConfig.from_dict(old) == RoundConfig(min_pairs=4, beta=0.2)
    assert JudgeConfig(**cfg.judge) == JudgeConfig(kind="python", function="m:f")


def test_settings_data_refuses_a_field_stated_twice_or_a_setting_it_lacks():
    class Tiny(Section):
        size: int = 1

    with pytest.raises(TypeError, match="Twice.size is declared twice"):
        @settings_data(Tiny)
        class Twice(SettingsData):
            size: int = 2

    with pytest.raises(TypeError, match="declares no colour"):
        pick(Tiny, "colour")

    @settings_data(Tiny)
    class Derived(SettingsData):
        extra: str = "x"

    assert Derived(size=3) == Derived.from_settings(Tiny(size=3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Derived().size = 4
