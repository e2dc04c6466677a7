"""Which comparisons are resolved: labels aggregated in SQL into pairs (and, on request, ties), streamed
in comparison id order in constant memory. Export and DPO training both read labelled data through here.
A gold question resolves from its known answer alone; labels of annotators held back by their gold accuracy
(data/quality.py) are left out until an operator releases them. Rankings, ratings and thumbs resolve in Python
(data/derived.py), batch by batch beside the pairs, into the pairs they yield."""

import math
from collections.abc import Collection, Iterator, Sequence
from typing import NamedTuple

from data.derived import DEFAULT_DERIVATION, Derivation
from data.derived_rows import derived_rows, other_kinds_span
from data.quality import held_annotators_from_cursor, not_held_sql
from data.rules import ADJUDICATION, GOLD_RESOLVES_WITH, GOLD_SOURCE, SOURCES, sql_names
from data.rules import COUNTED_CHOICES as CHOICES

PAIR_OUTCOMES = ("a", "b")
DEFAULT_BATCH = 5000


class ResolvedRow(NamedTuple):
    """One resolved comparison, or one pair a ranking, rating or thumbs comparison yields (several rows may share a
    comparison_id then). For a tie-like outcome `chosen`/`rejected` hold response A/B's text (of a ranking or
    rating: the two tied responses, the lower position first); for a thumbs row ('up'/'down', with unpaired=True)
    `chosen` is its response and `rejected` ''."""

    comparison_id: int
    prompt_json: str  # the stored messages JSON, unparsed: exports splice it as is
    chosen: str
    rejected: str
    outcome: str  # a|b|tie|both_bad; a pair derived from a ranking, rating or two thumbs is 'a'; up|down
    source: str  # adjudication|human|import|judge, or gold (a gold question's known answer: agreement 1, labels 1)
    agreement: float  # the majority choice's count / labels counted
    labels: int  # non-skip labels of `source`
    annotators: list[str] | None = None  # this and the rest only with metadata=True
    chosen_version: str | None = None  # model version names (response A/B for ties); None when imported
    rejected_version: str | None = None
    round: int | None = None  # the comparison's model version round; 0 without a version
    tools_json: str | None = None  # the prompt's stored tool definitions (JSON text), None when it has none
    parallel_tool_calls: bool | None = None  # the prompt's; stored as 0/1 on SQLite
    kind: str = "pair"  # the comparison's kind (rules.KINDS); a pair of two thumbs comparisons is 'thumbs'
    chosen_id: int | None = None  # the response ids of chosen and rejected (A/B for ties; rejected None: thumbs)
    rejected_id: int | None = None

    @property
    def is_pair(self) -> bool:
        return self.outcome in PAIR_OUTCOMES


def iter_resolved(store, *, sources: Sequence[str] = ("human", "import"), since_round: int | None = None,
                  min_agreement: float | None = None, include_ties: bool = False, metadata: bool = False,
                  batch_size: int = DEFAULT_BATCH, ids: Collection[int] | None = None,
                  derivation: Derivation | None = None, unpaired: bool = False) -> Iterator[ResolvedRow]:
    """Resolved comparisons in id order, one row each (a ranking or rating: one per pair it yields), read batch
    by batch in one read transaction (which ends when the iterator is exhausted or closed). `ids`: only these
    comparisons (the batches then cover only the id spans they lie in: a round reading back its pairs does not
    resolve the whole database again).

    `sources`: the label sources that may resolve a comparison, in rules.SOURCES' precedence order; adjudication
    labels speak first whenever any source is allowed, and gold questions resolve (source 'gold') whenever
    'human' or 'import' is allowed.

    `derivation`: which pairs rankings and ratings yield (with `include_ties`, also the ties among the responses
    it compares); by default the store's `derivation`, as the hold-back follows its `gold_policy`.

    Thumbs: two resolved thumbs comparisons of one prompt, one 'up' and one 'down', yield the pair up over down
    (under the larger comparison id); with `unpaired`, each thumbs comparison is instead one row of its own,
    outcome 'up' or 'down', and yields no pair."""
    make = ResolvedRow._make
    for batch in iter_resolved_batches(store, sources=sources, since_round=since_round,
                                       min_agreement=min_agreement, include_ties=include_ties,
                                       metadata=metadata, batch_size=batch_size, ids=ids, derivation=derivation,
                                       unpaired=unpaired):
        yield from map(make, batch)


def iter_resolved_batches(store, *, sources: Sequence[str] = ("human", "import"), since_round: int | None = None,
                          min_agreement: float | None = None, include_ties: bool = False,
                          metadata: bool = False, batch_size: int = DEFAULT_BATCH,
                          ids: Collection[int] | None = None, derivation: Derivation | None = None,
                          unpaired: bool = False) -> Iterator[list[tuple]]:
    """`iter_resolved`'s rows a list at a time, as plain tuples in `ResolvedRow` field order (the fast path
    for exporters: no object per row). Arguments are checked here, before the first batch is asked for."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    query = _Query(_check_sources(sources), since_round, _check_agreement(min_agreement), include_ties, metadata,
                   _check_derivation(store, derivation), bool(unpaired))
    return _batches(store, query, batch_size, None if ids is None else frozenset(ids))


class _Query(NamedTuple):
    """The checked filters of one resolution; `sql(held)` is its SQL once the held annotators are known."""

    sources: list[str]
    since_round: int | None
    min_agreement: float | None
    include_ties: bool
    metadata: bool
    derivation: Derivation | None = None
    unpaired: bool = False

    @property
    def gold(self) -> bool:
        return any(s in GOLD_RESOLVES_WITH for s in self.sources)

    def sql(self, held: set[str]) -> str:
        return _resolved_sql(self.sources, self.since_round, self.min_agreement, self.include_ties, self.metadata,
                             self.gold, held)

    def keeps(self, outcome: str, agreeing: int, labels: int, round_: int) -> bool:
        """The filters as the SQL applies them to pairs, for a row resolved in Python."""
        return ((outcome != "tie" or self.include_ties)
                and (self.min_agreement is None or agreeing >= self.min_agreement * labels)
                and (self.since_round is None or round_ >= self.since_round))


def _batches(store, query: _Query, batch_size: int, ids: frozenset[int] | None) -> Iterator[list[tuple]]:
    """One query per range of `batch_size` comparison ids: memory stays flat on any database, with no
    server-side cursor, and a raw DBAPI cursor makes no object per row. Ranges that hold comparisons of other
    kinds resolve those too, and merge their rows in."""
    metadata = query.metadata
    with store.engine.connect() as conn:
        conn.begin()  # one snapshot for every batch
        cursor = conn.connection.cursor()
        try:
            held = _held(store, cursor)
            sql = query.sql(held)
            ranges = _id_ranges(cursor, batch_size, query.gold) if ids is None else _spans(ids, batch_size)
            others = other_kinds_span(cursor)
            for lo, hi in ranges:
                cursor.execute(sql.format(lo=lo, hi=hi))
                batch = cursor.fetchall()
                if ids is not None:
                    batch = [row for row in batch if row[0] in ids]
                # Sorted here, not in SQL: a batch comes out (nearly) in order, so this is almost free,
                # while ORDER BY would copy every row and its texts through a sorter.
                batch.sort(key=_first)
                if batch and metadata:
                    batch = _with_annotators(cursor, batch, lo, hi, held)
                if others[0] < hi and lo < others[1]:
                    batch = _merged(batch, derived_rows(cursor, query, lo, hi, held), ids)
                if batch:
                    yield batch
        finally:
            cursor.close()


def _merged(batch: list[tuple], derived: list[tuple], ids: frozenset[int] | None) -> list[tuple]:
    if ids is not None:
        derived = [row for row in derived if row[0] in ids]
    # Stable: a comparison's rows keep their order; a comparison has one kind, so no id is in both lists.
    return sorted(batch + derived, key=_first) if derived else batch


def count_resolved(store, *, sources: Sequence[str] = ("human", "import"), since_round: int | None = None,
                   min_agreement: float | None = None, include_ties: bool = False,
                   derivation: Derivation | None = None, unpaired: bool = False) -> int:
    """How many rows `iter_resolved` would yield with the same filters."""
    query = _Query(_check_sources(sources), since_round, _check_agreement(min_agreement), include_ties, False,
                   _check_derivation(store, derivation), bool(unpaired))
    with store.engine.connect() as conn:
        cursor = conn.connection.cursor()
        try:
            held = _held(store, cursor)
            sql = query.sql(held)
            lo, hi = _id_span(cursor, query.gold)
            cursor.execute(f"SELECT COUNT(*) FROM ({sql.format(lo=lo, hi=hi)}) resolved")
            pairs = cursor.fetchone()[0]
            lo, hi = other_kinds_span(cursor)
            return pairs + sum(len(derived_rows(cursor, query, start, min(start + DEFAULT_BATCH, hi), held,
                                                texts=False))
                               for start in range(lo, hi, DEFAULT_BATCH))
        finally:
            cursor.close()


def _check_sources(sources: Sequence[str]) -> list[str]:
    if isinstance(sources, str):
        sources = [sources]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        raise ValueError(f"unknown label source(s) {unknown or list(sources)}; allowed: {', '.join(SOURCES)}")
    # Checked against SOURCES, so the SQL below can inline the names. A reviewer's decision is always heard.
    return [s for s in SOURCES if s in sources or s == ADJUDICATION]


def _check_derivation(store, derivation: Derivation | None) -> Derivation:
    """The derivation asked for, else the store's (labelling.ranking_pairs and rating_gap of the app that opened
    it, or of the round's config; the defaults on a bare store)."""
    if derivation is None:
        derivation = getattr(store, "derivation", None) or DEFAULT_DERIVATION
    if not isinstance(derivation, Derivation):
        raise ValueError(f"derivation must be a data.derived.Derivation, not {derivation!r}")
    return derivation


def _held(store, cursor) -> set[str]:
    """Who is held back now, under the store's gold policy (the labelling.gold_* settings of the app that opened
    it), read in the resolution's own snapshot."""
    return held_annotators_from_cursor(cursor, store.gold_policy)


def _check_agreement(min_agreement: float | None) -> float | None:
    if min_agreement is None:
        return None
    value = float(min_agreement)
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"min_agreement must be between 0 and 1, not {min_agreement!r}")
    return value


def _id_span(cursor, gold: bool) -> tuple[int, int]:
    """The half-open range of comparison ids that have labels, or with `gold` are gold questions ((0, 0) when
    there are none): a gold question resolves with no label at all."""
    cursor.execute("SELECT MIN(comparison_id), MAX(comparison_id) FROM label")
    spans = [cursor.fetchone()]
    if gold:
        cursor.execute("SELECT MIN(id), MAX(id) FROM comparison WHERE gold_choice IS NOT NULL")
        spans.append(cursor.fetchone())
    spans = [(lo, hi) for lo, hi in spans if lo is not None]
    return (min(lo for lo, _ in spans), max(hi for _, hi in spans) + 1) if spans else (0, 0)


def _first(row: tuple) -> int:
    return row[0]


def _id_ranges(cursor, batch_size: int, gold: bool) -> Iterator[tuple[int, int]]:
    lo, hi = _id_span(cursor, gold)
    for start in range(lo, hi, batch_size):
        yield start, min(start + batch_size, hi)


def _spans(ids: frozenset[int], batch_size: int) -> Iterator[tuple[int, int]]:
    """Half-open id ranges, each at most `batch_size` wide, that together cover `ids` and little else."""
    ordered = sorted(ids)
    start = 0
    while start < len(ordered):
        lo = ordered[start]
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] < lo + batch_size:
            end += 1
        yield lo, ordered[end] + 1
        start = end + 1


# -- the SQL ----------------------------------------------------------------------------------------------
# Portable SQL (COUNT(*) FILTER needs SQLite >= 3.30 or PostgreSQL) with every value checked and inlined,
# so raw DBAPI cursors run it under any paramstyle. `{lo}`/`{hi}` bound the comparison ids of one batch.

def _resolved_sql(sources: list[str], since_round: int | None, min_agreement: float | None,
                  include_ties: bool, metadata: bool, gold: bool, held: set[str]) -> str:
    versions = metadata or since_round is not None
    gold_rows = f"\nUNION ALL {_gold_sql(versions)}" if gold else ""
    return f"""WITH agg AS ({_aggregate_sql(sources, held)}),
res AS ({_pick_sql(sources, versions)}{gold_rows})
SELECT {_select_sql(metadata)}
FROM res
JOIN prompt p ON p.id = res.prompt_id
JOIN response ra ON ra.id = res.response_a_id
JOIN response rb ON rb.id = res.response_b_id
{_response_versions_sql() if metadata else ""}
WHERE {_filters_sql(since_round, min_agreement, include_ties)}"""


def _count(source: str, choice: str | None = None) -> str:
    where = f"source = '{source}'" + (f" AND choice = '{choice}'" if choice else "")
    return f"COUNT(*) FILTER (WHERE {where})"


def _aggregate_sql(sources: list[str], held: set[str]) -> str:
    """Per comparison and allowed source: labels counted, the strict-majority choice (NULL if none) and its
    count. Strict majority (more than half) means at most one choice can have it. Held labels are not counted."""
    cols = []
    for s in sources:
        majority = [(f"2 * {_count(s, c)} > {_count(s)}", c) for c in CHOICES]
        cols.append(f"{_count(s)} AS {s}_n")
        cols.append("CASE " + " ".join(f"WHEN {cond} THEN '{c}'" for cond, c in majority) + f" END AS {s}_out")
        cols.append("CASE " + " ".join(f"WHEN {cond} THEN {_count(s, c)}" for cond, c in majority) + f" END AS {s}_top")
    return (f"SELECT comparison_id AS cid, {', '.join(cols)} FROM label "
            f"WHERE source IN ({sql_names(sources)}) AND choice IN ({sql_names(CHOICES)}) AND discarded_at IS NULL "
            f"{not_held_sql(held)}AND comparison_id >= {{lo}} AND comparison_id < {{hi}} GROUP BY comparison_id")






def _gold_sql(versions: bool) -> str:
    """Gold questions, resolved from their known answer alone: one row each, agreement 1 from 1 'label'. Only a
    pair can be one."""
    version_join = "LEFT JOIN modelversion mv ON mv.id = c.model_version_id" if versions else ""
    version_round = "COALESCE(mv.round, 0)" if versions else "NULL"
    return (f"SELECT c.id, c.prompt_id, c.response_a_id, c.response_b_id, {version_round}, '{GOLD_SOURCE}', "
            f"c.gold_choice, 1, 1 FROM comparison c {version_join} WHERE c.gold_choice IS NOT NULL "
            "AND c.id >= {lo} AND c.id < {hi} AND c.status IN ('open', 'done') AND c.discarded_at IS NULL "
            "AND c.kind = 'pair'")


def _pick_sql(sources: list[str], versions: bool) -> str:
    """Per pair that is no gold question: the first source in precedence order that resolves (a majority and
    enough labels: the overlap's for human labels, one for the others). Other kinds resolve in Python."""
    resolves = {s: f"agg.{s}_out IS NOT NULL AND agg.{s}_n >= {'c.overlap' if s == 'human' else 1}"
                for s in sources}

    def pick(column) -> str:
        return "CASE " + " ".join(f"WHEN {resolves[s]} THEN {column(s)}" for s in sources) + " END"

    version_join = "LEFT JOIN modelversion mv ON mv.id = c.model_version_id" if versions else ""
    version_round = "COALESCE(mv.round, 0)" if versions else "NULL"
    return (f"SELECT agg.cid, c.prompt_id, c.response_a_id, c.response_b_id, {version_round} AS round, "
            f"{pick(lambda s: repr(s))} AS src, {pick(lambda s: f'agg.{s}_out')} AS outcome, "
            f"{pick(lambda s: f'agg.{s}_n')} AS n, {pick(lambda s: f'agg.{s}_top')} AS top "
            f"FROM agg JOIN comparison c ON c.id = agg.cid {version_join} "
            "WHERE c.status IN ('open', 'done') AND c.discarded_at IS NULL AND c.gold_choice IS NULL "
            "AND c.kind = 'pair'")


def _select_sql(metadata: bool) -> str:
    swap = "CASE WHEN res.outcome = 'b' THEN {b} ELSE {a} END"  # a 'b' majority makes response B chosen
    cols = [
        "res.cid", "CAST(p.messages AS TEXT)",
        swap.format(a="ra.text", b="rb.text"), swap.format(a="rb.text", b="ra.text"),
        "res.outcome", "res.src", "CAST(res.top AS DOUBLE PRECISION) / res.n", "res.n", "NULL",
    ]
    if metadata:
        cols += [swap.format(a="va.name", b="vb.name"), swap.format(a="vb.name", b="va.name"), "res.round"]
    else:
        cols += ["NULL", "NULL", "NULL"]
    # A JSON column may hold the JSON text 'null' rather than SQL NULL for a prompt without tools.
    cols += ["NULLIF(CAST(p.tools AS TEXT), 'null')", "p.parallel_tool_calls", "'pair'",
             swap.format(a="ra.id", b="rb.id"), swap.format(a="rb.id", b="ra.id")]
    return ", ".join(cols)


def _response_versions_sql() -> str:
    return ("LEFT JOIN modelversion va ON va.id = ra.model_version_id "
            "LEFT JOIN modelversion vb ON vb.id = rb.model_version_id")


def _filters_sql(since_round: int | None, min_agreement: float | None, include_ties: bool) -> str:
    # Discarded labels and comparisons are left out above; a discarded prompt takes all its comparisons out here.
    where = ["res.outcome IN ('a', 'b')" if not include_ties else "res.outcome IS NOT NULL", "p.discarded_at IS NULL"]
    if since_round is not None:
        where.append(f"res.round >= {int(since_round)}")
    if min_agreement is not None:
        where.append(f"res.top >= {min_agreement!r} * res.n")
    return " AND ".join(where)




def _with_annotators(cursor, batch: list[tuple], lo: int, hi: int, held: set[str]) -> list[tuple]:
    """Fill in who gave the counted labels of each row's source, with one query per batch (a gold row: nobody)."""
    cursor.execute((f"SELECT comparison_id, source, annotator FROM label WHERE comparison_id >= {lo} "
                    f"AND comparison_id < {hi} AND choice IN ({sql_names(CHOICES)}) AND discarded_at IS NULL "
                    f"{not_held_sql(held)}ORDER BY comparison_id, annotator").format())
    found: dict[tuple[int, str], list[str]] = {}
    for cid, source, annotator in cursor.fetchall():
        found.setdefault((cid, source), []).append(annotator)
    # Positions as in ResolvedRow: 0 comparison_id, 5 source, 8 annotators.
    return [(*r[:8], found.get((r[0], r[5]), []), *r[9:]) for r in batch]
