"""The `ultrafeedback` export: one UltraFeedback record per resolved rating comparison, its responses as completions
(with the model that wrote each) rated per criterion by the mean of the labels that resolved it. Which labels those
are is data/pairs.py's resolution; data/formats.py imports the records back."""

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from sqlmodel import col, select

from data.export import Chunk
from data.models import Comparison, ComparisonResponse, Label, ModelVersion, Prompt, Response
from data.pairs import iter_resolved
from data.rules import live_comparison

BATCH = 1000  # rating comparisons resolved and written at a time
NOT_RATED = "N/A"  # a completion nobody rated on a criterion, as UltraFeedback writes it


class _Rated(NamedTuple):
    """One resolved rating comparison, ready to write."""

    comparison_id: int
    record: dict[str, Any]
    metadata: dict[str, Any]


def ultrafeedback_chunks(store, sources: Sequence[str], since_round: int | None, metadata: bool) -> Iterator[Chunk]:
    """The records of every resolved rating comparison in id order, a chunk of JSONL text per batch of them (and
    with `metadata`, a sidecar line per record: `row`, the comparison, who rated it, the model versions)."""
    row = 0
    for ids in _rating_ids(store):
        rated = _resolved(store, ids, sources, since_round)
        text = "".join(json.dumps(r.record, ensure_ascii=False) + "\n" for r in rated)
        meta = "".join(json.dumps({"row": row + i, **r.metadata}, ensure_ascii=False) + "\n"
                       for i, r in enumerate(rated)) if metadata else ""
        row += len(rated)
        yield Chunk([], len(rated), text, 0, "", meta)


def _rating_ids(store) -> Iterator[list[int]]:
    """The ids of the live rating comparisons of live prompts, BATCH at a time, in id order."""
    after = 0
    while True:
        query = (select(Comparison.id).join(Prompt, col(Prompt.id) == Comparison.prompt_id)
                 .where(Comparison.kind == "rating", Comparison.id > after, live_comparison(),
                        col(Comparison.status).in_(("open", "done")), col(Prompt.discarded_at).is_(None))
                 .order_by(Comparison.id).limit(BATCH))
        with store.read() as s:
            ids = list(s.exec(query).all())
        if not ids:
            return
        yield ids
        after = ids[-1]


def _resolved(store, ids: list[int], sources: Sequence[str], since_round: int | None) -> list[_Rated]:
    """Of these rating comparisons, the resolved ones as records. iter_resolved says which resolve (one row per
    pair or tie they yield, each naming the resolving source and its counted annotators); their ratings are then
    read and averaged here."""
    first: dict[int, Any] = {}
    for r in iter_resolved(store, sources=sources, since_round=since_round, include_ties=True, metadata=True,
                           ids=ids):
        first.setdefault(r.comparison_id, r)
    if not first:
        return []
    completions, ratings = _completions(store, list(first)), _ratings(store, first)
    return [_rated(r, completions[cid], ratings.get(cid, [])) for cid, r in first.items()]


def _completions(store, ids: list[int]) -> dict[int, list[tuple[str, str | None, str | None]]]:
    """Per comparison, (text, model, model version) of each response by position: the model is the version that
    sampled it, or for an imported one the model its source named. A comparison without position rows has its A
    and B (as data/pairs.py reads it)."""
    response = (select(ComparisonResponse.comparison_id, Response.text, ModelVersion.name, Response.sampling_params)
                .join(Response, col(Response.id) == ComparisonResponse.response_id)
                .join(ModelVersion, col(ModelVersion.id) == Response.model_version_id, isouter=True))
    query = (response.where(col(ComparisonResponse.comparison_id).in_(ids))
             .order_by(ComparisonResponse.comparison_id, ComparisonResponse.position))
    found: dict[int, list] = {}
    with store.read() as s:
        rows = list(s.exec(query).all())
        missing = set(ids) - {row[0] for row in rows}
        for side in (Comparison.response_a_id, Comparison.response_b_id) if missing else ():
            rows += s.exec(select(Comparison.id, Response.text, ModelVersion.name, Response.sampling_params)
                           .join(Response, col(Response.id) == side)
                           .join(ModelVersion, col(ModelVersion.id) == Response.model_version_id, isouter=True)
                           .where(col(Comparison.id).in_(missing))).all()
    for cid, text, version, params in rows:
        model = version or (params or {}).get("model")
        found.setdefault(cid, []).append((text, model if isinstance(model, str) else None, version))
    return found


def _ratings(store, resolved: dict[int, Any]) -> dict[int, list[dict]]:
    """Per comparison, the ratings of the labels that resolved it: its resolving source's counted annotators."""
    query = (select(Label.comparison_id, Label.source, Label.annotator, Label.ratings)
             .where(col(Label.comparison_id).in_(list(resolved)), Label.choice == "rated",
                    col(Label.discarded_at).is_(None)))
    found: dict[int, list[dict]] = {}
    with store.read() as s:
        for cid, source, annotator, ratings in s.exec(query).all():
            row = resolved[cid]
            if source == row.source and annotator in (row.annotators or ()):
                found.setdefault(cid, []).append(ratings)
    return found


def _rated(row, completions: list[tuple[str, str | None, str | None]], labels: list[dict]) -> _Rated:
    means = mean_ratings(labels, len(completions))
    messages = json.loads(row.prompt_json)
    one_question = len(messages) == 1 and messages[0]["role"] == "user"
    prompt = {"instruction": messages[0]["content"]} if one_question else {"messages": messages}
    record = {**prompt, "completions": [
        {"model": model, "response": text,
         "annotations": {criterion: {"Rating": shown_rating(scores[i])} for criterion, scores in means.items()}}
        for i, (text, model, _) in enumerate(completions)]}
    metadata = {"comparison_id": row.comparison_id, "kind": "rating", "source": row.source,
                "annotators": row.annotators, "labels": row.labels,
                "model_versions": [version for *_, version in completions], "round": row.round}
    return _Rated(row.comparison_id, record, metadata)


def mean_ratings(labels: list[dict], k: int) -> dict[str, list[float | None]]:
    """{criterion: [mean score of each position]} over the labels' ratings, each mean over the labels that scored
    that position on that criterion (None where none did); criteria in the order the labels first name them."""
    criteria = dict.fromkeys(c for ratings in labels if isinstance(ratings, dict) for c in ratings)
    means = {}
    for criterion in criteria:
        columns = [r[criterion] for r in labels
                   if isinstance(r, dict) and isinstance(r.get(criterion), list) and len(r[criterion]) == k]
        per_position = [_mean([scores[i] for scores in columns if _is_score(scores[i])]) for i in range(k)]
        if any(m is not None for m in per_position):
            means[criterion] = per_position
    return means


def shown_rating(score: float | None) -> str:
    """A score as UltraFeedback writes a rating, a string: "4", or a mean of several exactly ("3.5"); 'N/A'."""
    if score is None:
        return NOT_RATED
    return str(int(score)) if float(score).is_integer() else repr(float(score))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _is_score(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
