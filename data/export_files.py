"""Resolved pairs in TRL's conversational preference shape, paired or unpaired, as Apache Arrow columns: a Parquet
file written one row group per batch, or a Hugging Face `datasets` folder (`Dataset.save_to_disk`). Memory stays
flat at any size: each batch becomes Arrow arrays directly (no object per message) and is written before the next
is read."""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from data.rules import THUMBS  # the outcomes of a thumbs row

ROLE_CONTENT = ("role", "content")
UNPAIRED = "trl-unpaired"  # data.export.UNPAIRED


def schema(fmt: str = "trl"):
    """As TRL loads them: prompt, chosen and rejected, each list<struct<role: string, content: string>>; unpaired
    (`fmt` 'trl-unpaired'), prompt and completion such lists and label a bool."""
    import pyarrow as pa

    messages = pa.list_(pa.struct([(name, pa.string()) for name in ROLE_CONTENT]))
    if fmt == UNPAIRED:
        return pa.schema([("prompt", messages), ("completion", messages), ("label", pa.bool_())])
    return pa.schema([("prompt", messages), ("chosen", messages), ("rejected", messages)])


def record_batch(rows: list[tuple], fmt: str = "trl"):
    """Pair rows in `ResolvedRow` order (1 prompt JSON, 2 chosen, 3 rejected, 4 outcome) as one Arrow record batch;
    unpaired, each pair's chosen row then its rejected row, and a thumbs row (outcome 'up'/'down') as its one
    response labelled true or false."""
    import pyarrow as pa

    prompts = _prompts(rows)
    if fmt == UNPAIRED:
        lines = _unpaired_lines(rows)
        columns = [prompts.take(pa.array([i for i, _, _ in lines], pa.int64())),
                   _assistant_lists([text for _, text, _ in lines]), pa.array([up for *_, up in lines], pa.bool_())]
    else:
        columns = [prompts, _assistant_lists([r[2] for r in rows]), _assistant_lists([r[3] for r in rows])]
    return pa.RecordBatch.from_arrays(columns, schema=schema(fmt))


def _unpaired_lines(rows: list[tuple]) -> list[tuple[int, str, bool]]:
    """(row index, completion, label) of every line rows make unpaired: a pair its chosen (true) then its rejected
    (false), a thumbs row its one response (true: up)."""
    lines = []
    for i, r in enumerate(rows):
        if r[4] in THUMBS:
            lines.append((i, r[2], r[4] == "up"))
        else:
            lines += [(i, r[2], True), (i, r[3], False)]
    return lines


def _assistant_lists(texts: list[str]):
    """One list holding one assistant message per text."""
    import pyarrow as pa

    n = len(texts)
    values = pa.StructArray.from_arrays([pa.repeat("assistant", n), pa.array(texts, pa.string())],
                                        names=list(ROLE_CONTENT))
    return pa.ListArray.from_arrays(pa.array(range(n + 1), pa.int32()), values)


def _prompts(rows: list[tuple]):
    """The stored message lists parsed by Arrow's JSON reader straight into the column: no Python object per
    message. A message other than {role, content} text makes it fail (a fixed column type has no room for other
    keys: refused, never dropped); then the Python check below names the comparison."""
    import pyarrow as pa
    import pyarrow.json as pj

    # Arrow reads one JSON document per line: stored JSON with a raw newline is compacted first (rare).
    lines = "".join([f'{{"prompt": {_one_line(r[1])}}}\n' for r in rows])
    options = pj.ParseOptions(explicit_schema=pa.schema([schema().field("prompt")]), unexpected_field_behavior="error")
    try:
        table = pj.read_json(pa.BufferReader(lines.encode("utf-8")), parse_options=options,
                             read_options=pj.ReadOptions(use_threads=False, block_size=len(lines) * 4 + 64))
        column = table.column("prompt").combine_chunks()
    except pa.ArrowInvalid:
        column = None
    if column is None or column.null_count or column.values.field(0).null_count or column.values.field(1).null_count:
        _refuse_odd_message(rows)
    return column


def _one_line(stored_json: str) -> str:
    return stored_json if "\n" not in stored_json else json.dumps(json.loads(stored_json), ensure_ascii=False)


def _refuse_odd_message(rows: list[tuple]) -> None:
    for r in rows:
        messages = json.loads(r[1])
        for m in messages if type(messages) is list else [messages]:
            if type(m) is not dict or set(m) != set(ROLE_CONTENT) or not all(type(m[k]) is str for k in m):
                raise ValueError(f"comparison {r[0]}: prompt message {m!r:.200} is not {{role, content}} text and "
                                 "does not fit the Parquet/dataset columns; export JSONL instead")
    raise ValueError("a prompt does not fit the Parquet/dataset columns; export JSONL instead")


def write_parquet(f: IO | str, chunks: Iterator, fmt: str = "trl") -> int:
    """Every chunk's pairs as one row group of a Parquet file in `fmt`'s shape; returns the rows written."""
    import pyarrow.parquet as pq

    written = 0
    with pq.ParquetWriter(f, schema(fmt)) as writer:  # an empty export is still a valid file with the schema
        for chunk in chunks:
            if chunk.pairs:
                batch = record_batch(chunk.pairs, fmt)
                writer.write_batch(batch)
                written += batch.num_rows
    return written


def _write_arrow_stream(path: Path, chunks: Iterator, fmt: str) -> int:
    """The same batches as an Arrow IPC stream, the file format a `datasets.Dataset` memory-maps."""
    import pyarrow as pa

    written = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema(fmt)) as writer:
        for chunk in chunks:
            if chunk.pairs:
                batch = record_batch(chunk.pairs, fmt)
                writer.write_batch(batch)
                written += batch.num_rows
        if not written:  # `datasets` cannot open a stream without a batch
            writer.write_batch(pa.RecordBatch.from_pylist([], schema=schema(fmt)))
    return written


def check_dataset_target(folder: Path) -> None:
    """A dataset export replaces `folder` only when it is absent, empty or an earlier saved dataset: never a file
    or a folder of other things."""
    if folder.is_file():
        raise ValueError(f"{folder} is a file; a dataset export needs a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "state.json").is_file():
        raise ValueError(f"{folder} is a non-empty folder that is not a saved dataset; not replacing it")


def write_dataset(folder: Path, chunks: Iterator, fmt: str = "trl") -> int:
    """The pairs as a `datasets` folder (`datasets.load_from_disk(folder)`) in `fmt`'s shape, built in a temporary
    folder beside it and swapped into place when complete; returns the rows written."""
    from datasets import Dataset

    check_dataset_target(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        written = _write_arrow_stream(work / "pairs.arrow", chunks, fmt)
        # Memory-mapped, not loaded: save_to_disk copies it into shards batch by batch.
        dataset = Dataset.from_file(str(work / "pairs.arrow"))
        # An empty dataset must still get one shard, or load_from_disk cannot open the folder.
        dataset.save_to_disk(str(work / "dataset"), num_shards=None if written else 1)
        del dataset
        _swap_in(work / "dataset", folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return written


def _swap_in(new: Path, folder: Path) -> None:
    """Rename `new` to `folder`; an earlier folder there is moved aside first and removed after."""
    old = None
    if folder.exists():
        old = new.parent / "previous"
        os.replace(folder, old)
    os.replace(new, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
