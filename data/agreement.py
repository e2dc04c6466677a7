"""Agreement: judge-human (on comparisons labelled by both a judge and humans, how often they agree) and
between people (on comparisons two or more people labelled, how often each agrees with the others).

Per judge (label annotator 'judge:<name>'): raw agreement and Cohen's kappa against the humans' majority choice,
overall and per round (the round of the comparison's model version; 0 without one), plus, from the judge's runs,
the both-order consistency rate and the abstain rate.

Categories are a, b and tie; a human 'both_bad' counts as 'tie' (no preference), skips are ignored, and a
comparison whose human labels have no strict majority is left out."""

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from data.models import Comparison, Label, ModelVersion
from data.rules import persons_label

CATEGORIES = ("a", "b", "tie")
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


def human_majority(choices: Iterable[str]) -> str | None:
    """The strict-majority category of human choices (both_bad as tie, skips ignored), or None."""
    counted = Counter(_AS_CATEGORY[c] for c in choices if c in _AS_CATEGORY)
    total = sum(counted.values())
    for category, k in counted.items():
        if 2 * k > total:
            return category
    return None


def _summary(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {"compared": len(pairs), "agreement": raw_agreement(pairs), "kappa": cohen_kappa(pairs)}


def judge_agreement(store) -> dict[str, dict[str, Any]]:
    """Per judge annotator: compared, agreement, kappa, by_round {round: {compared, agreement, kappa}},
    judge labels, and from its runs judged, consistency_rate (both orders agreed, of the verdicts that were not
    abstains) and abstain_rate. Judges with runs or labels but no human overlap appear with `compared` 0."""
    judged = select(Label.comparison_id).where(Label.source == "judge")
    q = (select(Label.comparison_id, Label.source, Label.annotator, Label.choice, ModelVersion.round)
         .join(Comparison, col(Comparison.id) == Label.comparison_id)
         .join(ModelVersion, col(ModelVersion.id) == Comparison.model_version_id, isouter=True)
         .where(col(Label.source).in_(("human", "judge")), col(Label.comparison_id).in_(judged),
                col(Label.discarded_at).is_(None)))
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


def annotator_agreement(store) -> dict[str, dict[str, Any]]:
    """Per person, over the comparisons that two or more people labelled (rules.persons_label): `comparisons`
    shared, `pairs` (their label with each other person's label on the same comparison; with three labels on a
    comparison each person has two pairs there), `agreed`, `agreement` (agreed / pairs) and `kappa` (Cohen's,
    over those pairs: agreement beyond what both sides' choice frequencies give by chance). Categories as for
    judges: a, b and tie, with both_bad as tie. People whose labels nobody else shared are absent."""
    shared = (select(Label.comparison_id).where(persons_label()).group_by(Label.comparison_id)
              .having(func.count() >= 2))
    q = (select(Label.comparison_id, Label.annotator, Label.choice)
         .where(persons_label(), col(Label.comparison_id).in_(shared)))
    by_comparison: dict[int, list[tuple[str, str]]] = defaultdict(list)
    with store.read() as s:
        for cid, annotator, choice in s.exec(q):
            by_comparison[cid].append((annotator, _AS_CATEGORY[choice]))
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    comparisons: Counter[str] = Counter()
    for labels in by_comparison.values():
        for name, mine in labels:
            comparisons[name] += 1
            pairs[name] += [(mine, theirs) for other, theirs in labels if other != name]
    return {name: {"comparisons": comparisons[name], "pairs": len(p), "agreed": sum(x == y for x, y in p),
                   "agreement": raw_agreement(p), "kappa": cohen_kappa(p)}
            for name, p in sorted(pairs.items())}
