"""Reading import files record by record: JSONL lines, the elements of one JSON array, CSV rows, and the rows of
a Hugging Face datasets folder.

Each reader yields (physical line, element index, object, problem) and never holds an oversized line whole."""

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")


class InvalidRecord(ValueError):
    """One malformed record: which file, which physical line, which field, and what is wrong with it."""

    def __init__(self, file: str, line: int, field: str | None, message: str, record: int | None = None,
                 unit: str = "line"):
        super().__init__(file, line, field, message, record)
        self.file, self.line, self.field, self.message = file, line, field, message
        self.record = record  # 1-based element index, for JSON array files
        self.unit = unit  # "line" (1-based, files) or "row" (0-based, `dataset[row]` of a datasets folder)
        self.more = 0  # how many further invalid records the file has (set when raised for a whole file)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.unit == "line" else f"{self.file} {self.unit} {self.line}"
        where += f" (record {self.record})" if self.record else ""
        what = f"field '{self.field}': {self.message}" if self.field else self.message
        more = f" (and {self.more} more invalid record{'s' * (self.more != 1)})" if self.more else ""
        return f"{where}: {what}{more}"

    def to_json(self) -> dict[str, Any]:
        row = {self.unit: self.line, "field": self.field, "message": self.message}
        return row | ({"record": self.record} if self.record else {})


Item = tuple[int, int | None, Any, str | None]  # physical line, element index (JSON arrays), object, problem


def jsonl_items(path: Path, max_bytes: int, _prompt_field: str | None = None) -> Iterator[Item]:
    with open(path, "rb") as f:
        for line, raw in enumerate(_bounded_lines(f, max_bytes), 1):
            if raw is None:
                yield line, None, None, f"line is longer than the limit of {max_bytes} bytes"
                continue
            if line == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line, None, None, f"not UTF-8: byte {raw[e.start]:#04x} at column {e.start + 1}"
                continue
            yield line, None, *_json_object(text)


def _bounded_lines(f, max_bytes: int) -> Iterator[bytes | None]:
    """Lines without their newline; None for a line over `max_bytes`, which is read past but never held whole."""
    limit = max_bytes + 2  # room for "\r\n" after a line of exactly max_bytes
    while raw := f.readline(limit):
        if len(raw) == limit and not raw.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield None
            continue
        raw = raw.rstrip(b"\r\n")
        yield None if len(raw) > max_bytes else raw


def _json_object(text: str) -> tuple[Any, str | None]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} at column {e.colno}"
    if not isinstance(obj, dict):
        return None, f"must be a JSON object, not {kind(obj)}"
    return obj, None


def json_array_items(path: Path, max_bytes: int, _prompt_field: str | None = None) -> Iterator[Item]:
    """Elements of one JSON array, each with the physical line it starts on."""
    # surrogateescape keeps bad bytes inside strings as lone surrogates, so they are reported per element.
    text = path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    lines = _LineCounter(text)
    decoder = json.JSONDecoder()
    pos = _WS.match(text).end()
    if text[pos:pos + 1] != "[":
        raise InvalidRecord(str(path), lines.at(pos), None, "must be one JSON array of records")
    pos = _WS.match(text, pos + 1).end()
    index = 0
    while text[pos:pos + 1] != "]":
        index += 1
        line = lines.at(pos)
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise InvalidRecord(str(path), lines.at(e.pos), None, f"not valid JSON: {e.msg}", index) from None
        yield line, index, obj, _element_problem(text[pos:end], obj, max_bytes)
        pos = _WS.match(text, end).end()
        if text[pos:pos + 1] == ",":
            pos = _WS.match(text, pos + 1).end()
        elif text[pos:pos + 1] != "]":
            raise InvalidRecord(str(path), lines.at(pos), None, "expected ',' or ']' after a record", index)
    if text[_WS.match(text, pos + 1).end():]:
        raise InvalidRecord(str(path), lines.at(pos + 1), None, "unexpected text after the JSON array")


def _element_problem(span: str, obj: Any, max_bytes: int) -> str | None:
    try:
        size = len(span.encode("utf-8"))
    except UnicodeEncodeError:
        return "not UTF-8: the record holds bytes that are not valid UTF-8"
    if size > max_bytes:
        return f"record is longer than the limit of {max_bytes} bytes"
    return None if isinstance(obj, dict) else f"must be a JSON object, not {kind(obj)}"


class _LineCounter:
    """Physical line of a text offset; offsets are asked for in increasing order, so counting is incremental."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        if pos >= self.pos:
            self.line += self.text.count("\n", self.pos, pos)
        else:
            self.line -= self.text.count("\n", pos, self.pos)
        self.pos = pos
        return self.line


def csv_items(path: Path, max_bytes: int, prompt_field: str | None) -> Iterator[Item]:
    column = prompt_field or "prompt"
    text = path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    # Cells up to our own record limit must reach our size check instead of failing inside the csv module.
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes * 4))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or column not in header:
            found = ", ".join(header or []) or "none"
            raise InvalidRecord(str(path), 1, column, f"column is missing from the CSV header (columns: {found})")
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if any(row):  # rows of empty cells are blank lines; a whitespace-only prompt is an error
                yield line, None, dict(zip(header, row, strict=False)), _csv_problem(row, max_bytes)
    except csv.Error as e:
        raise InvalidRecord(str(path), reader.line_num, None, f"not valid CSV: {e}") from None


def _csv_problem(row: list[str], max_bytes: int) -> str | None:
    try:
        size = sum(len(cell.encode("utf-8")) for cell in row)
    except UnicodeEncodeError:
        return "not UTF-8: the row holds bytes that are not valid UTF-8"
    return f"row is longer than the limit of {max_bytes} bytes" if size > max_bytes else None


def dataset_items(path: Path, max_bytes: int, _prompt_field: str | None = None) -> Iterator[Item]:
    """Rows of a Hugging Face datasets folder (`save_to_disk`), numbered from 0 like `dataset[row]`."""
    for row, obj in enumerate(load_dataset_folder(path)):
        size = len(json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8"))
        yield row, None, obj, f"row is longer than the limit of {max_bytes} bytes" if size > max_bytes else None


def load_dataset_folder(path: Path):
    """The Dataset saved in `path`, or the 'train' split of a saved DatasetDict, giving plain Python rows."""
    from datasets import DatasetDict, load_from_disk  # heavy: only when a folder is imported

    try:
        dataset = load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DatasetFolderError(f"{path}: not a Hugging Face datasets folder (one written by save_to_disk): {e}") \
            from None
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            splits = ", ".join(dataset) or "none"
            raise DatasetFolderError(f"{path}: a DatasetDict without a 'train' split (splits: {splits}); "
                                     "import one split's folder instead")
        dataset = dataset["train"]
    return dataset.with_format(None)  # a saved torch/numpy format would hand out tensors instead of lists


class DatasetFolderError(ValueError):
    """A folder given to import is not a datasets folder prefloop can read."""


def kind(value: Any) -> str:
    """How an error message names a JSON value's type."""
    if isinstance(value, list):
        return f"a list of {len(value)}" if value else "an empty list"
    names = {dict: "an object", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
