"""Training runs (DPO rounds) as rows: the lock that keeps one round at a time across processes, their progress,
heartbeats and cancellation, which comparisons rounds have trained on, and the prompts every round probes."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from data.models import Label, Prompt, TrainingRun, utcnow


class RoundBusy(ValueError):
    """Another training round is queued or running."""


class TrainingRuns:
    """store.runs: every method runs one short session of the store's."""

    def __init__(self, store):
        self.store = store

    ACTIVE_STATUSES = ("queued", "running", "cancelling")

    def create(self, parent_version_id: int | None, comparison_ids: Sequence[int],
                            config: dict[str, Any], is_stale=None) -> TrainingRun:
        """Queue a round: the lock that keeps at most one round at a time, across processes.

        In one write transaction (BEGIN IMMEDIATE on SQLite): active runs for which `is_stale(run)` is true
        are marked failed; if an active run is left, RoundBusy is raised; else a queued run is created."""
        with self.store.write() as s:
            active = s.exec(select(TrainingRun).where(col(TrainingRun.status).in_(self.ACTIVE_STATUSES))).all()
            for run in active:
                if is_stale is not None and is_stale(run):
                    self._fail_stale(s, run)
                else:
                    raise RoundBusy(f"training run {run.id} is {run.status}; one round at a time "
                                    f"(`prefloop cancel {run.id}` stops it)")
            now = utcnow()
            run = TrainingRun(parent_version_id=parent_version_id, comparison_ids=list(comparison_ids),
                              pairs_used=len(comparison_ids), config=config, status="queued", heartbeat_at=now)
            s.add(run)
            s.flush()
            return run

    @staticmethod
    def _fail_stale(s, run: TrainingRun) -> None:
        run.status = "failed"
        run.error = (run.error or "") + "the training process died or stopped reporting (stale heartbeat)"
        run.finished_at = utcnow()
        s.add(run)

    def recover_stale(self, is_stale) -> list[int]:
        """Mark failed every active run for which `is_stale(run)` is true; returns their ids."""
        with self.store.write() as s:
            active = s.exec(select(TrainingRun).where(col(TrainingRun.status).in_(self.ACTIVE_STATUSES))).all()
            stale = [run for run in active if is_stale(run)]
            for run in stale:
                self._fail_stale(s, run)
            return [run.id for run in stale]

    def get(self, run_id: int) -> TrainingRun | None:
        with self.store.read() as s:
            return s.get(TrainingRun, run_id)

    def all(self) -> list[TrainingRun]:
        with self.store.read() as s:
            return list(s.exec(select(TrainingRun).order_by(TrainingRun.id)).all())

    def update(self, run_id: int, **values: Any) -> None:
        with self.store.write() as s:
            s.exec(update(TrainingRun).where(TrainingRun.id == run_id).values(**values))

    def finish(self, run_id: int, status: str, **values: Any) -> bool:
        """Set a final status unless the run already has one (e.g. it was marked failed as stale)."""
        with self.store.write() as s:
            result = s.exec(update(TrainingRun).where(
                TrainingRun.id == run_id, col(TrainingRun.status).in_(self.ACTIVE_STATUSES),
            ).values(status=status, finished_at=utcnow(), **values))
            return result.rowcount == 1

    def log_step(self, run_id: int, entry: dict[str, Any]) -> str | None:
        """Append one step's metrics and beat the heart; returns the run's status (for cancellation)."""
        with self.store.write() as s:
            run = s.get(TrainingRun, run_id)
            if run is None:
                return None
            run.metrics = [*run.metrics, entry]
            run.heartbeat_at = utcnow()
            s.add(run)
            return run.status

    def heartbeat(self, run_id: int) -> str | None:
        """Refresh the heartbeat; returns the run's status."""
        with self.store.write() as s:
            s.exec(update(TrainingRun).where(TrainingRun.id == run_id).values(heartbeat_at=utcnow()))
            return s.exec(select(TrainingRun.status).where(TrainingRun.id == run_id)).first()

    def handed_to(self, pid: int) -> int | None:
        """The oldest run handed to round process `pid` that it has not taken up yet (queued, or cancelled while
        queued: taking it up then ends it as cancelled)."""
        with self.store.read() as s:
            return s.exec(select(TrainingRun.id).where(
                TrainingRun.pid == pid, col(TrainingRun.started_at).is_(None),
                col(TrainingRun.status).in_(("queued", "cancelling"))).order_by(TrainingRun.id)).first()

    def request_cancel(self, run_id: int) -> str:
        """Ask an active run to stop (status 'cancelling'; a queued run is cancelled at once). Returns the status."""
        with self.store.write() as s:
            run = s.get(TrainingRun, run_id)
            if run is None:
                raise LookupError(f"no training run {run_id}")
            if run.status == "queued" and run.pid is None:
                run.status, run.finished_at = "cancelled", utcnow()
            elif run.status in ("queued", "running"):
                run.status = "cancelling"
            s.add(run)
            return run.status

    def trained_comparison_ids(self) -> set[int]:
        """Comparisons already trained on by a round that produced a version."""
        with self.store.read() as s:
            rows = s.exec(select(TrainingRun.comparison_ids).where(TrainingRun.status == "done")).all()
        return {cid for ids in rows for cid in ids}

    def human_labelled_comparison_ids(self) -> set[int]:
        with self.store.read() as s:
            return set(s.exec(select(Label.comparison_id).where(Label.source == "human",
                                                                col(Label.discarded_at).is_(None)).distinct()).all())

    def probe_prompts(self) -> list[list[dict[str, Any]]]:
        """The probe prompts the latest round that kept them was queued with (run.config['probe_prompts'])."""
        with self.store.read() as s:
            configs = s.exec(select(TrainingRun.config).order_by(col(TrainingRun.id).desc())).all()
        return next((c["probe_prompts"] for c in configs if (c or {}).get("probe_prompts")), [])

    def draw_probe_prompts(self, limit: int) -> list[list[dict[str, Any]]]:
        """`limit` live prompts in content-hash order: the held-out split (a hash below eval_fraction) comes first,
        and the draw is the same on every machine."""
        with self.store.read() as s:
            rows = s.exec(select(Prompt.messages).where(col(Prompt.discarded_at).is_(None),
                                                        col(Prompt.skip_reason).is_(None))
                          .order_by(Prompt.content_hash).limit(limit)).all()
        return [list(messages) for messages in rows]
