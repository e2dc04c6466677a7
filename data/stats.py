"""Counts an operator watches: everything stored, by status, source, annotator and choice, and label times."""

from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from data.models import Comparison, Label, ModelVersion, Prompt, Response, TrainingRun, User, utcnow
from data.rules import persons_label


class Stats:
    """store.stats: every method runs one short session of the store's."""

    def __init__(self, store):
        self.store = store

    def summary(self) -> dict[str, Any]:
        """Counts of everything an operator watches, as plain data."""
        with self.store.read() as s:
            def grouped(column, *where):
                q = select(column, func.count()).where(*where).group_by(column) if where else \
                    select(column, func.count()).group_by(column)
                return {k: n for k, n in s.exec(q).all()}

            today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
            deployed = s.exec(select(ModelVersion.name).where(ModelVersion.deployed == True)).first()  # noqa: E712
            return {
                "prompts": s.exec(select(func.count()).select_from(Prompt)).one(),
                "prompts_skipped": s.exec(select(func.count()).select_from(Prompt)
                                          .where(col(Prompt.skip_reason).is_not(None))).one(),
                "responses": s.exec(select(func.count()).select_from(Response)).one(),
                "comparisons": grouped(Comparison.status),
                "labels_by_source": grouped(Label.source),
                # People's labels only (rules.persons_label), all time and today (UTC), so they add up to the
                # queue's labelled_today; skips apart (an edit records one on the original comparison).
                "labels_by_annotator": grouped(Label.annotator, persons_label()),
                "labels_today_by_annotator": grouped(Label.annotator, persons_label(),
                                                     col(Label.created_at) >= today),
                "skips_by_annotator": grouped(Label.annotator, Label.source == "human", Label.choice == "skip"),
                "labels_by_choice": grouped(Label.choice),
                "model_versions": grouped(ModelVersion.status),
                "deployed_version": deployed,
                "training_runs": grouped(TrainingRun.status),
                "users": grouped(User.role),
                # Still counted above (they are stored); never queued, trained on or exported (data.curation).
                "discarded": {name: s.exec(select(func.count()).select_from(table)
                                           .where(col(table.discarded_at).is_not(None))).one()
                              for name, table in (("prompts", Prompt), ("comparisons", Comparison),
                                                  ("labels", Label))},
            }

    def label_times(self, since=None) -> list[tuple[Any, str, str]]:
        """(created_at, annotator, source) of every label (since `since`), oldest first: for plots."""
        with self.store.read() as s:
            q = select(Label.created_at, Label.annotator, Label.source).order_by(Label.created_at)
            if since is not None:
                q = q.where(col(Label.created_at) >= since)
            return list(s.exec(q).all())
