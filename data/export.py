"""JSONL export of resolved comparisons in the `trl` and `openai` preference formats. Each line is spliced
from the stored prompt JSON and the escaped response texts, so an export streams at database speed."""

import contextlib
import io
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

_OPEN = '[{"role": "assistant", "content": '


class Layout(NamedTuple):
    """The fixed text around the spliced values of one line, for a pair or a tie-like outcome."""

    before_prompt: str
    before_first: str  # chosen, or response A
    before_second: str  # rejected, or response B


# Per format: (pair layout, tie layout). A line is the layout's pieces with the values between them, then
# '}]', the tie label if any, the metadata if asked, and the closing brace.
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
FORMATS = tuple(TEMPLATES)
_DONE = object()


def export_pairs(store, out: str | os.PathLike | IO, fmt: str = "trl", sources: Sequence[str] = ("human", "import"),
                 since_round: int | None = None, min_agreement: float | None = None, include_ties: bool = False,
                 metadata: bool = False, progress: bool = False) -> int:
    """Write resolved comparisons as JSONL to a path (atomically) or to an open file; returns lines written.

    Pairs are written as chosen/rejected; ties and both-bad (only with `include_ties`) as response_a/response_b
    with a `label`, never as a pair."""
    if fmt not in TEMPLATES:
        raise ValueError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    filters = dict(sources=sources, since_round=since_round, min_agreement=min_agreement,
                   include_ties=include_ties)
    batches = iter_resolved_batches(store, metadata=metadata, batch_size=DEFAULT_BATCH, **filters)
    # A pool with one connection per thread (in-memory SQLite) would give the reader thread an empty database.
    if not isinstance(store.engine.pool, SingletonThreadPool):
        batches = _prefetched(batches)
    with contextlib.closing(batches):  # stops the reader thread when writing fails
        counted = _with_progress(batches, count_resolved(store, **filters)) if progress else batches
        chunks = (_render(batch, TEMPLATES[fmt], metadata) for batch in counted)
        if isinstance(out, str | os.PathLike):
            return _write_path(Path(out), chunks)
        return _write_file(out, chunks)


def _render(batch: list[tuple], templates: tuple[Layout, Layout], metadata: bool) -> tuple[int, str]:
    """One batch of `ResolvedRow`-ordered tuples as (line count, text). Pairs without metadata, the bulk of
    any export, take the short path: one f-string per row, no dict, no json.dumps of the prompt."""
    if metadata or not all(r[4] in PAIR_OUTCOMES and "\n" not in r[1] for r in batch):
        return len(batch), "".join([_line(ResolvedRow._make(r), templates, metadata) for r in batch])
    enc = encode_basestring
    head, mid, tail = templates[0]
    # r[1] prompt JSON, r[2] chosen, r[3] rejected (ResolvedRow's order)
    return len(batch), "".join([f"{head}{r[1]}{mid}{enc(r[2])}{tail}{enc(r[3])}}}]}}\n" for r in batch])


def _line(row: ResolvedRow, templates: tuple[Layout, Layout], metadata: bool) -> str:
    head, mid, tail = templates[0] if row.is_pair else templates[1]
    label = "" if row.is_pair else f', "label": "{row.outcome}"'
    meta = f', "metadata": {json.dumps(_metadata(row), ensure_ascii=False)}' if metadata else ""
    first, second = encode_basestring(row.chosen), encode_basestring(row.rejected)
    return f"{head}{_one_line(row.prompt_json)}{mid}{first}{tail}{second}}}]{label}{meta}}}\n"


def _one_line(prompt_json: str) -> str:
    # Our serializer never writes a raw newline, but JSON stored by other means might: a JSONL line must not break.
    return json.dumps(json.loads(prompt_json), ensure_ascii=False) if "\n" in prompt_json else prompt_json


def _metadata(r: ResolvedRow) -> dict:
    versions = ({"chosen": r.chosen_version, "rejected": r.rejected_version} if r.is_pair
                else {"response_a": r.chosen_version, "response_b": r.rejected_version})
    return {"comparison_id": r.comparison_id, "source": r.source, "annotators": r.annotators,
            "agreement": r.agreement, "labels": r.labels, "model_versions": versions, "round": r.round}


def _write_path(path: Path, chunks) -> int:
    """Write next to `path` and rename into place, so a failed export leaves no half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as f:
            written = _write_file(f, chunks)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def _write_file(f: IO, chunks) -> int:
    text_mode = isinstance(f, io.TextIOBase)
    written = 0
    for count, text in chunks:
        f.write(text if text_mode else text.encode("utf-8"))
        written += count
    return written


def _with_progress(batches, total: int):
    from tqdm import tqdm

    with tqdm(total=total, unit="pairs", desc="export") as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))


def _prefetched(batches: Iterator, depth: int = 2) -> Iterator:
    """Iterate `batches` in a thread, `depth` ahead: the database steps without the GIL, so reading the next
    batch overlaps rendering and writing this one (the export's time is otherwise their sum)."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                slots.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    break
            offer(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(exc)
        finally:
            batches.close()  # ends the read transaction in the thread that opened it

    thread = threading.Thread(target=produce, name="export-reader", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
