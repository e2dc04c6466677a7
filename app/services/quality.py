"""Label quality, as an operator runs it: gold questions (mark, unmark, list), each annotator's gold accuracy, and
the labels held back from annotators whose recent gold accuracy is below labelling.gold_threshold (release or
discard them). Each function returns plain data with a sentence to show."""

from dataclasses import asdict
from typing import Any

from app.services.errors import refusals
from app.services.workdir import App
from app.settings import Settings
from data import quality as data_quality
from data.derived import Derivation
from data.quality import GoldPolicy, GoldScore
from data.rules import COUNTED_CHOICES

CHOICES = COUNTED_CHOICES  # what a gold question's known answer may be


def gold_policy(settings: Settings) -> GoldPolicy:
    """The hold-back rule of these settings (labelling.gold_window, gold_min_answers, gold_threshold)."""
    labelling = settings.labelling
    return GoldPolicy(labelling.gold_window, labelling.gold_min_answers, labelling.gold_threshold)


def derivation(settings: Settings) -> Derivation:
    """Which pairs rankings and ratings yield under these settings (labelling.ranking_pairs, rating_gap)."""
    return Derivation.of(settings.labelling)


def gold_scores(app: App) -> dict[str, GoldScore]:
    """Per annotator who answered a gold question: their gold accuracy, overall and recent, and the hold-back."""
    policy = gold_policy(app.settings)
    return data_quality.gold_scores(app.store, policy.window, policy.min_answers, policy.threshold)


def held(app: App) -> list[dict[str, Any]]:
    """The annotators held back now, with their scores (name first), by name."""
    return [{"annotator": name, **asdict(score)} for name, score in sorted(gold_scores(app).items())
            if score.held]


@refusals(data_quality.QualityRefused)
def mark_gold(app: App, comparison_id: int, choice: str, actor: str, reason: str | None = None) -> dict[str, Any]:
    """Make a comparison a gold question with the known answer `choice` (a|b|tie|both_bad), or change its answer."""
    data_quality.mark_gold(app.store, comparison_id, choice, actor, reason)
    return {"id": comparison_id, "gold": choice,
            "message": f"Comparison {comparison_id} is a gold question; its known answer is {choice}."}


@refusals(data_quality.QualityRefused)
def unmark_gold(app: App, comparison_id: int, actor: str, reason: str | None = None) -> dict[str, Any]:
    """Make a gold question an ordinary comparison again."""
    data_quality.unmark_gold(app.store, comparison_id, actor, reason)
    return {"id": comparison_id, "gold": None,
            "message": f"Comparison {comparison_id} is no longer a gold question."}


def gold_questions(app: App) -> list[dict[str, Any]]:
    """Every gold question: id, known answer, status, discarded, answered and correct."""
    return data_quality.gold_questions(app.store)


@refusals(data_quality.QualityRefused)
def release_held(app: App, annotator: str, actor: str, reason: str | None = None) -> dict[str, Any]:
    """Let an annotator's held labels train and export; their later labels are held while their accuracy stays low."""
    n = data_quality.release_held(app.store, annotator, gold_policy(app.settings), actor, reason)
    return {"annotator": annotator, "released": n, "message": f"Released {n} held label(s) of {annotator}."}


@refusals(data_quality.QualityRefused)
def discard_held(app: App, annotator: str, actor: str, reason: str) -> dict[str, Any]:
    """Discard an annotator's held labels (kept, counting for nothing); the comparisons they filled reopen."""
    statuses = data_quality.discard_held(app.store, annotator, gold_policy(app.settings), actor, reason,
                                         overlap_default=app.settings.labelling.overlap)
    reopened = sum(1 for status in statuses.values() if status == "open")
    return {"annotator": annotator, "statuses": {str(k): v for k, v in statuses.items()},
            "message": f"Discarded {len(statuses)} held label(s) of {annotator} (one per comparison); "
                       f"{reopened} comparison(s) open for labelling again."}
