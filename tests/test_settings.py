"""Settings: declared once, every field documented, file < environment < overrides."""

import tomllib

import pytest

from app.settings import (
    CONFIG_NAME,
    Settings,
    SettingsError,
    describe_settings,
    load_settings,
    render_config,
    sections,
    setting_keys,
)


def test_every_setting_has_help_text():
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"
    for section_name, section in sections().items():
        for name, field in section.model_fields.items():
            assert field.description and len(field.description) > 10, f"{section_name}.{name} is undocumented"


def test_rendered_config_mentions_every_setting_with_its_help():
    text = render_config()
    for key, _value, help_text in describe_settings(Settings()):
        assert f"# {key.rpartition('.')[2]} = " in text, key
        assert help_text in text


def test_rendered_config_uncommented_parses_back_to_the_defaults():
    text = render_config()
    lines = [line[2:] if line.startswith("# ") and " = " in line else line for line in text.splitlines()]
    data = tomllib.loads("\n".join(lines))
    assert Settings.model_validate(data) == Settings()


def test_config_file_then_environment_then_overrides(tmp_path):
    (tmp_path / CONFIG_NAME).write_text("[generation]\ntemperature = 0.5\nsamples_per_prompt = 3\n")
    env = {"PREFLOOP_GENERATION_TEMPERATURE": "0.6", "PREFLOOP_LABELLING_OVERLAP": "2"}
    s = load_settings(tmp_path, {"labelling.overlap": "3"}, environ=env)
    assert s.generation.samples_per_prompt == 3
    assert s.generation.temperature == 0.6
    assert s.labelling.overlap == 3


def test_a_bad_value_names_the_setting(tmp_path):
    with pytest.raises(SettingsError, match="generation.temperature"):
        load_settings(tmp_path, {"generation.temperature": "hot"}, environ={})


def test_an_unknown_setting_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(SettingsError, match="unknown setting 'generation.temprature'.*generation.temperature"):
        load_settings(tmp_path, {"generation.temprature": "0.5"}, environ={})


def test_a_config_file_with_a_typo_is_refused(tmp_path):
    (tmp_path / CONFIG_NAME).write_text("[generation]\ntemprature = 0.5\n")
    with pytest.raises(SettingsError, match="generation.temprature"):
        load_settings(tmp_path, environ={})


def test_broken_toml_names_the_file(tmp_path):
    (tmp_path / CONFIG_NAME).write_text("[generation\n")
    with pytest.raises(SettingsError, match=CONFIG_NAME):
        load_settings(tmp_path, environ={})


def test_setting_keys_cover_every_section_field():
    keys = setting_keys()
    assert "database_url" in keys and "generation.pairing" in keys and "labelling.overlap" in keys
    assert len(keys) == len(set(keys))


def test_rating_criteria_come_from_the_config_file_or_as_json_from_the_environment(workdir):
    (workdir / "prefloop.toml").write_text('[labelling]\nrating_criteria = { clarity = "Is it easy to follow?" }\n')
    assert load_settings(workdir, environ={}).labelling.rating_criteria == {"clarity": "Is it easy to follow?"}
    env = {"PREFLOOP_LABELLING_RATING_CRITERIA": '{"tone": "Is it polite?", "facts": "Is it right?"}'}
    assert list(load_settings(workdir, environ=env).labelling.rating_criteria) == ["tone", "facts"]
    with pytest.raises(SettingsError, match="JSON object"):
        load_settings(workdir, environ={"PREFLOOP_LABELLING_RATING_CRITERIA": "tone"})
    with pytest.raises(SettingsError, match="at least one"):
        load_settings(workdir, environ={"PREFLOOP_LABELLING_RATING_CRITERIA": "{}"})
