"""Data in, out and curated: `import`, `export`, `show`, `discard`, `restore` and the `audit` trail."""

import sys
from pathlib import Path

import click

from app.cli import Context, cli, cli_actor
from app.services import curation, transfer
from app.services.errors import MalformedRecord


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


KIND = click.Choice(["prompt", "comparison", "label"])


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
        click.echo(curation.discard(app, kind, target_id, reason, cli_actor())["message"])
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
        click.echo(curation.restore(app, kind, target_id, cli_actor(), reason)["message"])
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


