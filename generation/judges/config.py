"""JudgeConfig: a judge's settings (JudgeSpec) as plain data, what `make_judge` takes and a round stores.

The app builds it with `JudgeConfig.from_settings(settings.judge)`; a round stores it as a dict and rebuilds it
with `JudgeConfig(**data)`."""

from generation.judges.settings import JudgeSpec
from generation.sections import SettingsData, settings_data


@settings_data(JudgeSpec)
class JudgeConfig(SettingsData):
    """Every JudgeSpec setting, with the same names and defaults."""

    @property
    def label_name(self) -> str:
        return self.name or self.kind
