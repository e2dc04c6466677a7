"""Import a prompts, responses, preference, rating or thumbs file (or a Hugging Face datasets folder) into the
database: the whole file or nothing, in one transaction.

Parsing and validation live in data/formats.py; this module turns valid records into rows, deduplicating by hash."""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import JSON, null
from sqlmodel import Session, SQLModel, col, insert, select

from data.formats import (
    MAX_RECORD_BYTES,
    InvalidRecord,
    PreferenceRecord,
    RatingRecord,
    Record,
    ResponsesRecord,
    ThumbsRecord,
    parse_file,
    sniff_format,
)
from data.models import Comparison, ComparisonResponse, Label, Prompt, Response
from data.prompts import prompt_hash
from data.store import Store

MAX_PAIRS_PER_RECORD = 10
_CHUNK = 500  # values per IN (...) query


@dataclass
class ImportResult:
    """What one import did; `invalid` lists the records skipped (skip_invalid), also written to `report_path`."""
    format: str
    prompts_added: int = 0
    prompts_duplicate: int = 0  # records whose prompt was already stored or came earlier in the file
    comparisons_added: int = 0
    comparisons_duplicate: int = 0
    labels_added: int = 0
    gold_added: int = 0  # of the comparisons added, gold questions (the records' `gold` field)
    invalid: list[InvalidRecord] = field(default_factory=list)
    report_path: Path | None = None


@dataclass
class _Pair:
    """A comparison to add: texts A and B of one prompt. Imported preferences ("import") have A chosen."""
    prompt: str  # prompt hash
    a: str
    b: str
    content_hash: str
    origin: str
    source: str  # import|byo
    gold: str | None = None  # the known answer of a gold question


@dataclass
class _Group:
    """An imported comparison of another kind, with its import label: a rating of k responses (choice 'rated',
    `ratings` by position) or a thumb on one response (choice 'up' or 'down')."""
    prompt: str  # prompt hash
    kind: str  # rating|thumbs
    texts: list[str]
    models: list[str | None]
    content_hash: str
    origin: str
    choice: str
    ratings: dict | None = None


def import_file(store: Store, path: str | Path, fmt: str | None = None, prompt_field: str | None = None,
                skip_invalid: bool = False, report_path: str | Path | None = None, overlap: int = 1,
                progress: bool = False, max_record_bytes: int = MAX_RECORD_BYTES) -> ImportResult:
    """Validate the whole file, then store it in one transaction.

    An invalid record raises InvalidRecord (the first one, counting the rest) and stores nothing, unless
    skip_invalid: then the valid records are stored and the invalid ones listed as JSONL in `report_path`."""
    path = Path(path)
    if skip_invalid and report_path is None:
        raise ValueError("skip_invalid needs a report_path for the invalid records")
    if overlap < 1:
        raise ValueError(f"overlap must be at least 1, got {overlap}")
    fmt = fmt or sniff_format(path, prompt_field)
    records, invalid = parse_file(path, fmt, prompt_field, skip_invalid=True, max_record_bytes=max_record_bytes)
    if invalid and not skip_invalid:
        invalid[0].more = len(invalid) - 1
        raise invalid[0]
    result = ImportResult(format=fmt, invalid=invalid)
    if skip_invalid:
        # Written before the transaction: an unwritable report path fails the import before anything is stored.
        result.report_path = _write_report(invalid, Path(report_path))
    # A datasets folder's records are rows numbered from 0, so their origin says so ("name row 3", not "name:3").
    where = f"{path.name} row " if path.is_dir() else f"{path.name}:"
    with store.write() as session:
        _store_records(session, records, (path.name, where), overlap, result, progress)
    return result


def _write_report(invalid: list[InvalidRecord], report_path: Path) -> Path:
    lines = (json.dumps(bad.to_json(), ensure_ascii=False) + "\n" for bad in invalid)
    report_path.write_text("".join(lines), encoding="utf-8")
    return report_path


def _store_records(session: Session, records: list[Record], source: tuple[str, str], overlap: int,
                   result: ImportResult, progress: bool) -> None:
    """Store the records; `source` is (file name, the prefix of an origin before the record's line number)."""
    file_name = source[0]
    hashes = [prompt_hash(r.messages, *_tools(r)) for r in records]
    prompt_ids = _store_prompts(session, records, hashes, file_name, result)
    new = _new_pairs(session, _pairs(records, hashes, source, progress), result)
    _store_groups(session, [g for g in new if isinstance(g, _Group)], prompt_ids, result)
    pairs = [p for p in new if isinstance(p, _Pair)]
    response_ids = _store_responses(session, pairs, prompt_ids)
    comparison_ids = _insert(session, Comparison, [
        dict(prompt_id=prompt_ids[p.prompt], response_a_id=response_ids[p.prompt, p.source, p.a],
             response_b_id=response_ids[p.prompt, p.source, p.b], content_hash=p.content_hash,
             origin=p.origin, source=p.source, gold_choice=p.gold, **_comparison_state(p.source, overlap))
        for p in pairs
    ])
    label_ids = _insert(session, Label, [
        dict(comparison_id=cid, annotator="import", source="import", choice="a", shown_order="ab")
        for cid, p in zip(comparison_ids, pairs, strict=True) if p.source == "import"
    ])
    result.comparisons_added += len(comparison_ids)
    result.gold_added += sum(1 for p in pairs if p.gold)
    result.labels_added += len(label_ids)


def _comparison_state(source: str, overlap: int) -> dict:
    # Imported preferences arrive labelled (done); BYO pairs wait in the queue for `overlap` labels.
    return {"status": "done", "overlap": 1} if source == "import" else {"status": "open", "overlap": overlap}


def _store_prompts(session: Session, records: Sequence[Record], hashes: list[str], file_name: str,
                   result: ImportResult) -> dict[str, int]:
    """Prompt id per prompt hash; prompts already stored, or earlier in the file, are counted as duplicates."""
    ids = dict(_select_in(session, select(Prompt.content_hash, Prompt.id), Prompt.content_hash, set(hashes)))
    new: dict[str, dict] = {}
    for record, h in zip(records, hashes, strict=True):
        if h in ids or h in new:
            result.prompts_duplicate += 1
            continue
        tools, parallel_tool_calls = _tools(record)
        new[h] = dict(messages=record.messages, source=file_name, content_hash=h, tools=tools,
                      parallel_tool_calls=parallel_tool_calls, next_turns=getattr(record, "next_turns", None))
    result.prompts_added += len(new)
    return ids | dict(zip(new, _insert(session, Prompt, list(new.values())), strict=True))


def _tools(record: Record) -> tuple[list | None, bool | None]:
    """The tool definitions that come with a record's prompt (OpenAI preference data only)."""
    if isinstance(record, PreferenceRecord):
        return record.tools, record.parallel_tool_calls
    return None, None


def _pairs(records: Sequence[Record], hashes: list[str], source: tuple[str, str],
           progress: bool) -> list[_Pair | _Group]:
    from tqdm import tqdm  # only a progress bar: imported when needed

    file_name, where = source
    pairs = []
    for record, h in tqdm(zip(records, hashes, strict=True), total=len(hashes), disable=not progress,
                          desc=f"import {file_name}", unit="record"):
        origin = f"{where}{record.line}"
        if isinstance(record, PreferenceRecord):
            key = _content_hash("import", h, record.chosen, record.rejected)
            # A is the chosen response: a gold pair's known answer is 'a'. A duplicate keeps its stored answer.
            pairs.append(_Pair(h, record.chosen, record.rejected, key, origin, "import", "a" if record.gold else None))
        elif isinstance(record, ResponsesRecord):
            for i, j in _spread_pairs(len(record.responses))[:MAX_PAIRS_PER_RECORD]:
                a, b = record.responses[i], record.responses[j]
                # Unordered: the same two responses in either order are one comparison.
                pairs.append(_Pair(h, a, b, _content_hash("byo", h, *sorted((a, b))), origin, "byo", record.gold))
        elif isinstance(record, RatingRecord | ThumbsRecord):
            pairs.append(_group(record, h, origin))
    return pairs


def _group(record: RatingRecord | ThumbsRecord, prompt: str, origin: str) -> _Group:
    """The comparison a rating or thumbs record makes. Its content hash holds the label too: the same texts rated
    otherwise, or the same response judged the other way (another person's verdict), are another comparison."""
    if isinstance(record, ThumbsRecord):
        choice = "up" if record.up else "down"
        key = _content_hash("thumbs", prompt, record.completion, choice)
        return _Group(prompt, "thumbs", [record.completion], [None], key, origin, choice)
    key = _content_hash("rating", prompt, record.responses, record.ratings)
    return _Group(prompt, "rating", record.responses, record.models, key, origin, "rated", record.ratings)


def _spread_pairs(n: int) -> list[tuple[int, int]]:
    """All unordered index pairs, neighbours first, so a capped list still shows every response it can."""
    return [(i, i + d) for d in range(1, n) for i in range(n - d)]


def _content_hash(kind: str, prompt: str, *content) -> str:
    # The kind keeps an imported preference and a BYO pair of the same texts apart.
    return hashlib.sha256(json.dumps([kind, prompt, *content], ensure_ascii=False).encode()).hexdigest()


def _new_pairs(session: Session, pairs: list, result: ImportResult) -> list:
    """Pairs whose content hash is neither stored nor earlier in the file; the others are counted as duplicates."""
    hashes = {p.content_hash for p in pairs}
    seen = set(_select_in(session, select(Comparison.content_hash), Comparison.content_hash, hashes))
    new = []
    for p in pairs:
        if p.content_hash in seen:
            result.comparisons_duplicate += 1
            continue
        seen.add(p.content_hash)
        new.append(p)
    return new


def _store_groups(session: Session, groups: list[_Group], prompt_ids: dict[str, int], result: ImportResult) -> None:
    """Ratings and thumbs as done comparisons of their kind, each with its responses by position and one import
    label. Each gets response rows of its own, shared with nothing: a comparison's A and B (its first two responses;
    a thumb's one response is both) are unique among comparisons, so a shared row could clash with a stored pair,
    another rating of the same texts, or the opposite thumb on the same text."""
    rows = [dict(prompt_id=prompt_ids[g.prompt], text=text, source="import", sampling_params=_sampled_by(model))
            for g in groups for text, model in zip(g.texts, g.models, strict=True)]
    ids = iter(_insert(session, Response, rows))
    positions = [[next(ids) for _ in g.texts] for g in groups]
    comparison_ids = _insert(session, Comparison, [
        dict(prompt_id=prompt_ids[g.prompt], response_a_id=p[0], response_b_id=p[min(1, len(p) - 1)], kind=g.kind,
             content_hash=g.content_hash, origin=g.origin, source="import", **_comparison_state("import", 1))
        for g, p in zip(groups, positions, strict=True)])
    _insert(session, ComparisonResponse, [dict(comparison_id=cid, position=i, response_id=rid)
                                          for cid, p in zip(comparison_ids, positions, strict=True)
                                          for i, rid in enumerate(p)])
    labels = _insert(session, Label, [dict(comparison_id=cid, annotator="import", source="import", choice=g.choice,
                                           shown_order="ab", ratings=g.ratings)
                                      for cid, g in zip(comparison_ids, groups, strict=True)])
    result.comparisons_added += len(comparison_ids)
    result.labels_added += len(labels)


def _sampled_by(model: str | None) -> dict:
    # Who wrote an imported response (UltraFeedback's `model`): kept where a generated one keeps how it was sampled.
    return {"model": model} if model else {}


def _store_responses(session: Session, pairs: list[_Pair], prompt_ids: dict[str, int]) -> dict[tuple, int]:
    """Response id per (prompt hash, source, text): one row per text, reusing rows stored by earlier imports."""
    hash_of = {prompt_ids[p.prompt]: p.prompt for p in pairs}
    query = select(Response.prompt_id, Response.source, Response.text, Response.id).where(
        col(Response.source).in_(("import", "byo")))
    rows = _select_in(session, query, Response.prompt_id, set(hash_of))
    ids = {(hash_of[pid], source, text): rid for pid, source, text, rid in rows}
    new: dict[tuple, dict] = {}
    for p in pairs:
        for text in (p.a, p.b):
            key = (p.prompt, p.source, text)
            if key not in ids and key not in new:
                new[key] = dict(prompt_id=prompt_ids[p.prompt], text=text, source=p.source)
    return ids | dict(zip(new, _insert(session, Response, list(new.values())), strict=True))


def _insert(session: Session, model: type[SQLModel], rows: list[dict]) -> list[int]:
    """Insert rows in one executemany (ORM objects cost ~10x more); the new ids come back in row order."""
    if not rows:
        return []
    # A Core insert skips the model's Python-side defaults (created_at, JSON fields), so fill them in here.
    defaults = {name: f.get_default(call_default_factory=True)
                for name, f in model.model_fields.items() if name != "id" and not f.is_required()}
    # None in a JSON column would be stored as the JSON text 'null'; SQL NULL is what `IS NULL` finds.
    json_columns = {c.name for c in model.__table__.columns if isinstance(c.type, JSON)}
    params = [{k: null() if v is None and k in json_columns else v for k, v in (defaults | row).items()}
              for row in rows]
    statement = insert(model).returning(model.id, sort_by_parameter_order=True)
    return list(session.exec(statement, params=params).scalars())


def _select_in(session: Session, query, column, values: set) -> list:
    """Rows of `query` where `column` is in `values`, asked in chunks to stay under the bound-parameter limit."""
    values = list(values)
    chunks = (values[start:start + _CHUNK] for start in range(0, len(values), _CHUNK))
    return [row for chunk in chunks for row in session.exec(query.where(col(column).in_(chunk)))]
