"""Setting a workdir up: `init`, `config`, `db`, `tiny-model`, and `demo`, which runs the whole loop offline."""

import json
from pathlib import Path

import click

from app.cli import Context, cli
from app.cli.serving import serve_app
from app.services import accounts, console, transfer, workdir, workers
from app.settings import describe_settings


@cli.command()
@click.option("--base", help="Base model for v0: a local folder, a Hub id, or 'tiny' (default: model.base).")
@click.option("--database-url", metavar="URL", help="SQLAlchemy URL of the database, written into prefloop.toml "
                                                    "(e.g. postgresql+psycopg://user@host/db; default: SQLite "
                                                    "prefloop.db in the workdir).")
@click.pass_obj
def init(obj: Context, base: str | None, database_url: str | None):
    """Create a workdir: commented prefloop.toml, the database, the model registry with v0 deployed."""
    app, created = workdir.init_workdir(obj.workdir, base=base, overrides=obj.overrides, progress=True,
                                        database_url=database_url)
    verb = "Created" if created else "Already initialised:"
    click.echo(f"{verb} {app.workdir} (config {app.config_path}, "
               f"v0 = {app.store.versions.get('v0').path})")
    app.close()


@cli.command("config")
@click.pass_obj
def config_cmd(obj: Context):
    """Show every setting's current value (after the config file, PREFLOOP_* variables and --set) and its help."""
    app = obj.open()
    for key, value, help_text in describe_settings(app.settings):
        click.echo(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        click.echo(f"    {help_text}")
    app.close()


@cli.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same weights.")
def tiny_model(out_dir: Path, seed: int):
    """Build the offline tiny chat model (Llama config, local tokenizer, chat template, short warm-up) in OUT_DIR.

    Use it where no model hub is reachable: `prefloop init --base OUT_DIR`."""
    path = workdir.build_tiny_model(out_dir, seed=seed, progress=True)
    click.echo(f"tiny model written to {path}")


@cli.group("db")
def db_group():
    """The database schema: `prefloop db status` shows its revision, `prefloop db upgrade` migrates it."""


@db_group.command("status")
@click.pass_obj
def db_status(obj: Context):
    """Show the database's schema revision and the one this prefloop needs."""
    s = workdir.schema_status(obj.workdir, obj.overrides)
    state = "up to date" if s["current"] == s["head"] else "needs `prefloop db upgrade`"
    click.echo(f"{s['database']}: revision {s['current'] or 'none (empty)'}, this prefloop needs {s['head']} "
               f"({state})")


@db_group.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Context):
    """Migrate the database to the schema this prefloop needs, keeping every row (back it up first)."""
    s = workdir.upgrade_schema(obj.workdir, obj.overrides)
    if s["before"] == s["after"]:
        click.echo(f"{s['database']}: already at revision {s['after']}")
    else:
        click.echo(f"{s['database']}: upgraded from revision {s['before'] or 'none (empty)'} to {s['after']}")


@cli.command()
@click.option("--no-serve", is_flag=True, help="Stop after sampling instead of starting the web UI (for scripts).")
@click.pass_obj
def demo(obj: Context, no_serve: bool):
    """Run the loop offline on the embedded default: tiny model, SQLite, demo prompts, then the web UI at once with
    the sampling worker filling the label queue in the background (an `operator` account is created on first run).
    With --no-serve it samples in the foreground instead, and stops."""
    app, _ = workdir.init_workdir(obj.workdir, overrides=obj.overrides, progress=True,
                                  config_values={"training": DEMO_TRAINING})
    r = transfer.import_demo_prompts(app)
    click.echo(f"demo prompts: +{r.prompts_added} ({r.prompts_duplicate} already there)")
    if no_serve:
        click.echo(workers.generate(app, progress=True).summary())
    st = console.stats(app)
    click.echo(f"workdir {app.workdir}: {st['prompts']} prompts, {st['responses']} responses, "
               f"comparisons {st['comparisons']}, deployed {st['deployed_version']}")
    click.echo(f"next: `prefloop --workdir {app.workdir} export pairs.jsonl` once labels are in; "
               "`prefloop stats` to look around")
    click.echo(_demo_rounds(app))
    if not no_serve:  # serve first: sampling must not keep the UI waiting (it is minutes after a new deploy)
        notes = (_demo_sampling(app), _demo_operator(app))
        serve_app(app, None, None, with_worker=True, extra="\n".join(n for n in notes if n))
    app.close()


def _demo_sampling(app) -> str:
    progress = workers.sampling_progress(app)
    where = "the console's Models and rounds tab and the label view follow it"
    return f"the sampling worker runs in the background ({progress.text()}); {where}" if progress else ""


# The demo runs the whole loop: written into a new demo workdir's prefloop.toml (edit it, or --set, to change).
# The tiny model's profile: the defaults suit real models (5e-6 moves a tiny model nowhere in a few steps); at
# 5e-4 with 8 steps of 8 pairs a round visibly moves the model toward what its annotators chose (tests/test_loop.py).
DEMO_TRAINING = {"auto_every": 16, "min_pairs": 16, "auto_deploy": True, "learning_rate": 5e-4, "max_steps": 8,
                 "batch_size": 8}


def _demo_rounds(app) -> str:
    t = app.settings.training
    if t.auto_every <= 0:
        return "automatic DPO rounds are off (training.auto_every = 0): start rounds from the console's Training panel"
    deploy = "and deploys the new version when done" if t.auto_deploy else "(deploy it from the console)"
    return (f"a DPO round starts every {t.auto_every} new labelled pairs (training.auto_every in "
            f"{app.config_path}) {deploy}; sampling then continues from the deployed version")


def _demo_operator(app) -> str:
    """Create the demo's `operator` account once; its generated password is shown that one time only."""
    if app.store.accounts.get_user("operator") is not None:
        return ("log in as `operator` (its password was printed when the demo created it; "
                "`prefloop users add NAME --role operator` makes another account)")
    _user, password = accounts.add_user(app, "operator", "operator")
    return f"log in as `operator` with the one-time password {password} (shown once: note it now)"


