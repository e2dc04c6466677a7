"""Export of resolved comparisons, so that the pairs file loads in its consumer unchanged: TRL's or OpenAI's
preference JSONL or TRL's unpaired preference JSONL (two rows a pair, one a thumbs verdict; each line spliced from
the stored prompt JSON and the escaped response texts, so an export streams at database speed), TRL's shapes as
Parquet or a Hugging Face `datasets` folder (data/export_files.py), or rated comparisons as UltraFeedback records
(data/export_ultrafeedback.py). Rankings and ratings export as the pairs they yield (data/derived.py).

Nothing else goes into the pairs file. Beside it, written atomically with it, `<stem>.ties.jsonl` holds ties and
both-bad (with `include_ties`) and `<stem>.metadata.jsonl` the provenance of each pair (with `metadata`)."""

import contextlib
import io
import itertools
import json
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from json.encoder import encode_basestring  # the C string escaper json.dumps uses with ensure_ascii=False
from pathlib import Path
from typing import IO, NamedTuple

from sqlalchemy.pool import SingletonThreadPool

from data.pairs import DEFAULT_BATCH, PAIR_OUTCOMES, ResolvedRow, count_resolved, iter_resolved_batches
from data.rules import ADJUDICATION, THUMBS

_OPEN = '[{"role": "assistant", "content": '


class Layout(NamedTuple):
    """The fixed text around the spliced values of one line, for a pair or a tie-like outcome."""

    before_prompt: str
    before_first: str  # chosen, or response A
    before_second: str  # rejected, or response B


# Per format: (pair layout, tie layout). A line is the layout's pieces with the values between them (OpenAI's
# tools after the prompt), then '}]', the tie's label and metadata if any, and the closing brace.
TEMPLATES = {
    "trl": (
        Layout('{"prompt": ', ', "chosen": ' + _OPEN, '}], "rejected": ' + _OPEN),
        Layout('{"prompt": ', ', "response_a": ' + _OPEN, '}], "response_b": ' + _OPEN),
    ),
    "openai": (
        Layout('{"input": {"messages": ', '}, "preferred_output": ' + _OPEN, '}], "non_preferred_output": ' + _OPEN),
        Layout('{"input": {"messages": ', '}, "response_a": ' + _OPEN, '}], "response_b": ' + _OPEN),
    ),
}
# TRL's unpaired preference format (prompt, completion, label): each pair as its chosen row (label true), then its
# rejected row (false): what trl.data_utils.unpair_preference_dataset makes of the `trl` export, mapped one pair at
# a time; a thumbs comparison as one row, its response with label true (up) or false (down), and no pair.
# Its ties file is the `trl` one: a tie or both-bad is neither a desirable nor an undesirable completion.
UNPAIRED = "trl-unpaired"
_UNPAIRED_ROW = ('{"prompt": ', ', "completion": ' + _OPEN, '}], "label": ')
ULTRAFEEDBACK = "ultrafeedback"  # one record per resolved rating comparison: data/export_ultrafeedback.py
FORMATS = (*TEMPLATES, UNPAIRED, ULTRAFEEDBACK)
TRL_SHAPES = ("trl", UNPAIRED)  # the formats parquet and dataset hold
CONTAINERS = ("jsonl", "parquet", "dataset")
SIDECARS = ("ties", "metadata")
_DONE = object()


class Chunk(NamedTuple):
    """One batch rendered: the pair rows (tuples; in trl-unpaired thumbs rows too), the pairs file's rows they make
    (two a pair and one a thumb in trl-unpaired) and their JSONL text ('' when not asked), and the sidecars' text."""

    pairs: list[tuple]
    rows: int
    text: str
    ties: int
    ties_text: str
    metadata_text: str


def sidecar_path(out: str | os.PathLike, kind: str) -> Path:
    """Where the `kind` ('ties' or 'metadata') sidecar of an export to `out` goes: pairs.jsonl -> pairs.ties.jsonl,
    pairs.parquet -> pairs.ties.jsonl, a dataset folder pairs/ -> pairs.ties.jsonl beside it."""
    out = Path(out)
    stem = out.stem if out.suffix in (".jsonl", ".parquet") else out.name
    return out.with_name(f"{stem}.{kind}.jsonl")


def container_for(out, to: str | None = None) -> str:
    """`to` if given, else from `out`: a '.parquet' name is parquet, an existing folder a dataset, the rest JSONL."""
    if to is not None:
        if to not in CONTAINERS:
            raise ValueError(f"unknown export container {to!r}; allowed: {', '.join(CONTAINERS)}")
        return to
    if not isinstance(out, str | os.PathLike):
        return "jsonl"
    path = Path(out)
    return "parquet" if path.suffix == ".parquet" else "dataset" if path.is_dir() else "jsonl"


def export_pairs(store, out: str | os.PathLike | IO, fmt: str = "trl", sources: Sequence[str] = ("human", "import"),
                 since_round: int | None = None, min_agreement: float | None = None, include_ties: bool = False,
                 metadata: bool = False, progress: bool = False, *, to: str | None = None,
                 ties_out: IO | None = None, metadata_out: IO | None = None) -> int:
    """Write resolved pairs to a path (atomically, sidecars beside it) or an open file; returns the records written:
    the pairs file's rows (one a pair; in trl-unpaired two a pair and one a thumbs verdict; in ultrafeedback one a
    rated comparison) and the ties.

    `to` is the container (default: from `out`, see `container_for`). To an open file, ties and metadata go to
    the open files `ties_out` / `metadata_out`, which must then be given."""
    container = container_for(out, to)
    targets = _targets(out, fmt, container, include_ties, metadata, ties_out, metadata_out)
    base = Path(out) if isinstance(out, str | os.PathLike) else None
    if fmt == ULTRAFEEDBACK:
        from data.export_ultrafeedback import ultrafeedback_chunks

        if min_agreement is not None:
            raise ValueError("min_agreement filters pairs; an ultrafeedback record holds a whole rating")
        return _write(targets, base, ultrafeedback_chunks(store, sources, since_round, metadata), _write_text)
    filters = dict(sources=sources, since_round=since_round, min_agreement=min_agreement,
                   include_ties=include_ties, unpaired=fmt == UNPAIRED)
    batches = iter_resolved_batches(store, metadata=metadata, batch_size=DEFAULT_BATCH, **filters)
    # A pool with one connection per thread (in-memory SQLite) would give the reader thread an empty database.
    if not isinstance(store.engine.pool, SingletonThreadPool):
        batches = _prefetched(batches)
    with contextlib.closing(batches):  # stops the reader thread when writing fails
        counted = _with_progress(batches, count_resolved(store, **filters)) if progress else batches
        chunks = _chunks(counted, fmt, metadata, as_text=container == "jsonl")
        if container == "jsonl":
            return _write(targets, base, chunks, _write_text)
        from data import export_files

        if container == "parquet":
            return _write(targets, base, chunks, lambda f, pairs: export_files.write_parquet(f, pairs, fmt))
        return _write(targets, base, chunks, lambda _, pairs: export_files.write_dataset(base, pairs, fmt))


def export_part(store, out: IO, part: str = "pairs", metadata: bool = False, **options) -> int:
    """One file of an export, to an open file: the `pairs`, the `ties` (with `metadata`, inline as in a ties
    file) or the pairs' `metadata` (what one HTTP response can carry); the export's other files are not kept.
    `options` as for `export_pairs`."""
    if part not in ("pairs", *SIDECARS):
        raise ValueError(f"unknown export part {part!r}; allowed: pairs, {', '.join(SIDECARS)}")
    files = {name: out if name == part else _Discard() for name in ("pairs", *SIDECARS)}
    return export_pairs(store, files["pairs"], include_ties=part == "ties", metadata=metadata or part == "metadata",
                        ties_out=files["ties"], metadata_out=files["metadata"], **options)


def iter_part(store, part: str = "pairs", metadata: bool = False, depth: int = 2, **options) -> Iterator[bytes]:
    """`export_part` as a generator of UTF-8 chunks (about one per batch of pairs), for a streamed HTTP response.

    The export writes from a thread at most `depth` chunks ahead of the reader, so memory stays flat whatever the
    export's size; closing the generator (a client that went away) stops the export. An error, the arguments' too,
    is raised where the reader is."""
    if isinstance(store.engine.pool, SingletonThreadPool):  # in-memory SQLite: another thread sees an empty database
        pipe = _Pipe(depth).unbounded()
        export_part(store, pipe, part, metadata, **options)
        yield from pipe.chunks()
        return
    yield from _handed_over(lambda pipe: export_part(store, pipe, part, metadata, **options), depth, "export-writer")


def _handed_over(work, depth: int, name: str) -> Iterator:
    """Run `work(pipe)` in a thread and yield what it puts into the pipe, at most `depth` items ahead; an error
    in `work` is raised here, and closing this generator (the reader went away) stops `work`."""
    pipe = _Pipe(depth)
    thread = threading.Thread(target=pipe.feed, args=(lambda: work(pipe),), name=name, daemon=True)
    thread.start()
    try:
        yield from pipe.chunks()
    finally:
        pipe.reader_gone()
        thread.join()


class _ReaderGone(Exception):
    """The reader of a `_Pipe` stopped reading: the export writing into it stops too."""


class _Pipe(io.RawIOBase):
    """A binary file whose writes a reader takes as chunks, at most `depth` of them waiting: the writer blocks while
    the reader is behind, and fails with `_ReaderGone` once the reader has gone."""

    def __init__(self, depth: int):
        super().__init__()
        self._slots: queue.Queue = queue.Queue(maxsize=depth)
        self._gone = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if data:
            self.put(bytes(data))
        return len(data)

    def unbounded(self) -> "_Pipe":
        self._slots = queue.Queue()  # written before anything reads: holds the whole export
        return self

    def put(self, item) -> None:
        while not self._gone.is_set():
            with contextlib.suppress(queue.Full):
                self._slots.put(item, timeout=0.1)
                return
        raise _ReaderGone

    def feed(self, export) -> None:
        """Run `export` (which writes into this pipe), then mark the end or hand its error to the reader."""
        try:
            export()
            self.put(_DONE)
        except _ReaderGone:
            pass
        except BaseException as exc:  # re-raised by the reader
            with contextlib.suppress(_ReaderGone):
                self.put(exc)

    def chunks(self) -> Iterator[bytes]:
        if self._slots.maxsize == 0:  # unbounded: complete already
            self._slots.put(_DONE)
        while (item := self._slots.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item

    def reader_gone(self) -> None:
        self._gone.set()


class _Discard(io.RawIOBase):
    """A binary file that keeps nothing."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return len(data)


def _targets(out, fmt: str, container: str, include_ties: bool, metadata: bool, ties_out, metadata_out) -> dict:
    """The export's outputs by name (pairs, ties, metadata), checked before anything is read or written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if container != "jsonl" and fmt not in TRL_SHAPES:
        raise ValueError(f"{container} export holds TRL's conversational shapes: use format 'trl' or '{UNPAIRED}' "
                         f"(format {fmt!r} is JSONL only)")
    if fmt == ULTRAFEEDBACK and include_ties:
        raise ValueError("an ultrafeedback record holds every score of its comparison, equal ones too: there are no "
                         "ties to write beside it")
    is_path = isinstance(out, str | os.PathLike)
    if container == "dataset":
        if not is_path:
            raise ValueError("a dataset export needs a folder path, not an open file")
        from data.export_files import check_dataset_target

        check_dataset_target(Path(out))
    wanted = {"ties": (include_ties, ties_out), "metadata": (metadata, metadata_out)}
    targets = {"pairs": None if container == "dataset" else out}
    for kind, (asked, given) in wanted.items():
        if is_path:
            targets[kind] = sidecar_path(out, kind) if asked else None  # None: a stale one is removed
        elif asked:
            if given is None:
                raise ValueError(f"{kind} go to a file of their own: export to a path, or pass {kind}_out")
            targets[kind] = given
    return targets


def _chunks(batches, fmt: str, metadata: bool, as_text: bool) -> Iterator[Chunk]:
    start = 0  # the pairs file's row of the batch's first pair, for the metadata sidecar
    for batch in batches:
        chunk = _render(batch, fmt, metadata, start, as_text)
        start += chunk.rows
        yield chunk


def _render(batch: list[tuple], fmt: str, metadata: bool, start: int, as_text: bool = True) -> Chunk:
    """One batch of `ResolvedRow`-ordered tuples. Plain pairs without metadata, the bulk of any export, take the
    short path: one f-string per row, no dict, no json.dumps of the prompt."""
    # r[1] prompt JSON, r[2] chosen, r[3] rejected, r[12] tools, r[13] parallel_tool_calls (ResolvedRow's order)
    per_pair = 2 if fmt == UNPAIRED else 1
    if not metadata and all(r[4] in PAIR_OUTCOMES and "\n" not in r[1] and r[12] is None and r[13] is None
                            for r in batch):
        return Chunk(batch, per_pair * len(batch), _plain_text(batch, fmt) if as_text else "", 0, "", "")
    rows = [ResolvedRow._make(r) for r in batch]
    # A thumbs row comes only in trl-unpaired (iter_resolved's `unpaired`): one row of the file, like half a pair.
    kept = [r for r in rows if r.is_pair or r.outcome in THUMBS]
    ties = [r for r in rows if not r.is_pair and r.outcome not in THUMBS]
    text = "".join([_line(r, fmt) for r in kept]) if as_text else ""
    # A metadata line per row of the pairs file (both rows of a pair in trl-unpaired), "row" its number there.
    numbers = [per_pair if r.is_pair else 1 for r in kept]
    firsts = list(itertools.accumulate(numbers, initial=start))[:-1]  # the file row of each kept row's first line
    meta = "".join([_json_line({"row": first + k, **_metadata(r)})
                    for r, n, first in zip(kept, numbers, firsts, strict=True) for k in range(n)]) if metadata else ""
    return Chunk(kept, sum(numbers), text, len(ties), "".join([_line(r, fmt, metadata) for r in ties]), meta)


def _plain_text(batch: list[tuple], fmt: str) -> str:
    """The lines of plain pairs (no tools, one-line prompt JSON): one f-string per row."""
    enc = encode_basestring
    if fmt == UNPAIRED:
        head, mid, tail = _UNPAIRED_ROW
        return "".join([f"{head}{r[1]}{mid}{enc(r[2])}{tail}true}}\n{head}{r[1]}{mid}{enc(r[3])}{tail}false}}\n"
                        for r in batch])
    head, mid, tail = TEMPLATES[fmt][0]
    return "".join([f"{head}{r[1]}{mid}{enc(r[2])}{tail}{enc(r[3])}}}]}}\n" for r in batch])


def _line(row: ResolvedRow, fmt: str, metadata: bool = False) -> str:
    if fmt == UNPAIRED and row.outcome in THUMBS:
        head, mid, tail = _UNPAIRED_ROW
        label = "true" if row.outcome == "up" else "false"
        return f"{head}{_one_line(row.prompt_json)}{mid}{encode_basestring(row.chosen)}{tail}{label}}}\n"
    if fmt == UNPAIRED and row.is_pair:
        head, mid, tail = _UNPAIRED_ROW
        prompt = _one_line(row.prompt_json)
        return (f"{head}{prompt}{mid}{encode_basestring(row.chosen)}{tail}true}}\n"
                f"{head}{prompt}{mid}{encode_basestring(row.rejected)}{tail}false}}\n")
    head, mid, tail = TEMPLATES["trl" if fmt == UNPAIRED else fmt][0 if row.is_pair else 1]
    extra = ""  # a tie's label and metadata: the ties file is prefloop's own, not a consumer's format
    if not row.is_pair:
        extra = f', "label": "{row.outcome}"'
        extra += f', "metadata": {json.dumps(_metadata(row), ensure_ascii=False)}' if metadata else ""
    tools = _openai_tools(row) if fmt == "openai" else ""
    first, second = encode_basestring(row.chosen), encode_basestring(row.rejected)
    return f"{head}{_one_line(row.prompt_json)}{tools}{mid}{first}{tail}{second}}}]{extra}}}\n"


def _openai_tools(row: ResolvedRow) -> str:
    """`input.tools` and `input.parallel_tool_calls`, as OpenAI's preference format documents them, when set."""
    text = "" if row.tools_json is None else f', "tools": {_one_line(row.tools_json)}'
    if row.parallel_tool_calls is not None:
        text += f', "parallel_tool_calls": {"true" if row.parallel_tool_calls else "false"}'
    return text


def _one_line(stored_json: str) -> str:
    # Our serializer never writes a raw newline, but JSON stored by other means might: a JSONL line must not break.
    return json.dumps(json.loads(stored_json), ensure_ascii=False) if "\n" in stored_json else stored_json


def _json_line(value) -> str:
    return json.dumps(value, ensure_ascii=False) + "\n"


def _metadata(r: ResolvedRow) -> dict:
    versions = ({"chosen": r.chosen_version, "rejected": r.rejected_version} if r.is_pair
                else {"completion": r.chosen_version} if r.outcome in THUMBS
                else {"response_a": r.chosen_version, "response_b": r.rejected_version})
    # kind: what the annotators gave (a ranking, rating or thumbs comparison yields pairs; data/derived.py)
    meta = {"comparison_id": r.comparison_id, "kind": r.kind, "source": r.source, "annotators": r.annotators,
            "agreement": r.agreement, "labels": r.labels, "model_versions": versions, "round": r.round}
    if r.source == ADJUDICATION:  # a reviewer decided it: who (annotator 'adjudication:<reviewer>')
        meta["adjudicated_by"] = [a.partition(":")[2] or a for a in r.annotators or ()]
    return meta


# -- writing ---------------------------------------------------------------------------------------------------------
def _write(targets: dict, base: Path | None, chunks: Iterator[Chunk], write_pairs) -> int:
    """Write the pairs with `write_pairs(file, chunks)` and every chunk's sidecar text; returns pairs + ties."""
    ties = 0
    with _Outputs(targets, base) as files:

        def teed() -> Iterator[Chunk]:
            nonlocal ties
            for chunk in chunks:
                files.write_sidecars(chunk)
                ties += chunk.ties
                yield chunk

        return write_pairs(files.pairs, teed()) + ties


def _write_text(f: IO, chunks: Iterator[Chunk]) -> int:
    text_mode = isinstance(f, io.TextIOBase)
    written = 0
    for chunk in chunks:
        f.write(chunk.text if text_mode else chunk.text.encode("utf-8"))
        written += chunk.rows
    return written


class _Outputs:
    """The files of one export by name: a path is written beside as `.tmp` and renamed into place only when the
    whole export succeeded (so a failed export leaves no half-written file); an open file is written as is.
    A sidecar not asked for this time (None) of an export to the path `base` is removed: an earlier export's
    would no longer match the pairs file."""

    def __init__(self, targets: dict, base: Path | None = None):
        self.targets = targets
        self.base = base
        self.files: dict[str, IO] = {}
        self.temps: dict[str, Path] = {}

    def __enter__(self) -> "_Outputs":
        try:
            for name, target in self.targets.items():
                if isinstance(target, str | os.PathLike):
                    path = Path(target)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self.temps[name] = path.with_name(path.name + ".tmp")
                    self.files[name] = open(self.temps[name], "wb")  # noqa: SIM115 (closed in __exit__)
                elif target is not None:
                    self.files[name] = target
        except BaseException:
            self._close(committed=False)
            raise
        return self

    @property
    def pairs(self) -> IO | None:
        return self.files.get("pairs")  # None for a dataset folder, which export_files writes itself

    def write(self, name: str, text: str) -> None:
        if text:
            f = self.files[name]
            f.write(text if isinstance(f, io.TextIOBase) else text.encode("utf-8"))

    def write_sidecars(self, chunk: Chunk) -> None:
        if chunk.ties_text:
            self.write("ties", chunk.ties_text)
        if chunk.metadata_text:
            self.write("metadata", chunk.metadata_text)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(committed=exc_type is None)

    def _close(self, committed: bool) -> None:
        for name, temp in self.temps.items():
            self.files[name].close()
            if committed:
                os.replace(temp, self.targets[name])
            else:
                temp.unlink(missing_ok=True)
        if committed and self.base is not None:
            for name in SIDECARS:
                if self.targets.get(name) is None:
                    sidecar_path(self.base, name).unlink(missing_ok=True)


def _with_progress(batches, total: int):
    from tqdm import tqdm

    with tqdm(total=total, unit="pairs", desc="export") as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))


def _prefetched(batches: Iterator, depth: int = 2) -> Iterator:
    """Iterate `batches` in a thread, `depth` ahead: the database steps without the GIL, so reading the next
    batch overlaps rendering and writing this one (the export's time is otherwise their sum)."""
    def read(pipe: _Pipe) -> None:
        try:
            for batch in batches:
                pipe.put(batch)
        finally:
            batches.close()  # ends the read transaction in the thread that opened it

    return _handed_over(read, depth, "export-reader")
