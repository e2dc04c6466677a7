"""Counts an operator watches: everything stored, by status, source, annotator and choice, and label times."""

from typing import Any

from sqlalchemy import case, func
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
                "comparisons_by_kind": grouped(Comparison.kind),
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

    def people(self, today, week) -> dict[str, dict[str, Any]]:
        """Per person who labelled (source 'human'): `labels` (rules.persons_label: not skips, not discarded),
        those since `today` and since `week`, `skips` (not discarded), `last_at` (their newest label of any kind)
        and `times`: the time_spent_s of their counted labels that carry one, for a median."""
        def when(since):
            return func.sum(case((col(Label.created_at) >= since, 1), else_=0))

        counted = (select(Label.annotator, func.count(), when(today), when(week))
                   .where(persons_label()).group_by(Label.annotator))
        skips = (select(Label.annotator, func.count()).where(Label.source == "human", Label.choice == "skip",
                                                              col(Label.discarded_at).is_(None))
                 .group_by(Label.annotator))
        last = select(Label.annotator, func.max(Label.created_at)).where(Label.source == "human") \
            .group_by(Label.annotator)
        timed = select(Label.annotator, Label.time_spent_s).where(persons_label(),
                                                                  col(Label.time_spent_s).is_not(None))
        out: dict[str, dict[str, Any]] = {}
        with self.store.read() as s:
            for name, last_at in s.exec(last):
                out[name] = {"labels": 0, "today": 0, "week": 0, "skips": 0, "last_at": last_at, "times": []}
            for name, n, n_today, n_week in s.exec(counted):
                out[name].update(labels=n, today=int(n_today or 0), week=int(n_week or 0))
            for name, n in s.exec(skips):
                out[name]["skips"] = n
            for name, seconds in s.exec(timed):
                out[name]["times"].append(seconds)
        return out
