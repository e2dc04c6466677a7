"""The base of every settings section, and `settings_data`: sections as the plain frozen data the running code takes.

A section is declared once, with help on every field, by the package that uses it, and composed in app/settings.py;
the running code's config classes take their fields from that declaration instead of restating them."""

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


class Section(BaseModel):
    """One `[section]` of prefloop.toml: unknown keys are refused and every assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def choices(section: type[Section], name: str) -> tuple[str, ...]:
    """The values a Literal setting allows, in the order they are declared."""
    annotation = section.model_fields[name].annotation
    if get_origin(annotation) is not Literal:
        raise TypeError(f"{section.__name__}.{name} is not a Literal setting")
    return get_args(annotation)


@dataclass(frozen=True)
class Pick:
    """Some of a section's fields, by name: `pick(GenerationSettings, "temperature", "top_p")`."""
    section: type[Section]
    names: tuple[str, ...]


def pick(section: type[Section], *names: str) -> Pick:
    unknown = [n for n in names if n not in section.model_fields]
    if unknown:
        raise TypeError(f"{section.__name__} declares no {', '.join(unknown)}")
    return Pick(section, names)


class SettingsData:
    """Base of the classes `settings_data` makes: built from section objects, validated choices."""

    __setting_sources__: ClassVar[dict[str, type[Section]]] = {}

    @classmethod
    def from_settings(cls, *sections: Section, **values: Any):
        """An instance whose setting fields come from the section objects that declare them (a name two sections
        share, like `seed`, comes from the section it was taken from); `values` fill the class's own fields and
        win over the sections."""
        for section in sections:
            names = [n for n, source in cls.__setting_sources__.items() if isinstance(section, source)]
            if not names:
                raise TypeError(f"{cls.__name__} takes no settings from {type(section).__name__}")
            for name in names:
                values.setdefault(name, getattr(section, name))
        return cls(**values)

    def check_choices(self, *names: str, prefix: str = "") -> None:
        """Raise ValueError when one of these Literal settings holds a value its declaration does not allow."""
        for name in names:
            allowed = choices(self.__setting_sources__[name], name)
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{prefix}{name} must be one of {', '.join(allowed)}, not {value!r}")


def settings_data(*sources: type[Section] | Pick):
    """Class decorator: `cls` (a SettingsData) as a frozen dataclass whose first fields are the settings of
    `sources` (a section: all its fields; a `pick`: those named), with their names, types, defaults and help,
    followed by the fields `cls` declares itself, which must be new names."""

    def wrap(cls: type) -> type:
        if not issubclass(cls, SettingsData):
            raise TypeError(f"{cls.__name__} must subclass SettingsData")
        own = inspect.get_annotations(cls)
        annotations: dict[str, Any] = {}
        origin: dict[str, type[Section]] = {}
        for section, names in map(_section_names, sources):
            for name in names:
                if name in annotations or name in own:
                    raise TypeError(f"{cls.__name__}.{name} is declared twice")
                info = section.model_fields[name]
                annotations[name] = info.annotation
                origin[name] = section
                setattr(cls, name, _field(section, name, info))
        cls.__annotations__ = {**annotations, **own}
        cls.__setting_sources__ = origin
        return dataclass(frozen=True)(cls)

    return wrap


def _section_names(source: type[Section] | Pick) -> tuple[type[Section], tuple[str, ...]]:
    if isinstance(source, Pick):
        return source.section, source.names
    return source, tuple(source.model_fields)


def _field(section: type[Section], name: str, info: FieldInfo):
    metadata = {"help": info.description or "", "section": section}
    if info.default_factory is not None:
        return field(default_factory=info.default_factory, metadata=metadata)
    if info.default is PydanticUndefined:
        raise TypeError(f"setting {section.__name__}.{name} has no default")
    return field(default=info.default, metadata=metadata)
