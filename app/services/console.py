"""What the operator console and `prefloop stats` show, as plain data: the counts, labels per day, each round's
headline metrics, the training and judges panels. Plain dataclasses and dicts; a front end turns them into its
tables and plots."""

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from app.services import rounds
from app.services.judging import judge_agreement, judge_status
from app.services.versions import list_versions
from app.services.workdir import App


@dataclass(frozen=True)
class DayCount:
    """Labels from one source on one day (UTC, 'YYYY-MM-DD')."""
    day: str
    source: str
    labels: int


@dataclass(frozen=True)
class RoundMetrics:
    """One finished round's headline numbers from its report, None where the report has none (or not a number):
    held-out implicit-reward accuracy and the probes' mean length (tokens) and EOS rate, each of the parent
    (before) and of the new version (after), and the new version's win-rate against its parent."""
    round: int  # the training run's id
    version: str
    parent: str | None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    win_rate: float | None = None
    tokens_before: float | None = None
    tokens_after: float | None = None
    eos_before: float | None = None
    eos_after: float | None = None


@dataclass
class ConsoleSnapshot:
    """Everything the console shows on a refresh: the overview counts, labels per day, the versions, and the
    finished rounds' metrics, oldest first."""
    overview: dict[str, Any]
    labels_per_day: list[DayCount]
    versions: list[dict[str, Any]]
    rounds: list[RoundMetrics]


@dataclass
class TrainingPanel:
    """The training panel: every round (rounds.list_rounds), the one to follow with its per-step metrics, the
    active one's id, and the automatic-round settings with their notice."""
    rounds: list[dict[str, Any]]
    selected: dict[str, Any] | None
    active: int | None
    auto_every: int
    min_pairs: int
    auto_deploy: bool
    auto_paused: bool
    auto_notice: str | None


@dataclass
class JudgePanel:
    """The judges panel: agreement with the humans per judge, and each judge's runs."""
    agreement: dict[str, Any]
    status: dict[str, Any]


def stats(app: App) -> dict[str, Any]:
    """Counts of prompts, responses, comparisons, labels by source and annotator, versions; judge agreement; and
    `people`: agreement between people (data.agreement.people_agreement: alpha, units, values, by_round, and per
    annotator majority agreement, kappas, alpha_without) with each annotator's gold record under `gold` (answered,
    correct, accuracy, recent_answered, recent_accuracy, held, held_labels; absent before any gold answer)."""
    data = app.store.stats.summary()
    data["judges"] = judge_agreement(app)
    data["people"] = people_stats(app)
    return data


def people_stats(app: App) -> dict[str, Any]:
    from dataclasses import asdict

    from app.services.quality import gold_scores
    from data.agreement import people_agreement

    agreement = people_agreement(app.store)
    annotators = agreement["annotators"]
    for name, score in sorted(gold_scores(app).items()):
        annotators.setdefault(name, {})["gold"] = asdict(score)
    agreement["annotators"] = dict(sorted(annotators.items()))
    return agreement


def overview(app: App) -> dict[str, Any]:
    """What the operator console shows at a glance: stats plus the queue's progress."""
    from data.queue import queue_counts

    data = stats(app)
    data["queue"] = queue_counts(app.store, overlap_default=app.settings.labelling.overlap)
    return data


def labels_per_day(app: App, days: int = 30) -> list[DayCount]:
    """Labels per day and source over the last `days` days, by day then source."""
    from datetime import timedelta

    from data.models import utcnow

    since = (utcnow() - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    times = app.store.stats.label_times(since)
    counts = Counter((_day(created_at), source) for created_at, _annotator, source in times)
    return [DayCount(day, source, n) for (day, source), n in sorted(counts.items())]


def _day(created_at) -> str:
    return created_at.strftime("%Y-%m-%d") if hasattr(created_at, "strftime") else str(created_at)[:10]


def round_metrics(app: App) -> list[RoundMetrics]:
    """Every round that made a version, oldest first, with its report's headline numbers."""
    return [_round_metrics(r) for r in rounds.list_rounds(app) if r["status"] == "done" and r["version"]]


def _round_metrics(listed: dict[str, Any]) -> RoundMetrics:
    report = listed["report"]
    return RoundMetrics(listed["id"], listed["version"], listed["parent"],
                        _at(report, "eval", "before", "accuracy"), _at(report, "eval", "after", "accuracy"),
                        _at(report, "win_rate", "win_rate"),
                        _at(report, "probe", "before", "mean_tokens"), _at(report, "probe", "after", "mean_tokens"),
                        _at(report, "probe", "before", "eos_rate"), _at(report, "probe", "after", "eos_rate"))


def _at(data: Any, *keys: str) -> float | None:
    """The number at data[k1][k2]...; None where a level is missing or not a dict (older reports, failed parts)."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return _number(data)


def _number(value: Any) -> float | None:
    """A finite number as a float; None for anything else (missing, NaN, a bool, a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def console_snapshot(app: App) -> ConsoleSnapshot:
    """Everything the operator console shows on a refresh, in one call."""
    return ConsoleSnapshot(overview(app), labels_per_day(app), list_versions(app), round_metrics(app))


def training_panel(app: App, run_id: int | None = None) -> TrainingPanel:
    """The training panel in one call; the round to follow is `run_id`, else the active one, else the latest."""
    listed = rounds.list_rounds(app)
    by_id = {r["id"]: r for r in listed}
    active = [r for r in listed if r["status"] in app.store.runs.ACTIVE_STATUSES]
    chosen = by_id.get(run_id) if run_id is not None else None
    chosen = chosen or (active[-1] if active else (listed[-1] if listed else None))
    selected = None
    if chosen is not None:
        run = app.store.runs.get(chosen["id"])
        selected = {**chosen, "metrics": list(run.metrics or []) if run else []}
    t, auto = app.settings.training, rounds.auto_state(app)
    return TrainingPanel(listed, selected, active[-1]["id"] if active else None, t.auto_every, t.min_pairs,
                         t.auto_deploy, auto.paused, rounds.notice_text(auto) if t.auto_every > 0 else None)


def judge_panel(app: App) -> JudgePanel:
    """The judges panel in one call: agreement with the humans and the judge runs."""
    return JudgePanel(judge_agreement(app), judge_status(app))
