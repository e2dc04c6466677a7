"""Data in and out, as an operator moves it: importing prompts, responses to label, labelled pairs, ratings
(UltraFeedback) or thumbs (TRL's unpaired rows), and exporting resolved pairs, thumbs or ratings (with their ties
and metadata beside them) to a file or as a streamed download."""

from pathlib import Path

from app.services.errors import MalformedRecord, refusals
from app.services.workdir import App

DEMO_PROMPTS = Path(__file__).parents[1] / "demo_prompts.jsonl"
SOURCES = ("human", "import")  # the label sources that resolve a pair unless the operator says otherwise


def import_data(app: App, path: Path, fmt: str | None = None, prompt_field: str | None = None,
                skip_invalid: bool = False, report_path: Path | None = None, progress: bool = False):
    """Import a file or a datasets folder, all of it or nothing (`skip_invalid`: the valid records, and a report
    of the others in the workdir's import reports unless `report_path` says where). A malformed record that stops
    the import is a MalformedRecord."""
    from data.formats import InvalidRecord
    from data.importing import import_file

    if skip_invalid and report_path is None:
        report_path = app.reports_dir / f"{Path(path).name}.invalid.jsonl"
        report_path.parent.mkdir(exist_ok=True)
    with refusals():
        try:
            return import_file(app.store, Path(path), fmt=fmt, prompt_field=prompt_field,
                               skip_invalid=skip_invalid, report_path=report_path,
                               overlap=app.settings.labelling.overlap, progress=progress)
        except InvalidRecord as error:
            raise MalformedRecord(str(error)) from error


def import_demo_prompts(app: App):
    return import_data(app, DEMO_PROMPTS, fmt="prompts-jsonl")


def export_data(app: App, out, fmt: str = "trl", sources: tuple[str, ...] = SOURCES,
                since_round: int | None = None, min_agreement: float | None = None,
                include_ties: bool = False, metadata: bool = False, progress: bool = False,
                to: str | None = None, part: str | None = None) -> int:
    """Resolved pairs to a path (ties and metadata in sidecar files beside it) or an open file. `to` is the
    container (jsonl, parquet, dataset; default from `out`); `part` (pairs, ties, metadata) writes just that
    file of the export to the open file `out`. Returns the records written (pairs; rows in trl-unpaired, two a
    pair and one a thumbs verdict; rated comparisons in ultrafeedback; and ties)."""
    from data.export import export_pairs, export_part

    filters = dict(fmt=fmt, sources=sources, since_round=since_round, min_agreement=min_agreement)
    with refusals():
        if part is not None:
            return export_part(app.store, out, part, metadata=metadata, **filters)
        return export_pairs(app.store, out, include_ties=include_ties, metadata=metadata, progress=progress, to=to,
                            **filters)


def export_chunks(app: App, fmt: str = "trl", part: str = "pairs", metadata: bool = False,
                  sources: tuple[str, ...] = SOURCES):
    """One file of an export (as `export_data` with `part`) as a generator of byte chunks, produced as they are
    read: what a streamed download sends, in flat memory."""
    from data.export import iter_part

    with refusals():  # raised where the reader is: on the first chunk for bad arguments
        yield from iter_part(app.store, part, metadata=metadata, fmt=fmt, sources=sources)


def sidecar_path(out: Path, kind: str) -> Path:
    """Where an export to `out` writes its `kind` file (ties, metadata)."""
    from data.export import sidecar_path as beside

    return beside(Path(out), kind)
