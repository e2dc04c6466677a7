"""The console's view of the people: their accounts, and how each of them labels (counts, skips, time per label,
agreement with the others), as plain dataclasses."""

import statistics
from dataclasses import dataclass
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
    Agreement: on the `comparisons` they labelled that someone else labelled too, each of their labels against
    each other person's (`pairs`), a and b and tie (both_bad as tie); `kappa` is Cohen's over those pairs."""
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


@dataclass(frozen=True)
class People:
    accounts: list[Account]
    labelling: list[Labelling]


def people(app: App) -> People:
    """Every account, and everyone who has labelled or has an account: operators who label count as people too;
    imports and judges never do."""
    from data.agreement import annotator_agreement
    from data.models import utcnow

    now = utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    counts = app.store.stats.people(today, now - WEEK)
    agreement = annotator_agreement(app.store)
    users = app.store.accounts.users()
    accounts = [Account(u.name, u.role, u.disabled_at is None, u.created_at,
                        counts.get(u.name, {}).get("last_at")) for u in users]
    names = sorted({u.name for u in users} | set(counts))
    return People(accounts, [_labelling(name, counts.get(name, {}), agreement.get(name, {})) for name in names])


def _labelling(name: str, counts: dict, agreement: dict) -> Labelling:
    times = counts.get("times", [])
    return Labelling(name=name, labels=counts.get("labels", 0), today=counts.get("today", 0),
                     week=counts.get("week", 0), skips=counts.get("skips", 0),
                     median_s=statistics.median(times) if times else None, timed=len(times),
                     comparisons=agreement.get("comparisons", 0), pairs=agreement.get("pairs", 0),
                     agreement=agreement.get("agreement"), kappa=agreement.get("kappa"))
