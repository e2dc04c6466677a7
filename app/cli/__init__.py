"""The `prefloop` command line: the click group, what it gives every verb, and the modules whose thin functions
are the verbs (each docstring is that verb's help)."""

from pathlib import Path

import click

from app.services import workdir
from app.services.errors import ServiceError
from app.settings import SettingsError

DEFAULT_WORKDIR = "prefloop-work"


class Context:
    """What the group options give every verb: where the workdir is and setting overrides."""

    def __init__(self, workdir: Path, overrides: dict[str, str]):
        self.workdir = workdir
        self.overrides = overrides

    def open(self) -> workdir.App:
        return workdir.open_app(self.workdir, self.overrides)

    def call(self, fn, *args):
        """Open the workdir, call one service function with it, close it."""
        app = self.open()
        try:
            return fn(app, *args)
        finally:
            app.close()


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        out[key.strip()] = value.strip()
    return out


# Errors that are the user's to fix: shown as one line, never as a traceback.
EXPECTED_ERRORS = (ServiceError, SettingsError)


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EXPECTED_ERRORS as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workdir", type=click.Path(path_type=Path), envvar="PREFLOOP_WORKDIR", default=DEFAULT_WORKDIR,
              show_default=True, help="Folder holding prefloop.toml, the database and the model registry.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a setting for this command, e.g. --set generation.temperature=0.7 (repeatable).")
@click.version_option(package_name="prefloop")
@click.pass_context
def cli(ctx, workdir: Path, sets: tuple[str, ...]):
    """prefloop: collect preference labels on sampled responses, train DPO rounds, redeploy, repeat.

    Start with `prefloop init`, then `prefloop import FILE`; see each verb's --help."""
    ctx.obj = Context(workdir, _parse_sets(sets))


def cli_actor() -> str:
    """Who the audit trail names for a command-line change: 'cli:<OS user>' ('cli' when that is unknown)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def main() -> None:
    cli(prog_name="prefloop")


# Each module registers its verbs on `cli` when imported: after `cli` exists, hence at the bottom.
from app.cli import data, models, people, review, rounds, serving, setup, stats  # noqa: E402, F401
