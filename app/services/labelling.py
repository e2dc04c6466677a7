"""Labelling, as an annotator does it: the comparison to label now, a click (one write transaction, the same
function for the web UI and the JSON API), an edit, undoing their last label, their progress and recent labels."""

from dataclasses import dataclass
from typing import Any

from app.services.errors import BadInput, Conflict, NotFound, refusals
from app.services.workdir import App


@dataclass(frozen=True)
class Labelled:
    """A recorded click: the stored label (label_id, comparison_id, choice, created, done) and, when asked for,
    the comparison to label next (None when nothing is left) and the annotator's progress after it."""
    result: Any
    next: Any = None
    progress: dict[str, int] | None = None


@dataclass
class LabelView:
    """What the label page shows an annotator: the comparison they hold (or None), their progress, a notice; and
    what the request changed: the label it recorded (`labelled`, a SubmitResult) or the label id it undid."""
    item: Any
    progress: dict[str, int]
    notice: str = ""
    labelled: Any = None
    undone: int | None = None
    recent: list | None = None  # my last labels (data.recent.RecentLabel), newest first, when the page opens
    rating: tuple[int, dict[str, str]] | None = None  # a rating item's form (rating_form): scale, criteria


RECENT = 5  # labels the label view lists


def guidelines(app: App) -> str:
    return app.settings.labelling.guidelines


def handing(app: App):
    """How the queue hands comparisons out, from the [labelling] settings (data.queue.Handing)."""
    from data.queue import Handing

    labelling = app.settings.labelling
    return Handing(priority=labelling.priority, gold_rate=labelling.gold_rate)


def next_for(app: App, annotator: str):
    """The comparison `annotator` should label now (the one they hold, after a reload), or None when done."""
    from data.queue import next_comparison

    labelling = app.settings.labelling
    return next_comparison(app.store, annotator, labelling.lease_seconds, overlap_default=labelling.overlap,
                           handing=handing(app))


def my_progress(app: App, annotator: str) -> dict[str, int]:
    """open comparisons, those left for `annotator`, and their labels today."""
    from data.queue import queue_counts

    return queue_counts(app.store, annotator, overlap_default=app.settings.labelling.overlap, handing=handing(app))


def label(app: App, annotator: str, comparison_id: int, shown_order: str, *, side: str | None = None,
          choice: str | None = None, rationale: str | None = None, time_spent_s: float | None = None,
          and_next: bool = False, progress: bool = False, ranking: list[int] | None = None,
          ratings: dict[str, list[int]] | None = None) -> Labelled:
    """Record one click: `side` as shown (left|right|tie|both_bad|skip) or `choice` about responses A/B as stored;
    on a ranking, rating or thumbs comparison the `choice` its kind takes ('ranked' with `ranking`, the rank of each
    position; 'rated' with `ratings`, {criterion: [score of each position]}; up|down; skip).
    With `and_next`, the label and the lease on the next comparison are one write transaction (one BEGIN/COMMIT,
    one fsync), and so is the annotator's progress with `progress` too. The same label again is no change
    (created: False); another choice on it is a Conflict, and so is a comparison they were not handed."""
    from data.queue import Given, QueueError, choice_from_side, click, submit_and_next, submit_label

    if (side is None) == (choice is None):
        raise BadInput("give exactly one of side or choice")
    labelling = app.settings.labelling
    given = Given(ranking=ranking, ratings=check_ratings(app, ratings))
    with refusals(QueueError):  # already labelled otherwise, retired, discarded, or full
        if choice is None:
            choice = choice_from_side(side, shown_order)
        if not and_next:
            return Labelled(submit_label(app.store, annotator, comparison_id, choice, shown_order,
                                         rationale=rationale, time_spent_s=time_spent_s,
                                         overlap_default=labelling.overlap, handed_only=True, given=given))
        step = click if progress else submit_and_next
        done = step(app.store, annotator, comparison_id, choice, shown_order, labelling.lease_seconds,
                    rationale=rationale, time_spent_s=time_spent_s, overlap_default=labelling.overlap,
                    handing=handing(app), given=given)
        return Labelled(done.result, done.next, done.counts) if progress else Labelled(*done)


def rating_form(app: App) -> tuple[int, dict[str, str]]:
    """What a rating asks: the Likert scale's top score and the criteria, name: help text."""
    labelling = app.settings.labelling
    return labelling.rating_scale, dict(labelling.rating_criteria)


def check_ratings(app: App, ratings: dict[str, list[int]] | None) -> dict[str, list[int]] | None:
    """A person's ratings rate every criterion of the settings, none other, on the settings' scale (the queue
    checks their shape against the comparison)."""
    if ratings is None:
        return None
    scale, criteria = rating_form(app)
    if not isinstance(ratings, dict) or set(ratings) != set(criteria):
        given = sorted(ratings) if isinstance(ratings, dict) else ratings
        raise BadInput(f"rate every criterion ({', '.join(criteria)}) and no other; got {given}")
    for criterion, scores in ratings.items():
        if not isinstance(scores, list) or any(type(x) is not int or not 1 <= x <= scale for x in scores):
            raise BadInput(f"ratings[{criterion!r}]: give each response a whole score from 1 to {scale}, "
                           f"not {scores}")
    return ratings


def label_view(app: App, annotator: str, notice: str = "") -> LabelView:
    return view_of(app, next_for(app, annotator), my_progress(app, annotator), notice)


def view_of(app: App, item, progress: dict[str, int], notice: str = "", **changed) -> LabelView:
    """A LabelView of `item`, with the rating form when the item asks for ratings."""
    rating = rating_form(app) if item is not None and item.kind == "rating" else None
    return LabelView(item, progress, notice, rating=rating, **changed)


def recent_labels(app: App, annotator: str, limit: int = RECENT) -> list:
    """`annotator`'s last labels, newest first (data.recent.RecentLabel: what they clicked, when, on which prompt;
    discarded ones marked): what their label view lists, after a reload too."""
    from data.recent import recent_labels as recent

    return recent(app.store, annotator, limit)


def open_view(app: App, annotator: str) -> LabelView:
    """The label page as it opens (or reloads): label_view and my recent labels."""
    view = label_view(app, annotator)
    view.recent = recent_labels(app, annotator)
    return view


def label_and_next(app: App, annotator: str, comparison_id: int, side: str, shown_order: str,
                   rationale: str | None = None, time_spent_s: float | None = None) -> LabelView:
    """The label page's click on a pair's choice (or a skip): the label, the next comparison and the annotator's
    progress, in one transaction. A refused label (taken meanwhile, already labelled differently, retired) is not
    an error for the annotator: they get the next comparison and a notice saying why."""
    return _click(app, annotator, comparison_id, shown_order, side=side, rationale=rationale,
                  time_spent_s=time_spent_s)


def give_and_next(app: App, annotator: str, comparison_id: int, shown_order: str, choice: str,
                  ranking: list[int] | None = None, ratings: dict[str, list[int]] | None = None,
                  rationale: str | None = None, time_spent_s: float | None = None) -> LabelView:
    """label_and_next for any kind of comparison: `choice` as its kind takes it (label's), with the `ranking`
    (rank of each position) or the `ratings` ({criterion: [score of each position]}) it gives. A malformed
    ranking or ratings is BadInput (the annotator fixes it); a refusal, as for label_and_next, a notice."""
    return _click(app, annotator, comparison_id, shown_order, choice=choice, ranking=ranking, ratings=ratings,
                  rationale=rationale, time_spent_s=time_spent_s)


def _click(app: App, annotator: str, comparison_id: int, shown_order: str, **given) -> LabelView:
    try:
        labelled = label(app, annotator, comparison_id, shown_order, and_next=True, progress=True, **given)
    except (Conflict, NotFound) as refused:
        return label_view(app, annotator, str(refused))
    return view_of(app, labelled.next, labelled.progress, labelled=labelled.result)


@refusals()
def edit(app: App, annotator: str, comparison_id: int, edited_text: str, shown_order: str,
         rationale: str | None = None, *, edited_from: str, original_choice: str = "skip",
         time_spent_s: float | None = None) -> int:
    """Store an annotator's rewrite of response `edited_from` as a new edit-vs-original pair; returns its id."""
    from data.edits import add_edited_response

    return add_edited_response(app.store, annotator, comparison_id, edited_text, shown_order, rationale,
                               edited_from=edited_from, original_choice=original_choice, time_spent_s=time_spent_s)


def edit_and_next(app: App, annotator: str, comparison_id: int, edited_text: str, edited_side: str,
                  shown_order: str, rationale: str | None = None, time_spent_s: float | None = None) -> LabelView:
    """The annotator rewrote the response shown on `edited_side` (left|right): store it as preferred, move on."""
    from data.queue import choice_from_side

    with refusals():
        edited_from = choice_from_side(edited_side, shown_order)
    if edited_from not in ("a", "b"):
        raise BadInput("choose the left or the right response to edit")
    edit(app, annotator, comparison_id, edited_text, shown_order, rationale, edited_from=edited_from,
         time_spent_s=time_spent_s)
    return label_view(app, annotator, "Thanks: your edit was saved as the preferred response.")


def undo_last_label(app: App, annotator: str, label_id: int | None = None) -> dict[str, Any]:
    """Delete the annotator's own last label unless a round has taken it; they get that comparison back.
    NotFound when they have none, Conflict when it cannot be undone, Forbidden for someone else's label."""
    from data import curation

    labelling = app.settings.labelling
    with refusals(curation.CurationConflict):
        change = curation.undo_last_label(app.store, annotator, label_id, lease_seconds=labelling.lease_seconds,
                                          overlap_default=labelling.overlap)
    cid = change.detail["comparison_id"]
    return {"label_id": change.target_id, "comparison_id": cid, "choice": change.detail["choice"],
            "status": change.statuses.get(cid),
            "message": f"Your label {change.detail['choice']!r} on comparison {cid} was undone; label it again."}


def undo_and_view(app: App, annotator: str) -> LabelView:
    """The label view's Undo: the comparison comes back to label again; when nothing can be undone, the
    current view with a notice saying why."""
    try:
        undone = undo_last_label(app, annotator)
    except (NotFound, Conflict) as e:
        return label_view(app, annotator, f"Nothing undone: {e}.")
    view = label_view(app, annotator, undone["message"])
    view.undone = undone["label_id"]
    return view
