"""Rankings, ratings and thumbs read back from the database and resolved (by data/derived.py's rules) into rows in
data.pairs.ResolvedRow's order: the pairs they yield, their ties, and thumbs alone when asked for unpaired.
data/pairs.py calls this for each batch of comparison ids that holds any of them. `query` is pairs' checked filters."""

import json
from operator import itemgetter
from typing import NamedTuple

from data.derived import DERIVED_KINDS, Resolution, Vote, resolve, vote, weaker
from data.quality import not_held_sql
from data.rules import sql_names

# -- rankings, ratings and thumbs -----------------------------------------------------------------------------------
# Few beside the pairs, and each yields several rows (or pairs up with another): resolved in Python, a batch's
# worth at a time, with a handful of queries per batch that holds any.
_OTHER_SQL = ("SELECT c.id, c.kind, c.prompt_id, c.overlap, COALESCE(mv.round, 0), CAST(p.messages AS TEXT), "
              "NULLIF(CAST(p.tools AS TEXT), 'null'), p.parallel_tool_calls "
              "FROM comparison c JOIN prompt p ON p.id = c.prompt_id "
              "LEFT JOIN modelversion mv ON mv.id = c.model_version_id "
              "WHERE c.status IN ('open', 'done') AND c.discarded_at IS NULL AND p.discarded_at IS NULL AND ")


class _Other(NamedTuple):
    """A live comparison of another kind than pair, as read to resolve it."""

    id: int
    kind: str
    prompt_id: int
    overlap: int
    round: int
    prompt_json: str
    tools_json: str | None
    parallel_tool_calls: bool | None


class _Made(NamedTuple):
    """One row to be, before the response texts are read: under `comparison`, `chosen_id` over `rejected_id`."""

    comparison: _Other
    chosen_id: int
    rejected_id: int | None
    outcome: str
    source: str
    agreement: float
    labels: int
    annotators: list[str]
    round: int


def other_kinds_span(cursor) -> tuple[int, int]:
    """A half-open id range that holds every comparison of another kind than pair, (0, 0) when there are none: a
    batch outside it (every batch of a database of pairs) costs nothing more. Read from ComparisonResponse, which
    every ranking, rating and thumbs comparison has rows in and no pair has: two index look-ups, not a scan of
    the comparisons."""
    cursor.execute("SELECT MIN(comparison_id), MAX(comparison_id) FROM comparisonresponse")
    lo, hi = cursor.fetchone()
    return (0, 0) if lo is None else (lo, hi + 1)


def derived_rows(cursor, query, lo: int, hi: int, held: set[str], texts: bool = True) -> list[tuple]:
    """The rows that the ranking, rating and thumbs comparisons with ids in [lo, hi) yield, in id order. A thumbs
    pair is the larger id's: the earlier thumbs comparisons of the same prompts are read and resolved too.
    Without `texts` (counting), chosen and rejected are None."""
    others = _other_comparisons(cursor, lo, hi, partners=not query.unpaired)
    if not others:
        return []
    positions = _positions(cursor, others)
    resolved = _resolutions(cursor, query, held, others, positions)
    made: list[_Made] = []
    thumbs_by_prompt: dict[int, list[_Other]] = {}
    said = {} if query.unpaired else _thumbs_texts(cursor, others, positions)
    for c in others:
        if c.id not in resolved:
            continue
        if c.kind == "thumbs" and not query.unpaired:
            earlier = [o for o in thumbs_by_prompt.setdefault(c.prompt_id, []) if said[o.id] != said[c.id]]
            made += _thumbs_pairs(query, c, earlier, positions, resolved, lo)
            thumbs_by_prompt[c.prompt_id].append(c)
        elif c.id >= lo:
            made += _own_rows(query, c, positions[c.id], resolved[c.id])
    responses = _responses(cursor, {i for m in made for i in (m.chosen_id, m.rejected_id)}) if texts else {}
    return [_row(m, responses, query.metadata) for m in made]


def _other_comparisons(cursor, lo: int, hi: int, partners: bool) -> list[_Other]:
    """The live ranking, rating and thumbs comparisons in [lo, hi), and with `partners` the earlier live thumbs
    comparisons of the thumbs comparisons' prompts, in id order."""
    sql = f"{_OTHER_SQL}c.kind IN ({sql_names(DERIVED_KINDS)}) AND c.id >= {lo} AND c.id < {hi}"
    if partners:
        sql += (f" UNION ALL {_OTHER_SQL}c.kind = 'thumbs' AND c.id < {lo} AND c.prompt_id IN "
                f"(SELECT prompt_id FROM comparison WHERE kind = 'thumbs' AND id >= {lo} AND id < {hi})")
    cursor.execute(sql)
    return sorted(map(_Other._make, cursor.fetchall()), key=itemgetter(0))


def _positions(cursor, others: list[_Other]) -> dict[int, list[int]]:
    """Each comparison's response ids by position (none: it has no ComparisonResponse rows and resolves nothing)."""
    cursor.execute(f"SELECT comparison_id, response_id FROM comparisonresponse WHERE comparison_id IN "
                   f"({_ids(c.id for c in others)}) ORDER BY comparison_id, position")
    found: dict[int, list[int]] = {c.id: [] for c in others}
    for cid, response_id in cursor.fetchall():
        found[cid].append(response_id)
    return found


def _resolutions(cursor, query, held: set[str], others: list[_Other],
                 positions: dict[int, list[int]]) -> dict[int, Resolution]:
    """The comparisons that resolve, from their counted labels (of allowed sources, no skips, not discarded, not
    held back; rankings and ratings that do not fit the comparison count for nothing)."""
    cursor.execute((f"SELECT comparison_id, source, annotator, choice, CAST(ranking AS TEXT), CAST(ratings AS TEXT) "
                    f"FROM label WHERE comparison_id IN ({_ids(c.id for c in others)}) AND source IN "
                    f"({sql_names(query.sources)}) AND choice != 'skip' AND discarded_at IS NULL "
                    f"{not_held_sql(held)}").format())
    kinds = {c.id: c.kind for c in others}
    votes: dict[int, list[Vote]] = {}
    for cid, source, annotator, choice, ranking, ratings in cursor.fetchall():
        counted = vote(kinds[cid], len(positions[cid]), source, annotator, choice, _json(ranking), _json(ratings))
        if counted is not None:
            votes.setdefault(cid, []).append(counted)
    out = {}
    for c in others:
        if not positions[c.id]:
            continue
        resolution = resolve(c.kind, len(positions[c.id]), c.overlap, votes.get(c.id, ()), query.sources,
                             query.derivation)
        if resolution is not None:
            out[c.id] = resolution
    return out


def _own_rows(query, c: _Other, ids: list[int], resolution: Resolution) -> list[_Made]:
    """A ranking's or rating's pairs and ties, or (unpaired) a thumbs comparison's own row, that pass the filters."""
    n = resolution.labels
    return [_Made(c, ids[d.first], None if d.second is None else ids[d.second], d.outcome, resolution.source,
                  d.agreeing / n, n, resolution.annotators, c.round)
            for d in resolution.rows if query.keeps(d.outcome, d.agreeing, n, c.round)]


def _thumbs_texts(cursor, others: list[_Other], positions: dict[int, list[int]]) -> dict[int, str]:
    """Each thumbs comparison's response text, stripped: two thumbs on the same text (two identical samples, or
    imports) make no pair, which would have chosen equal to rejected."""
    ids = {c.id: positions[c.id][0] for c in others if c.kind == "thumbs" and positions[c.id]}
    if not ids:
        return {}
    cursor.execute(f"SELECT id, text FROM response WHERE id IN ({_ids(ids.values())})")
    texts = {rid: text.strip() for rid, text in cursor.fetchall()}
    return {cid: texts[rid] for cid, rid in ids.items()}


def _thumbs_pairs(query, c: _Other, earlier: list[_Other], positions: dict[int, list[int]],
                  resolved: dict[int, Resolution], lo: int) -> list[_Made]:
    """The pairs `c` (a resolved thumbs comparison) makes with the earlier resolved thumbs comparisons of its
    prompt that judged the other way: up over down, each under `c`, only as strong as its weaker half (the
    later source, the lower agreement, the earlier round); none when `c` lies before the batch."""
    if c.id < lo:
        return []
    mine = resolved[c.id]
    made = []
    for other in earlier:
        theirs = resolved[other.id]
        if theirs.rows[0].outcome == mine.rows[0].outcome or positions[other.id][0] == positions[c.id][0]:
            continue
        (up, up_res), (down, down_res) = sorted([(c, mine), (other, theirs)],
                                                key=lambda pair: pair[1].rows[0].outcome != "up")
        round_ = min(up.round, down.round)
        if not all(query.keeps("a", r.rows[0].agreeing, r.labels, round_) for r in (up_res, down_res)):
            continue
        agreement = min(r.rows[0].agreeing / r.labels for r in (up_res, down_res))
        made.append(_Made(c, positions[up.id][0], positions[down.id][0], "a",
                          weaker(up_res.source, down_res.source, query.sources), agreement,
                          up_res.labels + down_res.labels, sorted(up_res.annotators + down_res.annotators), round_))
    return made


def _responses(cursor, ids: set[int | None]) -> dict[int, tuple[str, str | None]]:
    """Response id -> (text, model version name)."""
    ids.discard(None)
    if not ids:
        return {}
    cursor.execute(f"SELECT r.id, r.text, mv.name FROM response r LEFT JOIN modelversion mv "
                   f"ON mv.id = r.model_version_id WHERE r.id IN ({_ids(ids)})")
    return {rid: (text, version) for rid, text, version in cursor.fetchall()}


def _row(m: _Made, responses: dict[int, tuple[str, str | None]], metadata: bool) -> tuple:
    """A _Made as a tuple in ResolvedRow's field order."""
    c = m.comparison
    chosen, chosen_version = responses.get(m.chosen_id, (None, None))
    rejected, rejected_version = ("", None) if m.rejected_id is None else responses.get(m.rejected_id, (None, None))
    meta = (m.annotators, chosen_version, rejected_version, m.round) if metadata else (None, None, None, None)
    return (c.id, c.prompt_json, chosen, rejected, m.outcome, m.source, m.agreement, m.labels, *meta,
            c.tools_json, c.parallel_tool_calls, c.kind, m.chosen_id, m.rejected_id)


def _ids(ids) -> str:
    return ", ".join(str(int(i)) for i in ids)


def _json(text: str | None):
    """A JSON column read as text (CAST: the same on SQLite and PostgreSQL); unreadable JSON counts as none."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
