"""Resolution of the comparisons that are no pair: the labels of a ranking, rating or thumbs comparison aggregated
per source, and the pairs (and ties) they yield for training and export. Pure functions over plain values; data/
pairs.py reads the labels and turns what these return into rows."""

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from data.rules import THUMBS

RANKING_PAIRS = ("all", "best_vs_each", "best_vs_worst")
DERIVED_KINDS = ("ranking", "rating", "thumbs")
LABEL_CHOICE = {"ranking": "ranked", "rating": "rated"}  # thumbs: rules.THUMBS
# Overall scores are means of small integers: a difference that is the gap up to rounding reaches the gap.
GAP_SLACK = 1e-9


@dataclass(frozen=True)
class Derivation:
    """Which pairs rankings and ratings yield (labelling.ranking_pairs and labelling.rating_gap; same defaults).

    ranking_pairs: 'all' (every response over each one ranked below it), 'best_vs_each' (the best, several when
    tied, over each one ranked below it) or 'best_vs_worst' (each best over each worst; none when all are tied).
    rating_gap: how much higher one response's overall score must be than another's for the pair."""
    ranking_pairs: str = "all"
    rating_gap: float = 1.0

    def __post_init__(self):
        if self.ranking_pairs not in RANKING_PAIRS:
            raise ValueError(f"ranking_pairs must be one of {', '.join(RANKING_PAIRS)}, not {self.ranking_pairs!r}")
        gap = self.rating_gap
        if isinstance(gap, bool) or not isinstance(gap, int | float) or not math.isfinite(gap) or gap <= 0:
            raise ValueError(f"rating_gap must be a number above 0, not {gap!r}")

    @classmethod
    def of(cls, labelling) -> "Derivation":
        """The derivation a LabellingSettings section asks for."""
        return cls(labelling.ranking_pairs, float(labelling.rating_gap))


DEFAULT_DERIVATION = Derivation()


class Vote(NamedTuple):
    """One counted label of a non-pair comparison. `merits`: per position, higher is better (a ranking's ranks
    negated, a rating's overall scores; None where a rating left a position unscored); None for thumbs."""
    source: str
    annotator: str
    choice: str
    merits: tuple[float | None, ...] | None


class Derived(NamedTuple):
    """One row a resolved comparison yields: `first` over `second` (positions) with outcome 'a', or the two tied
    ('tie'); a thumbs comparison's 'up' or 'down' (first = 0, second = None). `agreeing`: of the resolving
    source's labels, how many say the same of these two (or give the thumbs outcome)."""
    first: int
    second: int | None
    outcome: str
    agreeing: int


class Resolution(NamedTuple):
    """A resolved comparison: the source that resolved it, its counted labels' annotators (sorted), and its rows."""
    source: str
    annotators: list[str]
    rows: list[Derived]

    @property
    def labels(self) -> int:
        return len(self.annotators)


# -- one label -------------------------------------------------------------------------------------------------
def vote(kind: str, k: int, source: str, annotator: str, choice: str, ranking: Any = None,
         ratings: Any = None) -> Vote | None:
    """The label as a Vote on a comparison of `kind` with `k` responses, or None when it does not count there (a
    skip, a choice of another kind, a ranking or ratings that do not fit the k responses)."""
    if kind == "thumbs":
        return Vote(source, annotator, choice, None) if choice in THUMBS else None
    if choice != LABEL_CHOICE.get(kind):
        return None
    merits = ranking_merits(ranking, k) if kind == "ranking" else rating_merits(ratings, k)
    return None if merits is None else Vote(source, annotator, choice, merits)


def ranking_merits(ranking: Any, k: int) -> tuple[float, ...] | None:
    """A ranking (the rank of each position, 1 the best, equal ranks tied) as merits: the ranks negated."""
    if not isinstance(ranking, list) or len(ranking) != k:
        return None
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranking):
        return None
    return tuple(-float(r) for r in ranking)


def rating_merits(ratings: Any, k: int) -> tuple[float | None, ...] | None:
    """Ratings {criterion: [score of each position]} as each position's overall score: the mean over the criteria
    that scored it (None where none did). None when the ratings do not fit the k responses or score nothing."""
    if not isinstance(ratings, Mapping) or not ratings:
        return None
    if not all(isinstance(scores, list) and len(scores) == k for scores in ratings.values()):
        return None
    overall = tuple(_mean([s[i] for s in ratings.values() if _is_score(s[i])]) for i in range(k))
    return None if all(m is None for m in overall) else overall


def _is_score(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# -- aggregation and derived pairs ------------------------------------------------------------------------------
def mean_merits(votes: Iterable[Vote], k: int) -> list[float | None]:
    """Per position, the mean of the votes' merits (of those that scored it): for rankings minus the mean rank."""
    merits = [v.merits for v in votes]
    return [_mean([m[i] for m in merits if m[i] is not None]) for i in range(k)]


def ranking_pairs(merits: Sequence[float], how: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(ordered, tied) position pairs of aggregated ranking merits, as `how` compares them: 'all' every pair,
    'best_vs_each' each best with each other, 'best_vs_worst' each best with each worst. An ordered pair is
    (better, worse); a tied one (lower position, higher position)."""
    k = len(merits)
    best, worst = max(merits), min(merits)
    if how == "all":
        compared = [(i, j) for i in range(k) for j in range(i + 1, k)]
    elif how == "best_vs_each":
        compared = [(i, j) for i in range(k) for j in range(i + 1, k) if best in (merits[i], merits[j])]
    else:
        compared = [(i, j) for i in range(k) for j in range(i + 1, k)
                    if {merits[i], merits[j]} == {best, worst}]
    return _split(compared, merits, 0.0)


def rating_pairs(merits: Sequence[float | None], gap: float) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(ordered, tied) position pairs of aggregated overall scores: ordered when one is at least `gap` above the
    other, tied otherwise; positions nobody scored pair with nothing."""
    k = len(merits)
    compared = [(i, j) for i in range(k) for j in range(i + 1, k) if None not in (merits[i], merits[j])]
    return _split(compared, merits, gap - GAP_SLACK)


def _split(compared: list[tuple[int, int]], merits: Sequence[float | None], gap: float):
    """`gap` 0: any difference orders a pair (rankings); above 0: a difference of at least `gap` does."""
    def over(difference: float) -> bool:
        return difference >= gap if gap > 0 else difference > 0

    ordered, tied = [], []
    for i, j in compared:
        if over(merits[i] - merits[j]):
            ordered.append((i, j))
        elif over(merits[j] - merits[i]):
            ordered.append((j, i))
        else:
            tied.append((i, j))
    return sorted(ordered), tied


def agreeing(votes: Sequence[Vote], first: int, second: int, tied: bool) -> int:
    """How many votes order `first` strictly above `second` (or, `tied`, score the two equally)."""
    def says(m) -> bool:
        if m is None or m[first] is None or m[second] is None:
            return False
        return m[first] == m[second] if tied else m[first] > m[second]
    return sum(says(v.merits) for v in votes)


def derive(kind: str, votes: Sequence[Vote], k: int, derivation: Derivation) -> list[Derived]:
    """The rows one source's votes on a ranking or rating comparison yield: ordered pairs (outcome 'a'), then ties."""
    merits = mean_merits(votes, k)
    if kind == "ranking":
        ordered, tied = ranking_pairs(merits, derivation.ranking_pairs)
    else:
        ordered, tied = rating_pairs(merits, derivation.rating_gap)
    return ([Derived(i, j, "a", agreeing(votes, i, j, False)) for i, j in ordered]
            + [Derived(i, j, "tie", agreeing(votes, i, j, True)) for i, j in tied])


def thumbs_outcome(votes: Sequence[Vote]) -> tuple[str, int] | None:
    """The strict-majority thumb ('up' or 'down') and its count, or None (no votes, or no strict majority)."""
    counted = Counter(v.choice for v in votes)
    return next(((c, n) for c, n in counted.items() if 2 * n > len(votes)), None)


# -- resolution ---------------------------------------------------------------------------------------------------
def resolve(kind: str, k: int, overlap: int, votes: Iterable[Vote], sources: Sequence[str],
            derivation: Derivation = DEFAULT_DERIVATION) -> Resolution | None:
    """The comparison resolved as data/pairs.py resolves a pair: the first of `sources` (in precedence order) with
    enough counted votes (human: the overlap; any other source: one) speaks; a thumbs comparison also needs a strict
    majority of that source. A ranking or rating that resolved may still yield no pair (all tied). None: no source
    resolves it."""
    by_source: dict[str, list[Vote]] = {}
    for v in votes:
        by_source.setdefault(v.source, []).append(v)
    for source in sources:
        mine = by_source.get(source, [])
        if not mine or len(mine) < (overlap if source == "human" else 1):
            continue
        annotators = sorted(v.annotator for v in mine)
        if kind != "thumbs":
            return Resolution(source, annotators, derive(kind, mine, k, derivation))
        outcome = thumbs_outcome(mine)
        if outcome is not None:
            return Resolution(source, annotators, [Derived(0, None, outcome[0], outcome[1])])
    return None


def weaker(first: str, second: str, sources: Sequence[str]) -> str:
    """Of two sources, the one later in precedence order: a pair made of two resolutions is only as strong as the
    weaker."""
    return max(first, second, key=sources.index)
