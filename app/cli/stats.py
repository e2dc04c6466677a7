"""`prefloop stats`: the counts, and agreement between people, judges and gold, as lines or JSON."""

import json

import click

from app.cli import Context, cli
from app.services import console


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


