"""The model side of the loop: `generate` samples, `judge` labels with an LLM judge, `versions` and `deploy`."""

import contextlib

import click

from app.cli import Context, cli
from app.services import judging, workers
from app.services import versions as model_versions


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


