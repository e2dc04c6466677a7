"""The console's view of the people: their accounts, and how each of them labels (counts, skips, time per label,
agreement with the others, gold accuracy and the hold-back), with the agreement between them overall (Krippendorff's
alpha overall and per round, Cohen's kappa per pair), as plain dataclasses."""

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.services.workdir import App

WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    enabled: bool
    created_at: datetime
    last_label_at: datetime | None  # their newest label (skips too), None when they never labelled


@dataclass(frozen=True)
class Labelling:
    """How one person labels. Labels are rules.persons_label (not skips, not discarded): `today` since 00:00 UTC,
    `week` in the last 7 days. `median_s`: the median time_spent_s over the `timed` labels that carry one (the web
    UI measures it on the server, from the comparison being shown to the click; API clients report their own).
    Agreement (data.agreement.annotator_agreement; gold questions left out; a, b, tie and both_bad each a category):
    on the `comparisons` they labelled that someone else labelled too, each of their labels against each other
    person's (`pairs`), `agreement` and `kappa` (Cohen's) over those pairs; `majority_agreement` over the
    `majority_compared` comparisons where the others' labels have a strict majority; `kappas` {other person: (compared,
    agreement, kappa)}; `alpha_without`: the overall alpha with their labels left out. Gold (data.quality): answers,
    accuracy, over the latest answers (`gold_recent_*`), whether they are `held` back and how many labels are held."""
    name: str
    labels: int
    today: int
    week: int
    skips: int
    median_s: float | None
    timed: int
    comparisons: int
    pairs: int
    agreement: float | None
    kappa: float | None
    majority_compared: int = 0
    majority_agreement: float | None = None
    kappas: dict[str, tuple[int, float | None, float | None]] = field(default_factory=dict)
    alpha_without: float | None = None
    gold_answered: int = 0
    gold_accuracy: float | None = None
    gold_recent_answered: int = 0
    gold_recent_accuracy: float | None = None
    held: bool = False
    held_labels: int = 0


@dataclass(frozen=True)
class RoundAlpha:
    """Krippendorff's alpha over the comparisons of one round (of their model version; 0 without one) that two or
    more people labelled: `units` such comparisons, `values` their labels."""
    round: int
    alpha: float | None
    units: int
    values: int


@dataclass(frozen=True)
class PairKappa:
    """Cohen's kappa of two people over the `compared` comparisons both labelled; `first` sorts before `second`."""
    first: str
    second: str
    compared: int
    agreement: float | None
    kappa: float | None


@dataclass(frozen=True)
class PairTau:
    """How alike two people order the responses of the rankings (or ratings) both gave: Kendall's tau-b, averaged
    over the `compared` comparisons (1 the same order, -1 reversed); `first` sorts before `second`."""
    kind: str  # ranking|rating
    first: str
    second: str
    compared: int
    tau_b: float | None


@dataclass(frozen=True)
class OrderAgreement:
    """Agreement between people on one kind of ordering feedback (rankings, or ratings by overall score)."""
    kind: str  # ranking|rating
    tau_b: float | None
    comparisons: int
    pairs: list[PairTau]


@dataclass(frozen=True)
class Reliability:
    """Agreement between people as a whole: alpha overall, per round, and every pair's kappa; on rankings and
    ratings, Kendall's tau-b (`orders`, only the kinds two or more people ordered)."""
    alpha: float | None
    units: int
    values: int
    rounds: list[RoundAlpha]
    pairs: list[PairKappa]
    orders: list[OrderAgreement] = field(default_factory=list)


@dataclass(frozen=True)
class People:
    accounts: list[Account]
    labelling: list[Labelling]
    reliability: Reliability = field(default_factory=lambda: Reliability(None, 0, 0, [], []))


def people(app: App) -> People:
    """Every account, and everyone who has labelled or has an account: operators who label count as people too;
    imports and judges never do."""
    from app.services.quality import gold_scores
    from data.agreement import people_agreement
    from data.models import utcnow

    now = utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    counts = app.store.stats.people(today, now - WEEK)
    agreement = people_agreement(app.store)
    gold = gold_scores(app)
    users = app.store.accounts.users()
    accounts = [Account(u.name, u.role, u.disabled_at is None, u.created_at,
                        counts.get(u.name, {}).get("last_at")) for u in users]
    names = sorted({u.name for u in users} | set(counts) | set(gold))
    return People(accounts, [_labelling(name, counts.get(name, {}), agreement["annotators"].get(name, {}),
                                        gold.get(name)) for name in names], reliability(agreement))


def reliability(agreement: dict) -> Reliability:
    """data.agreement.people_agreement's whole-team numbers as a Reliability."""
    pairs = [PairKappa(name, other, k["compared"], k["agreement"], k["kappa"])
             for name, mine in agreement["annotators"].items() for other, k in mine["kappas"].items() if name < other]
    rounds = [RoundAlpha(r, a["alpha"], a["units"], a["values"]) for r, a in agreement["by_round"].items()]
    return Reliability(agreement["alpha"], agreement["units"], agreement["values"], rounds, sorted(
        pairs, key=lambda p: (p.first, p.second)), _orders(agreement))


def _orders(agreement: dict) -> list[OrderAgreement]:
    """people_agreement's 'rankings' and 'ratings' (data.agreement.rank_agreement), those with any comparison."""
    out = []
    for kind, key in (("ranking", "rankings"), ("rating", "ratings")):
        found = agreement.get(key) or {}
        if not found.get("comparisons"):
            continue
        pairs = [PairTau(kind, name, other, t["compared"], t["tau_b"])
                 for name, mine in found["annotators"].items() for other, t in mine["with"].items() if name < other]
        out.append(OrderAgreement(kind, found["tau_b"], found["comparisons"],
                                  sorted(pairs, key=lambda p: (p.first, p.second))))
    return out


def _labelling(name: str, counts: dict, agreement: dict, gold) -> Labelling:
    times = counts.get("times", [])
    kappas = {other: (k["compared"], k["agreement"], k["kappa"]) for other, k in agreement.get("kappas", {}).items()}
    return Labelling(name=name, labels=counts.get("labels", 0), today=counts.get("today", 0),
                     week=counts.get("week", 0), skips=counts.get("skips", 0),
                     median_s=statistics.median(times) if times else None, timed=len(times),
                     comparisons=agreement.get("comparisons", 0), pairs=agreement.get("pairs", 0),
                     agreement=agreement.get("agreement"), kappa=agreement.get("kappa"),
                     majority_compared=agreement.get("majority_compared", 0),
                     majority_agreement=agreement.get("majority_agreement"), kappas=kappas,
                     alpha_without=agreement.get("alpha_without"), **_gold_fields(gold))


def _gold_fields(gold) -> dict:
    if gold is None:
        return {}
    return {"gold_answered": gold.answered, "gold_accuracy": gold.accuracy,
            "gold_recent_answered": gold.recent_answered, "gold_recent_accuracy": gold.recent_accuracy,
            "held": gold.held, "held_labels": gold.held_labels}
