"""Reviewing labels: the `adjudication` queue and `adjudicate`, `gold` questions, and `holds` on annotators
whose gold accuracy is low."""

import click

from app.cli import Context, cli, cli_actor
from app.services import adjudication, quality


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
    click.echo(obj.call(adjudication.decide, cli_actor(), comparison_id, choice, rationale, make_gold)["message"])


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
    click.echo(obj.call(quality.mark_gold, comparison_id, choice, cli_actor(), reason)["message"])


@gold.command("unmark")
@click.argument("comparison_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--reason", help="Why (kept in the audit trail).")
@click.pass_obj
def gold_unmark(obj: Context, comparison_id: int, reason: str | None):
    """Make gold question ID an ordinary comparison again: its labels resolve it. Audited."""
    click.echo(obj.call(quality.unmark_gold, comparison_id, cli_actor(), reason)["message"])


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
    click.echo(obj.call(quality.release_held, name, cli_actor(), reason)["message"])


@holds.command("discard")
@click.argument("name")
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
@click.pass_obj
def holds_discard(obj: Context, name: str, reason: str):
    """Discard NAME's held labels (kept, counting for nothing, as `prefloop discard label` does): the comparisons
    they filled reopen for others to label. Audited."""
    click.echo(obj.call(quality.discard_held, name, cli_actor(), reason)["message"])


