"""Agreement: judge-human (on comparisons labelled by both a judge and humans, how often they agree) and
between people (on comparisons two or more people labelled: agreement with the others' majority, Cohen's kappa
with each other person, Krippendorff's alpha overall, per round and without each person).

Per judge (label annotator 'judge:<name>'): raw agreement and Cohen's kappa against the humans' majority choice,
overall and per round (the round of the comparison's model version; 0 without one), plus, from the judge's runs,
the both-order consistency rate and the abstain rate. A judge can only say a, b or tie, so against judges a human
'both_bad' counts as 'tie' (no preference; as its own category every both_bad would be a forced disagreement).

Between people the categories are a, b, tie and both_bad, each its own category: a tie and a both-bad are answers,
not noise. Skips, discarded labels, judges, imports and adjudications are not people's answers and never count;
gold questions (Comparison.gold_choice set) measure people against a known answer, not against each other, and
never count either. Labels of an annotator held back by the gold-accuracy hold do count: they are measurements of
how that person labels even while they do not resolve pairs.

Only pairs count toward the above. Rankings (and ratings, as the order their overall scores give) are compared with
a rank correlation instead: Kendall's tau-b between two people's orders of one comparison's responses (ties as
tau-b treats them), averaged over the comparisons both ordered (rank_agreement; people_agreement's `rankings` and
`ratings`)."""

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from itertools import combinations
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from data.derived import LABEL_CHOICE, ranking_merits, rating_merits
from data.models import Comparison, ComparisonResponse, Label, ModelVersion
from data.rules import persons_label

CATEGORIES = ("a", "b", "tie")
PEOPLE_CATEGORIES = ("a", "b", "tie", "both_bad")
_AS_CATEGORY = {"a": "a", "b": "b", "tie": "tie", "both_bad": "tie"}


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters over (rater 1, rater 2) choices: (p_o - p_e) / (1 - p_e).

    None when undefined: no pairs, or chance agreement is 1 (both raters always gave the same one category)."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(x == y for x, y in pairs) / n
    first, second = Counter(x for x, _ in pairs), Counter(y for _, y in pairs)
    expected = sum(first[c] * second[c] for c in first) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def raw_agreement(pairs: Sequence[tuple[str, str]]) -> float | None:
    return sum(x == y for x, y in pairs) / len(pairs) if pairs else None


def krippendorff_alpha(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal values, 1 - D_o / D_e (K. Krippendorff, "Computing Krippendorff's
    Alpha-Reliability", 2011). Each unit is the list of values its coders gave, any number of coders, missing values
    simply absent; a unit with fewer than two values is not pairable and drops out. From the coincidences within
    units: alpha = 1 - (n - 1) * sum_u (m_u^2 - sum_c n_uc^2) / (m_u - 1) / (n^2 - sum_c n_c^2), n the pairable values.

    None when undefined: no pairable unit, or every pairable value the same category (no expected disagreement)."""
    observed, totals = 0.0, Counter()
    for unit in units:
        disagreement, counts = _coincidences(unit)
        observed += disagreement
        totals.update(counts)
    return _alpha(observed, totals)


def _coincidences(unit: Sequence[Hashable]) -> tuple[float, Counter]:
    """One unit's off-diagonal coincidences (its observed disagreement, unnormalised) and its values' counts; nothing
    for a unit that is not pairable."""
    counts = Counter(unit)
    m = sum(counts.values())
    if m < 2:
        return 0.0, Counter()
    return (m * m - sum(k * k for k in counts.values())) / (m - 1), counts


def _alpha(observed: float, totals: Counter) -> float | None:
    n = sum(totals.values())
    expected = n * n - sum(k * k for k in totals.values())
    return 1.0 - (n - 1) * observed / expected if n and expected else None


def strict_majority(values: Iterable[Hashable]) -> Hashable | None:
    """The value more than half of `values` are, or None (none given, or no strict majority)."""
    counted = Counter(values)
    total = sum(counted.values())
    return next((value for value, k in counted.items() if 2 * k > total), None)


def human_majority(choices: Iterable[str]) -> str | None:
    """The strict-majority category of human choices against a judge (both_bad as tie, skips ignored), or None."""
    return strict_majority(_AS_CATEGORY[c] for c in choices if c in _AS_CATEGORY)


def _summary(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {"compared": len(pairs), "agreement": raw_agreement(pairs), "kappa": cohen_kappa(pairs)}


def judge_agreement(store) -> dict[str, dict[str, Any]]:
    """Per judge annotator: compared, agreement, kappa, by_round {round: {compared, agreement, kappa}},
    judge labels, and from its runs judged, consistency_rate (both orders agreed, of the verdicts that were not
    abstains) and abstain_rate. Judges with runs or labels but no human overlap appear with `compared` 0. Gold
    questions are left out throughout, `labels` too."""
    judged = select(Label.comparison_id).where(Label.source == "judge")
    q = (select(Label.comparison_id, Label.source, Label.annotator, Label.choice, ModelVersion.round)
         .join(Comparison, col(Comparison.id) == Label.comparison_id)
         .join(ModelVersion, col(ModelVersion.id) == Comparison.model_version_id, isouter=True)
         .where(col(Label.source).in_(("human", "judge")), col(Label.comparison_id).in_(judged),
                col(Label.discarded_at).is_(None), col(Comparison.gold_choice).is_(None),
                Comparison.kind == "pair"))
    humans: dict[int, list[str]] = defaultdict(list)
    judges: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    with store.read() as s:
        for cid, source, annotator, choice, round_ in s.exec(q):
            if source == "human":
                humans[cid].append(choice)
            elif choice in _AS_CATEGORY:
                judges[annotator].append((cid, _AS_CATEGORY[choice], round_ or 0))
    reference = {cid: human_majority(choices) for cid, choices in humans.items()}
    totals = store.judge_runs.totals()
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(judges) | set(totals)):
        pairs, by_round = [], defaultdict(list)
        for cid, choice, round_ in judges.get(name, []):
            if reference.get(cid) is not None:
                pairs.append((choice, reference[cid]))
                by_round[round_].append((choice, reference[cid]))
        runs = totals.get(name, {})
        answered = runs.get("consistent", 0) + runs.get("flipped", 0)
        out[name] = {**_summary(pairs), "labels": len(judges.get(name, [])),
                     "by_round": {r: _summary(p) for r, p in sorted(by_round.items())},
                     "judged": runs.get("judged", 0),
                     "consistency_rate": runs["consistent"] / answered if answered else None,
                     "abstain_rate": runs["abstained"] / runs["judged"] if runs.get("judged") else None}
    return out


def people_agreement(store) -> dict[str, Any]:
    """Agreement between people, over the comparisons two or more of them labelled (rules.persons_label; gold
    questions left out): `alpha` (Krippendorff's, nominal, each comparison a unit and each person's label a value),
    `units` (such comparisons), `values` (their labels), `by_round` {round: {alpha, units, values}} (the round of the
    comparison's model version, 0 without one) and `annotators` (annotator_agreement's per-person numbers), all over
    pairs only; `rankings` and `ratings`: rank_agreement's of each kind."""
    units = _people_units(store)
    rounds: dict[int, list[list[str]]] = defaultdict(list)
    for round_, labels in units:
        rounds[round_].append([choice for _, choice in labels])
    return {**_alpha_of([[choice for _, choice in labels] for _, labels in units]),
            "by_round": {r: _alpha_of(values) for r, values in sorted(rounds.items())},
            "annotators": _per_person(units), "rankings": rank_agreement(store, "ranking"),
            "ratings": rank_agreement(store, "rating")}


def annotator_agreement(store) -> dict[str, dict[str, Any]]:
    """Per person, over the comparisons that they and someone else labelled (gold questions left out):

    - `comparisons` shared; `pairs` (their label with each other person's label on the same comparison: with three
      labels on a comparison each person has two pairs there), `agreed`, `agreement` (agreed / pairs) and `kappa`
      (Cohen's over those pairs pooled: agreement beyond what both sides' choice frequencies give by chance);
    - `majority_compared`, `majority_agreed`, `majority_agreement`: leave-one-out, on each shared comparison where
      the OTHER people's labels have a strict majority (with one other person, their label), whether theirs matches
      it; comparisons without one are not counted. `by_round` {round: {compared, agreed, agreement}} of the same;
    - `kappas` {other person: {compared, agreement, kappa}}: Cohen's kappa with each person they overlap with;
    - `alpha_without`: Krippendorff's alpha of everyone else, their labels left out. Above the overall alpha, they
      lower the agreement; below it, they raise it. None when too little is left.
    Categories a, b, tie and both_bad. People whose labels nobody else shared are absent."""
    return people_agreement(store)["annotators"]


def _people_units(store) -> list[tuple[int, list[tuple[str, str]]]]:
    """(round, [(person, choice)]) of each non-gold pair two or more people labelled, in comparison order (a
    ranking's, rating's or thumbs label is no category here, whatever comparison it is on)."""
    answer = (persons_label(), col(Label.choice).in_(PEOPLE_CATEGORIES))
    shared = (select(Label.comparison_id).where(*answer).group_by(Label.comparison_id)
              .having(func.count() >= 2))
    q = (select(Label.comparison_id, Label.annotator, Label.choice, ModelVersion.round)
         .join(Comparison, col(Comparison.id) == Label.comparison_id)
         .join(ModelVersion, col(ModelVersion.id) == Comparison.model_version_id, isouter=True)
         .where(*answer, col(Label.comparison_id).in_(shared), col(Comparison.gold_choice).is_(None),
                Comparison.kind == "pair")
         .order_by(Label.comparison_id, Label.annotator))
    units: dict[int, tuple[int, list[tuple[str, str]]]] = {}
    with store.read() as s:
        for cid, annotator, choice, round_ in s.exec(q):
            units.setdefault(cid, (round_ or 0, []))[1].append((annotator, choice))
    return list(units.values())


def _alpha_of(units: list[list[str]]) -> dict[str, Any]:
    return {"alpha": krippendorff_alpha(units), "units": len(units), "values": sum(map(len, units))}


def _per_person(units: list[tuple[int, list[tuple[str, str]]]]) -> dict[str, dict[str, Any]]:
    with_other: dict[str, dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    majority: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    comparisons: Counter[str] = Counter()
    for round_, labels in units:
        for name, mine in labels:
            comparisons[name] += 1
            others = [(other, theirs) for other, theirs in labels if other != name]
            for other, theirs in others:
                with_other[name][other].append((mine, theirs))
            reference = strict_majority(theirs for _, theirs in others)
            if reference is not None:
                majority[name].append((round_, mine == reference))
    without = _alpha_without(units)
    return {name: {"comparisons": comparisons[name], **_pooled(with_other[name]), **_majority(majority[name]),
                   "kappas": {other: _summary(p) for other, p in sorted(with_other[name].items())},
                   "alpha_without": without[name]}
            for name in sorted(with_other)}


def _alpha_without(units: list[tuple[int, list[tuple[str, str]]]]) -> dict[str, float | None]:
    """Per person, alpha with their labels left out: the overall sums, less each unit they labelled as it is with
    them and plus it as it is without them (one pass over the labels, not one alpha per person)."""
    observed, totals = 0.0, Counter()
    change: dict[str, list] = defaultdict(lambda: [0.0, Counter()])
    for _, labels in units:
        whole, whole_counts = _coincidences([choice for _, choice in labels])
        observed += whole
        totals.update(whole_counts)
        for name in {who for who, _ in labels}:
            part, part_counts = _coincidences([choice for who, choice in labels if who != name])
            change[name][0] += part - whole
            change[name][1].update(part_counts)
            change[name][1].subtract(whole_counts)
    return {name: _alpha(max(observed + d_observed, 0.0), totals + d_totals)
            for name, (d_observed, d_totals) in change.items()}


def _pooled(by_other: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
    pairs = [pair for p in by_other.values() for pair in p]
    return {"pairs": len(pairs), "agreed": sum(x == y for x, y in pairs), "agreement": raw_agreement(pairs),
            "kappa": cohen_kappa(pairs)}


def _majority(outcomes: list[tuple[int, bool]]) -> dict[str, Any]:
    rounds: dict[int, list[bool]] = defaultdict(list)
    for round_, agreed in outcomes:
        rounds[round_].append(agreed)
    agreed = sum(ok for _, ok in outcomes)
    return {"majority_compared": len(outcomes), "majority_agreed": agreed,
            "majority_agreement": agreed / len(outcomes) if outcomes else None,
            "by_round": {r: {"compared": len(oks), "agreed": sum(oks), "agreement": sum(oks) / len(oks)}
                         for r, oks in sorted(rounds.items())}}


# -- rankings and ratings: a rank correlation ---------------------------------------------------------------------
def kendall_tau_b(x: Sequence[float | None], y: Sequence[float | None]) -> float | None:
    """Kendall's tau-b of two orders of the same items (ranks or scores, either direction as long as both agree;
    equal values tie): (C - D) / sqrt((n0 - n1) * (n0 - n2)) over the item pairs, C concordant, D discordant, n0
    all pairs, n1 and n2 those tied in x and in y. Items either side left unscored (None) drop out. None when
    undefined: fewer than two items, or either side ties them all."""
    both = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    concordant = discordant = tied_x = tied_y = n0 = 0
    for (x1, y1), (x2, y2) in combinations(both, 2):
        n0 += 1
        dx, dy = _sign(x1 - x2), _sign(y1 - y2)
        tied_x += dx == 0
        tied_y += dy == 0
        concordant += dx * dy > 0
        discordant += dx * dy < 0
    denominator = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    return (concordant - discordant) / denominator if denominator else None


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def rank_agreement(store, kind: str = "ranking") -> dict[str, Any]:
    """Agreement between people on rankings (`kind` 'ranking') or ratings ('rating': the order of the responses'
    overall scores, the mean of the criteria), over the comparisons of that kind two or more people ordered (their
    labels as people_agreement counts them; rankings that do not fit the comparison left out):

    - `tau_b`: the mean over those comparisons of each one's mean Kendall's tau-b between every two of its people
      (1 the same order, -1 reversed; a comparison where every pair is undefined, one side tying all, drops out);
      `comparisons` how many there are, `orders` their labels; `by_round` {round: {tau_b, comparisons}};
    - `annotators` {person: {comparisons, tau_b (the mean over every comparison and other person they share),
      with {other person: {compared (comparisons both ordered), tau_b (the mean over them)}}}}."""
    if kind not in LABEL_CHOICE:
        raise ValueError(f"rank agreement is for {' and '.join(LABEL_CHOICE)} comparisons, not {kind!r}")
    units = _order_units(store, kind)
    per_unit, rounds, shared = [], defaultdict(list), Counter()
    people: dict[str, dict[str, list[float | None]]] = defaultdict(lambda: defaultdict(list))
    for round_, orders in units:
        shared.update(name for name, _ in orders)
        taus = []
        for (a, xa), (b, xb) in combinations(orders, 2):
            tau = kendall_tau_b(xa, xb)
            taus.append(tau)
            people[a][b].append(tau)
            people[b][a].append(tau)
        unit = _mean_of(taus)
        if unit is not None:
            per_unit.append(unit)
            rounds[round_].append(unit)
    return {"tau_b": _mean_of(per_unit), "comparisons": len(units), "orders": sum(len(o) for _, o in units),
            "by_round": {r: {"tau_b": _mean_of(t), "comparisons": len(t)} for r, t in sorted(rounds.items())},
            "annotators": {name: _person_taus(shared[name], others) for name, others in sorted(people.items())}}


def _person_taus(comparisons: int, others: dict[str, list[float | None]]) -> dict[str, Any]:
    return {"comparisons": comparisons, "tau_b": _mean_of([t for taus in others.values() for t in taus]),
            "with": {other: {"compared": len(taus), "tau_b": _mean_of(taus)} for other, taus in sorted(others.items())}}


def _mean_of(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def _order_units(store, kind: str) -> list[tuple[int, list[tuple[str, tuple]]]]:
    """(round, [(person, merits by position)]) of each non-gold comparison of `kind` two or more people ordered."""
    k = (select(ComparisonResponse.comparison_id, func.count().label("k"))
         .group_by(ComparisonResponse.comparison_id).subquery("k"))
    q = (select(Label.comparison_id, Label.annotator, Label.ranking, Label.ratings, k.c.k, ModelVersion.round)
         .join(Comparison, col(Comparison.id) == Label.comparison_id)
         .join(k, k.c.comparison_id == Label.comparison_id)
         .join(ModelVersion, col(ModelVersion.id) == Comparison.model_version_id, isouter=True)
         .where(persons_label(), Label.choice == LABEL_CHOICE[kind], Comparison.kind == kind,
                col(Comparison.gold_choice).is_(None))
         .order_by(Label.comparison_id, Label.annotator))
    merits = ranking_merits if kind == "ranking" else rating_merits
    units: dict[int, tuple[int, list[tuple[str, tuple]]]] = {}
    with store.read() as s:
        for cid, annotator, ranking, ratings, n, round_ in s.exec(q):
            order = merits(ranking if kind == "ranking" else ratings, n)
            if order is not None:
                units.setdefault(cid, (round_ or 0, []))[1].append((annotator, order))
    return [unit for unit in units.values() if len(unit[1]) >= 2]
