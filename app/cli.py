"""The `prefloop` command line: one thin function per verb, whose docstring is its help."""

import contextlib
import json
import sys
from pathlib import Path

import click

from app.services import accounts, adjudication, console, curation, judging, quality, transfer, workdir, workers
from app.services import rounds as training_rounds
from app.services import versions as model_versions
from app.services.errors import MalformedRecord, ServiceError
from app.settings import SettingsError, describe_settings

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


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", help="prompts-jsonl, prompts-csv, responses-jsonl, trl, openai, hh-rlhf, "
                                      "llamafactory, trl-unpaired (prompt, completion, label: thumbs up/down) or "
                                      "ultrafeedback (instruction, completions rated per criterion); sniffed from "
                                      "the file (or the folder's columns) when not given.")
@click.option("--prompt-field", help="Field holding the prompt when it is not 'prompt'/'messages' "
                                     "(e.g. 'instruction' for Self-Instruct, 'turns' for MT-Bench).")
@click.option("--skip-invalid", is_flag=True, help="Import the valid records and write a report of the bad "
                                                   "ones, instead of refusing the whole file.")
@click.option("--report", type=click.Path(path_type=Path), help="Where --skip-invalid writes its report.")
@click.pass_obj
def import_cmd(obj: Context, file: Path, fmt, prompt_field, skip_invalid, report):
    """Import prompts, responses to label, or labelled preference pairs from FILE (all of it or nothing).

    FILE may also be a Hugging Face datasets folder (written by save_to_disk; a DatasetDict's 'train' split)."""
    app = obj.open()
    try:
        r = transfer.import_data(app, file, fmt=fmt, prompt_field=prompt_field, skip_invalid=skip_invalid,
                                report_path=report, progress=True)
    except MalformedRecord as e:
        if skip_invalid:  # an error that leaves the rest of the file unreadable: skipping cannot help
            raise
        raise click.ClickException(f"{e}\nNothing was imported; --skip-invalid imports the valid records and "
                                   "reports the invalid ones.") from None
    click.echo(f"{file}: format {r.format}; prompts +{r.prompts_added} ({r.prompts_duplicate} duplicate), "
               f"comparisons +{r.comparisons_added} ({r.comparisons_duplicate} duplicate), "
               f"labels +{r.labels_added}" + (f", gold questions +{r.gold_added}" if r.gold_added else ""))
    if r.invalid:
        click.echo(f"{len(r.invalid)} invalid record(s) skipped; report: {r.report_path}", err=True)
    app.close()


@cli.command("export")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["trl", "openai", "trl-unpaired", "ultrafeedback"]),
              default="trl", show_default=True,
              help="trl: TRL conversational preference; openai: OpenAI preference fine-tuning (both with the pairs "
                   "rankings, ratings and disagreeing thumbs yield); trl-unpaired: TRL unpaired preference (prompt, "
                   "completion, label; KTO), two rows a pair (chosen true, then rejected false), one a thumbs "
                   "verdict; ultrafeedback: one UltraFeedback record per resolved rating comparison, each "
                   "criterion rated by the mean of its labels (JSONL only, without --include-ties or "
                   "--min-agreement).")
@click.option("--since-round", type=int, help="Only comparisons sampled from model versions of this round on.")
@click.option("--source", "sources", multiple=True, type=click.Choice(["human", "judge", "import"]),
              help="Label sources that may resolve a pair (repeatable; default human and import).")
@click.option("--min-agreement", type=click.FloatRange(0, 1), help="Only pairs whose labels agree at least "
                                                                   "this much (0-1).")
@click.option("--to", type=click.Choice(["jsonl", "parquet", "dataset"]),
              help="Container: jsonl; parquet (one file); dataset (a Hugging Face datasets folder for "
                   "load_from_disk). Default from OUT: a .parquet name is parquet, an existing folder a dataset, "
                   "else jsonl. parquet and dataset hold the trl and trl-unpaired formats.")
@click.option("--include-ties", is_flag=True, help="Also export ties and both-bad, to their own file beside OUT "
                                                   "(<stem>.ties.jsonl, with a 'label'; never as chosen/rejected, "
                                                   "nor as trl-unpaired rows: they keep the trl shape).")
@click.option("--metadata", is_flag=True, help="Write each pair's comparison id, annotators, agreement and model "
                                               "versions to <stem>.metadata.jsonl beside OUT (one line per row of OUT, "
                                               "'row' its number: two lines a pair in trl-unpaired).")
@click.pass_obj
def export_cmd(obj: Context, out: Path, fmt, since_round, sources, min_agreement, to, include_ties, metadata):
    """Export resolved preference pairs to OUT ('-' for standard output, JSONL only) in exactly the format's
    shape; ties and metadata go to files of their own beside it."""
    if str(out) == "-" and (include_ties or metadata):
        raise click.UsageError("--include-ties and --metadata write files beside OUT: give a path, not '-'")
    app = obj.open()
    target = sys.stdout.buffer if str(out) == "-" else out
    n = transfer.export_data(app, target, fmt=fmt, sources=tuple(sources) or transfer.SOURCES,
                            since_round=since_round, min_agreement=min_agreement, include_ties=include_ties,
                            metadata=metadata, progress=target is not sys.stdout.buffer, to=to)
    beside = [f"{kind} in {transfer.sidecar_path(out, kind)}" for kind, asked in (("ties", include_ties),
                                                                        ("metadata", metadata)) if asked]
    click.echo(f"exported {n} record(s) to {out}" + (f" ({'; '.join(beside)})" if beside else ""), err=True)
    app.close()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_obj
def stats(obj: Context, as_json: bool):
    """Counts of prompts, responses, comparisons by status, labels by source and annotator, model versions."""
    app = obj.open()
    data = console.stats(app)
    app.close()
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    for key, value in data.items():
        if key == "people":
            click.echo("\n".join(_people_lines(value)))
            continue
        click.echo(f"{key}: {_plain(value)}")
        for name, nested in (value.items() if isinstance(value, dict) else ()):
            if isinstance(nested, dict):  # e.g. one judge's agreement numbers: a line each
                click.echo(f"  {name}: {_plain(nested)}")


def _people_lines(people: dict) -> list[str]:
    """Agreement between people: alpha overall and per round, then per annotator their majority agreement, pooled
    kappa, alpha without them and gold record, and their kappa with each person they overlap with."""
    lines = [f"people: alpha {_shown(people['alpha'])} over {people['units']} comparison(s) labelled by 2+ people "
             f"({people['values']} labels)"]
    lines += [f"  round {r}: alpha {_shown(a['alpha'])} over {a['units']} comparison(s)"
              for r, a in people["by_round"].items()]
    for name, mine in people["annotators"].items():
        parts = []
        if "majority_compared" in mine:
            parts.append(f"majority agreement {_shown(mine['majority_agreement'])} of {mine['majority_compared']}, "
                         f"kappa {_shown(mine['kappa'])} over {mine['pairs']} pair(s), "
                         f"alpha without them {_shown(mine['alpha_without'])}")
        if gold := mine.get("gold"):
            parts.append(f"gold {_shown(gold['accuracy'])} of {gold['answered']} (recent "
                         f"{_shown(gold['recent_accuracy'])} of {gold['recent_answered']})"
                         + (f", HELD BACK: {gold['held_labels']} label(s) held" if gold["held"] else ""))
        lines.append(f"  {name}: {'; '.join(parts)}")
        lines += [f"    kappa with {other}: {_shown(k['kappa'])} over {k['compared']} (agreement "
                  f"{_shown(k['agreement'])})" for other, k in mine.get("kappas", {}).items()]
    return lines + _order_lines(people)


def _order_lines(people: dict) -> list[str]:
    """Kendall's tau-b between people on rankings and ratings, with each pair of people, once there are any."""
    lines = []
    for key in ("rankings", "ratings"):
        found = people.get(key) or {}
        if not found.get("comparisons"):
            continue
        lines.append(f"{key}: Kendall's tau-b {_shown(found['tau_b'])} over {found['comparisons']} comparison(s) "
                     "ordered by 2+ people")
        lines += [f"  {name} with {other}: tau-b {_shown(t['tau_b'])} over {t['compared']}"
                  for name, mine in found["annotators"].items() for other, t in mine["with"].items() if name < other]
    return lines


def _shown(value) -> str:
    return "n/a" if value is None else _plain(value)


def _plain(value) -> str:
    """One line for a stats value; nested tables are summarised here and listed below their key."""
    if not isinstance(value, dict):
        return f"{value:.3f}" if isinstance(value, float) else str(value)
    flat = [f"{k}: {_plain(v)}" for k, v in value.items() if not isinstance(v, dict)]
    nested = sum(isinstance(v, dict) for v in value.values())
    return ", ".join(flat) or (f"{nested} below" if nested else "none")


@cli.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same weights.")
def tiny_model(out_dir: Path, seed: int):
    """Build the offline tiny chat model (Llama config, local tokenizer, chat template, short warm-up) in OUT_DIR.

    Use it where no model hub is reachable: `prefloop init --base OUT_DIR`."""
    path = workdir.build_tiny_model(out_dir, seed=seed, progress=True)
    click.echo(f"tiny model written to {path}")


@cli.command()
@click.option("--prompts", "limit", type=click.IntRange(min=1), help="Sample at most this many prompts.")
@click.option("--samples", type=click.IntRange(min=2), help="Responses per prompt (default: "
                                                            "generation.samples_per_prompt).")
@click.option("--watch", is_flag=True, help="Keep running: top the queue up to generation.queue_target and "
                                            "follow newly deployed versions, until Ctrl-C.")
@click.option("--again-tied", is_flag=True, help="Sample once more the prompts whose comparisons under the "
                                                 "deployed version all ended in ties or both-bad (a stalled loop).")
@click.pass_obj
def generate(obj: Context, limit, samples, watch, again_tied):
    """Sample responses from the deployed model version and queue comparisons of them for labelling."""
    app = obj.open()
    if watch:
        _watch(app, samples)
    else:
        report = workers.generate(app, limit=limit, samples=samples, progress=True, again_tied=again_tied)
        click.echo(report.summary())
        for prompt_id, reason in report.skipped.items():
            click.echo(f"skipped prompt {prompt_id}: {reason}", err=True)
    app.close()


def _watch(app, samples):
    """The server's sampling worker in the foreground: training.auto_every > 0 starts a round every N newly
    resolved pairs, and failed automatic rounds are said once each."""
    click.echo(f"watching: keeping {app.settings.generation.queue_target} comparisons queued (Ctrl-C stops)")
    worker = workers.GenerationWorker(app, samples=samples, on_batch=lambda report: click.echo(report.summary()),
                                      on_round=lambda run_id: click.echo(f"automatic training run {run_id} started"),
                                      on_notice=lambda text: click.echo(text, err=True))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops it mid-batch; what is stored stays
        worker.run()


@cli.command()
@click.pass_obj
def versions(obj: Context):
    """List model versions with their lineage; * marks the deployed one."""
    app = obj.open()
    try:
        listed = model_versions.list_versions(app)
    finally:
        app.close()
    if not listed:
        click.echo("no model versions yet: `prefloop init` registers the base model as v0")
    for v in listed:
        mark = "*" if v["deployed"] else " "
        parent = f" <- {v['parent']}" if v["parent"] else ""
        click.echo(f"{mark} {v['name']}{parent}  round {v['round']}  {v['status']}  {v['kind']}  {v['path']}")


@cli.command()
@click.argument("version")
@click.pass_obj
def deploy(obj: Context, version: str):
    """Deploy VERSION (or roll back to it): running generators swap to it in place."""
    app = obj.open()
    retired = model_versions.deploy(app, version)
    click.echo(f"deployed {version}; {retired} open comparison(s) of older versions retired")
    app.close()


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
        _serve(app, None, None, with_worker=True, extra="\n".join(n for n in notes if n))
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


# -- the web server -------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--host", help="Address to listen on (default: server.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: server.port, 7860).")
@click.option("--generate", "with_worker", is_flag=True, help="Also run the sampling worker inside the server "
                                                              "(or start it from the operator console).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes, on consecutive ports from --port, all on one database. The API answers on "
                   "any; a browser must stay on one (a proxy with sticky sessions). Only the first samples.")
@click.pass_obj
def serve(obj: Context, host, port, with_worker, workers):
    """Run the web UI (annotators and the operator console) and the JSON labelling API until Ctrl-C."""
    app = obj.open()
    if workers == 1:
        _serve(app, host, port, with_worker)
        app.close()
        return
    code = _serve_processes(app, obj.overrides, host, port, with_worker, workers)
    app.close()
    sys.exit(code)


def _serve_processes(app, overrides, host, port, with_worker, workers) -> int:
    from app.server import serve_processes

    host = host or app.settings.server.host
    port = port or app.settings.server.port
    if port + workers - 1 > 65535:
        raise click.BadParameter(f"ports {port}..{port + workers - 1} run past 65535", param_hint="--workers")

    def ready(urls: list[str]) -> None:
        click.echo(f"prefloop is serving {app.workdir} from {len(urls)} processes (Ctrl-C stops all):")
        for i, url in enumerate(urls):
            click.echo(f"  {url}  (JSON API under {url}api/v1){'  + sampling worker' if with_worker and not i else ''}")
        click.echo("API clients may use any of them; a browser must stay on one: put them behind a proxy with "
                   "sticky sessions (e.g. nginx ip_hash).")

    def failed(message: str) -> None:
        click.echo(f"Error: {message}", err=True)

    return serve_processes(app.workdir, overrides, host, port, workers, with_worker, on_ready=ready, on_error=failed)


def _serve(app, host, port, with_worker, extra: str = "") -> None:
    from app.server import serve as run_server

    def ready(url: str) -> None:
        click.echo(f"prefloop is serving {app.workdir} at {url} (JSON API under {url}api/v1; Ctrl-C stops)")
        if extra:
            click.echo(extra)

    run_server(app, host=host, port=port, worker=with_worker, on_ready=ready)  # uvicorn handles Ctrl-C


@cli.group()
def users():
    """Manage accounts: annotators label, reviewers also adjudicate, operators also run the console (import,
    export, rounds, deploys) and adjudicate."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(accounts.ROLES), default="annotator", show_default=True,
              help="What the account may do: label; also adjudicate (reviewer); also run the console (operator).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of "
                                                     "generating one (a generated one is printed once).")
@click.pass_obj
def users_add(obj: Context, name: str, role: str, password_stdin: bool):
    """Add an account NAME; its password is stored hashed (argon2)."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    app = obj.open()
    user, generated = accounts.add_user(app, name, role, password)
    click.echo(f"added {user.role} {user.name}")
    if generated:
        click.echo(f"password (shown once): {generated}")
    app.close()


@users.command("list")
@click.pass_obj
def users_list(obj: Context):
    """List accounts with their role and creation time."""
    app = obj.open()
    try:
        listed = accounts.list_users(app)
    finally:
        app.close()
    if not listed:
        click.echo("no accounts yet: add one with `prefloop users add NAME`")
    for user in listed:
        disabled = "  disabled" if user.disabled_at else ""
        click.echo(f"{user.name}  {user.role}  {user.created_at:%Y-%m-%d %H:%M}{disabled}")


@users.command("revoke-tokens")
@click.argument("name")
@click.pass_obj
def users_revoke_tokens(obj: Context, name: str):
    """Revoke every JSON API token of account NAME (it logs in again); recorded in the audit trail."""
    app = obj.open()
    try:
        revoked = accounts.revoke_tokens(app, name, _cli_actor())
    finally:
        app.close()
    click.echo(f"revoked {revoked} API token(s) of {name} (servers drop them within seconds)")


@users.command("reset-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input instead of "
                                                     "generating one (a generated one is printed once).")
@click.pass_obj
def users_reset_password(obj: Context, name: str, password_stdin: bool):
    """Give account NAME a new password; its API tokens are revoked. Audited (never the password)."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    generated = obj.call(accounts.reset_password, name, _cli_actor(), password)
    click.echo(f"new password for {name}" + (f" (shown once): {generated}" if generated else " set"))


@users.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(accounts.ROLES))
@click.pass_obj
def users_role(obj: Context, name: str, role: str):
    """Make account NAME an annotator, a reviewer or an operator (the last enabled operator stays one). Audited."""
    obj.call(accounts.set_role, name, role, _cli_actor())
    click.echo(f"{name} is now {accounts.with_article(role)}")


@users.command("disable")
@click.argument("name")
@click.pass_obj
def users_disable(obj: Context, name: str):
    """Disable account NAME: no login, API tokens revoked, labels kept (`users enable` undoes it). Audited."""
    obj.call(accounts.set_disabled, name, True, _cli_actor())
    click.echo(f"disabled {name}")


@users.command("enable")
@click.argument("name")
@click.pass_obj
def users_enable(obj: Context, name: str):
    """Let a disabled account NAME log in again. Audited."""
    obj.call(accounts.set_disabled, name, False, _cli_actor())
    click.echo(f"enabled {name}")


# -- curation -------------------------------------------------------------------------------------------------------
KIND = click.Choice(["prompt", "comparison", "label"])


def _cli_actor() -> str:
    """Who the audit trail names for a command-line change: 'cli:<OS user>' ('cli' when that is unknown)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


@cli.command()
@click.argument("kind", type=KIND)
@click.argument("target_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@click.pass_obj
def discard(obj: Context, kind: str, target_id: int, reason: str):
    """Discard a prompt, comparison or label: it is never shown to annotators, trained on or exported again
    (a prompt takes its comparisons with it; a discarded label stops counting, so its comparison may reopen)."""
    app = obj.open()
    try:
        click.echo(curation.discard(app, kind, target_id, reason, _cli_actor())["message"])
    finally:
        app.close()


@cli.command()
@click.argument("kind", type=KIND)
@click.argument("target_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--reason", help="Why (kept in the audit trail).")
@click.pass_obj
def restore(obj: Context, kind: str, target_id: int, reason: str | None):
    """Restore a discarded prompt, comparison or label: it counts, trains and exports again."""
    app = obj.open()
    try:
        click.echo(curation.restore(app, kind, target_id, _cli_actor(), reason)["message"])
    finally:
        app.close()


@cli.command()
@click.argument("kind", type=KIND)
@click.argument("target_id", metavar="ID", type=click.IntRange(min=1))
@click.pass_obj
def show(obj: Context, kind: str, target_id: int):
    """Show what a prompt, comparison or label id stands for: its texts, state and labels (before discarding it)."""
    app = obj.open()
    try:
        click.echo(curation.show_text(curation.show(app, kind, target_id)))
    finally:
        app.close()


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="How many events.")
@click.pass_obj
def audit(obj: Context, limit: int):
    """The audit trail, newest first: when, who, action, target and id, reason (discards, restores, undone
    labels, resumed automatic rounds)."""
    app = obj.open()
    try:
        events = curation.audit_trail(app, limit)
    finally:
        app.close()
    if not events:
        click.echo("no audit events yet")
    for e in events:
        target = e["target"] + (f" {e['id']}" if e["id"] is not None else "")
        click.echo(f"{e['when']}  {e['actor']}  {e['action']}  {target}" + (f"  {e['reason']}" if e["reason"] else ""))


# -- adjudication ---------------------------------------------------------------------------------------------------
@cli.command("adjudication")
@click.option("--limit", type=click.IntRange(1, adjudication.LIST_MAX), default=50, show_default=True,
              help="How many comparisons to list.")
@click.pass_obj
def adjudication_cmd(obj: Context, limit: int):
    """The adjudication queue, newest disagreement first: how many comparisons wait and why (people disagree, or a
    judge contradicts their majority), then one line each: id, why, people's A/B/tie/both-bad counts, prompt."""
    listed = obj.call(adjudication.queue, limit)
    click.echo(listed["message"])
    for e in listed["items"]:
        counts = "/".join(str(e["counts"][c]) for c in adjudication.CHOICES)
        click.echo(f"{e['comparison_id']}  {e['why']}  a/b/tie/both_bad {counts}  {e['prompt']}")


@cli.command("adjudicate")
@click.argument("comparison_id", metavar="ID", type=click.IntRange(min=1))
@click.argument("choice", type=click.Choice(adjudication.CHOICES))
@click.option("--rationale", help="Why (kept with the decision).")
@click.option("--gold", "make_gold", is_flag=True, help="Also make the comparison a gold question with this answer.")
@click.pass_obj
def adjudicate_cmd(obj: Context, comparison_id: int, choice: str, rationale: str | None, make_gold: bool):
    """Decide comparison ID (`prefloop show comparison ID` shows its labels): the decision resolves it and is
    exported as its adjudicated label; deciding again replaces it. Audited."""
    click.echo(obj.call(adjudication.decide, _cli_actor(), comparison_id, choice, rationale, make_gold)["message"])


# -- gold questions and held labels ---------------------------------------------------------------------------------
@cli.group()
def gold():
    """Gold questions: comparisons with a known answer, handed to annotators now and then to measure them
    (labelling.gold_rate). A gold question resolves from its answer alone; people's labels on it never train."""


@gold.command("mark")
@click.argument("comparison_id", metavar="ID", type=click.IntRange(min=1))
@click.argument("choice", type=click.Choice(quality.CHOICES))
@click.option("--reason", help="Why (kept in the audit trail).")
@click.pass_obj
def gold_mark(obj: Context, comparison_id: int, choice: str, reason: str | None):
    """Make comparison ID a gold question whose known answer is CHOICE (or change its answer). Audited."""
    click.echo(obj.call(quality.mark_gold, comparison_id, choice, _cli_actor(), reason)["message"])


@gold.command("unmark")
@click.argument("comparison_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--reason", help="Why (kept in the audit trail).")
@click.pass_obj
def gold_unmark(obj: Context, comparison_id: int, reason: str | None):
    """Make gold question ID an ordinary comparison again: its labels resolve it. Audited."""
    click.echo(obj.call(quality.unmark_gold, comparison_id, _cli_actor(), reason)["message"])


@gold.command("list")
@click.pass_obj
def gold_list(obj: Context):
    """Every gold question: id, known answer, status, and how many people answered it (and how many rightly)."""
    rows = obj.call(quality.gold_questions)
    if not rows:
        click.echo("no gold questions yet (prefloop gold mark ID CHOICE, or a 'gold' field on import)")
    for r in rows:
        click.echo(f"{r['id']}  {r['gold']}  {r['status']}{' (discarded)' if r['discarded'] else ''}  "
                   f"{r['correct']}/{r['answered']} right")


@cli.group(invoke_without_command=True)
@click.pass_context
def holds(ctx):
    """Annotators whose recent gold accuracy is below labelling.gold_threshold (over their latest
    labelling.gold_window gold answers, from labelling.gold_min_answers on): their labels are held back from
    training and export, kept until you release or discard them. Alone, lists every annotator's gold accuracy."""
    if ctx.invoked_subcommand is not None:
        return
    scores = ctx.obj.call(quality.gold_scores)
    if not scores:
        click.echo("nobody has answered a gold question yet")
    for name, g in sorted(scores.items()):
        state = f"HELD ({g.held_labels} label(s) held)" if g.held else "ok"
        click.echo(f"{name}  gold {g.correct}/{g.answered} ({_percent(g.accuracy)}), recent "
                   f"{_percent(g.recent_accuracy)} of {g.recent_answered}  {state}")


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


@holds.command("release")
@click.argument("name")
@click.option("--reason", help="Why (kept in the audit trail).")
@click.pass_obj
def holds_release(obj: Context, name: str, reason: str | None):
    """Let NAME's held labels train and export. Labels they give later are held again while their accuracy stays
    low. Audited."""
    click.echo(obj.call(quality.release_held, name, _cli_actor(), reason)["message"])


@holds.command("discard")
@click.argument("name")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@click.pass_obj
def holds_discard(obj: Context, name: str, reason: str):
    """Discard NAME's held labels (kept, counting for nothing, as `prefloop discard label` does): the comparisons
    they filled reopen for others to label. Audited."""
    click.echo(obj.call(quality.discard_held, name, _cli_actor(), reason)["message"])


# -- training rounds ------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--deploy", is_flag=True, help="Deploy the new version when the round succeeds (running generators "
                                            "swap to it in place).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the round's progress until it ends, or return as soon as it has started.")
@click.pass_obj
def train(obj: Context, deploy: bool, wait: bool):
    """Start a DPO round on the deployed version with the labelled pairs not trained on yet (its own process)."""
    app = obj.open()
    try:
        _train(app, deploy, wait)
    finally:
        app.close()


def _train(app, deploy: bool, wait: bool) -> None:
    try:
        run_id = training_rounds.start_round(app, deploy=deploy)
    except EXPECTED_ERRORS:
        raise
    except Exception as e:  # one line for the person, whatever went wrong while queueing or launching
        reason = training_rounds.error_line(f"{type(e).__name__}: {e}")
        raise click.ClickException(f"the round did not start: {reason}") from None
    log = training_rounds.log_path(app, run_id)
    click.echo(f"training run {run_id} started (log: {log})")
    if not wait:
        return
    status = _follow_round(app, run_id)
    if status["status"] == "done":
        click.echo(_round_line(status))
    if status["phases"]:
        click.echo(_phases_line(status["phases"]))
    if status["status"] != "done":  # the reason in one line; the traceback stays in the log
        reason = f": {status['error']}" if status["error"] else ""
        where = f" (the log, with the traceback: {log})" if status["status"] == "failed" else ""
        raise click.ClickException(f"training run {run_id} {status['status']}{reason}{where}")


def _follow_round(app, run_id: int, poll_s: float = 0.5) -> dict:
    import time

    from tqdm.auto import tqdm

    with tqdm(desc=f"round {run_id}", unit="step") as bar:
        while True:
            status = training_rounds.round_status(app, run_id)
            if status["max_steps"] and bar.total != status["max_steps"]:
                bar.total = status["max_steps"]
                bar.refresh()
            bar.n = status["step"] or 0
            loss = status["last_metrics"].get("loss")
            bar.set_postfix_str(f"{status['phase'] or status['status']}"
                                + (f" loss {loss:.4f}" if loss is not None else ""))
            if status["status"] in ("done", "failed", "cancelled"):
                return status
            if status["status"] in ("queued", "running", "cancelling"):
                training_rounds.list_rounds(app)  # marks the run failed if its process died
            time.sleep(poll_s)


def _interval(ev: dict) -> str:
    """' (N pairs, 95% LO-HI)' when the report has the accuracy's interval (reports before it had none)."""
    if ev.get("accuracy_low") is None or ev.get("accuracy_high") is None:
        return ""
    return f" ({ev.get('pairs')} pairs, 95% {ev['accuracy_low']:.2f}-{ev['accuracy_high']:.2f})"


def _round_line(r: dict) -> str:
    ev = (r["report"].get("eval") or {}).get("after") or {}
    probe = (r["report"].get("probe") or {}).get("after") or {}
    status = r["status"] + (" (auto)" if r.get("trigger") == "auto" else "")
    method = f"{r['method']}  " if r.get("method", "dpo") != "dpo" else ""  # DPO, the default, goes unsaid
    parts = [f"{r['id']}  {status}  {r['parent'] or '-'} -> {r['version'] or '-'}  {method}pairs {r['pairs']}",
             f"step {r['step']}/{r['max_steps'] or '?'}"]
    if ev:
        parts.append(f"held-out acc {ev.get('accuracy', float('nan')):.3f}{_interval(ev)} "
                     f"margin {ev.get('margin', float('nan')):.3f}")
    if probe:
        parts.append(f"probe len {probe.get('mean_tokens', float('nan')):.1f} eos {probe.get('eos_rate', 0):.2f}")
    if r.get("skipped_pairs"):
        parts.append(f"skipped {r['skipped_pairs']} pair(s) that cannot train")
    if r["error"]:
        parts.append(r["error"] + (f" (log: {r['log']})" if r.get("log") else ""))
    return "  ".join(parts)


def _phases_line(phases: list[tuple[str, float]]) -> str:
    """Where a round's time went: '    time 41.2 s: loading 3.1 s, training 30.0 s, ...'."""
    total = sum(seconds for _, seconds in phases)
    return f"    time {total:.1f} s: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases)


@cli.command()
@click.option("--resume-auto", is_flag=True, help="Resume automatic rounds paused (or waiting) after failed "
                                                  "automatic rounds (training.auto_max_failures).")
@click.pass_obj
def rounds(obj: Context, resume_auto: bool):
    """List training runs with their status, versions, pairs and held-out metrics, and whether automatic
    rounds are paused after failures."""
    app = obj.open()
    try:
        if resume_auto:
            click.echo(training_rounds.resume_auto_rounds(app, actor="cli"))
            return
        listed = training_rounds.list_rounds(app)
        if not listed:
            click.echo("no training rounds yet: `prefloop train` starts one")
        for r in listed:
            click.echo(_round_line(r))
            if r["phases"]:
                click.echo(_phases_line(r["phases"]))
        notice = training_rounds.auto_notice(app)
        if notice:
            click.echo(notice)
    finally:
        app.close()


@cli.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.pass_obj
def cancel(obj: Context, run_id: int):
    """Cancel training run RUN: it stops after the current step and registers no version."""
    app = obj.open()
    status = training_rounds.cancel_round(app, run_id)
    click.echo(f"training run {run_id}: {status}")
    app.close()


# -- the LLM-judge worker -------------------------------------------------------------------------------------------
@cli.command("judge")
@click.option("--judge", "name", metavar="NAME", help="Judge name: labels are stored as 'judge:NAME' "
                                                       "(default: judge.name, else the judge kind).")
@click.option("--limit", type=click.IntRange(min=1), help="Judge at most this many comparisons.")
@click.option("--mode", type=click.Choice(["all", "unseen", "calibration"]),
              help="Which comparisons: all open ones, unseen by humans, or the calibration share humans label "
                   "too (default: judge.mode).")
@click.option("--watch", is_flag=True, help="Keep running: judge new comparisons as they appear, until Ctrl-C.")
@click.option("--run-id", type=int, hidden=True, help="Carry out judge run RUN that the console started "
                                                       "(its settings are in its row); what its process runs.")
@click.pass_obj
def judge_cmd(obj: Context, name, limit, mode, watch, run_id):
    """Label open comparisons with the configured judge ([judge] settings), each pair in both orders."""
    app = obj.open()
    try:
        if run_id is not None:
            click.echo(judging.carry_out(app, run_id).summary())
        elif watch:
            _judge_watch(app, name, mode)
        else:
            click.echo(judging.run_judge(app, name=name, limit=limit, mode=mode, progress=True).summary())
    finally:
        app.close()


def _judge_watch(app, name, mode) -> None:
    import threading

    stop = threading.Event()
    click.echo("judging new comparisons as they appear (Ctrl-C stops)")
    try:
        judging.watch_judge(app, stop, name=name, mode=mode, on_report=lambda r: click.echo(r.summary()))
    except KeyboardInterrupt:
        stop.set()


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


def main() -> None:
    cli(prog_name="prefloop")


if __name__ == "__main__":
    main()
