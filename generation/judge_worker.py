"""The LLM-judge worker: labels comparisons with a judge, both orders each, as labels of source 'judge'.

A restartable loop like the sampling worker: read a batch of comparisons the judge has not labelled, judge each
in both orders, store the labels (annotator `judge:<name>`), record the run's counts, repeat. Judge labels never
fill the human overlap (data.queue); training uses them only as training.judge_labels allows.

Modes: `all` (open comparisons), `unseen` (open ones no human holds or has labelled), `calibration` (a fixed
share that humans label too, to measure judge-human agreement; see data.agreement). Pairs only: a judge's a, b or
tie says nothing about a ranking, a rating or a thumbs comparison (data.judge_runs never hands those out).

A run that labels nothing (or nothing both orders agreed on) says why in its report and row (`reason`). A run's
row records the process doing it (pid, host) and is refreshed while it works, so a run whose process died is
marked failed (is_stale) instead of staying "running"."""

import json
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from data.heartbeat import Heartbeat
from data.judge_runs import split_choices
from data.models import utcnow
from data.queue import LabelConflict, QueueError, submit_label
from data.store import Store
from generation.judges import Judge, JudgeItem, PairVerdict, judge_both_orders

log = logging.getLogger(__name__)

JUDGE_PREFIX = "judge:"


def judge_annotator(name: str) -> str:
    """The label annotator of judge `name`."""
    return name if name.startswith(JUDGE_PREFIX) else JUDGE_PREFIX + name


@dataclass
class JudgeReport:
    """What one run did. `flipped`: verdicts that changed with the order (stored as ties)."""
    run_id: int | None  # None: nothing was left to judge, no run was recorded
    judge: str
    mode: str
    judged: int = 0
    labelled: int = 0
    consistent: int = 0
    flipped: int = 0
    abstained: int = 0
    choices: Counter = field(default_factory=Counter)
    reason: str | None = None  # why nothing (consistent) was labelled, as a sentence; None when something was
    abstain_example: str | None = None  # the first abstain's rationale (why the judge gave no verdict)

    def add(self, outcome: str, choice: str | None, rationale: str | None = None) -> None:
        self.judged += 1
        if outcome == "abstain" and self.abstain_example is None:
            self.abstain_example = " ".join((rationale or "").split())[:160] or None
        counter = {"consistent": "consistent", "flipped": "flipped", "abstain": "abstained"}[outcome]
        setattr(self, counter, getattr(self, counter) + 1)
        if choice is not None:
            self.labelled += 1
            self.choices[choice] += 1

    def counts(self) -> dict[str, Any]:
        return {"judged": self.judged, "labelled": self.labelled, "consistent": self.consistent,
                "flipped": self.flipped, "abstained": self.abstained, "choices": dict(self.choices)}

    def summary(self) -> str:
        choices = ", ".join(f"{k} {v}" for k, v in sorted(self.choices.items())) or "none"
        line = (f"{self.judge} ({self.mode}): judged {self.judged}, labelled {self.labelled} ({choices}); "
                f"both orders agreed {self.consistent}, flipped to tie {self.flipped}, abstained {self.abstained}")
        return f"{line}\n{self.reason}" if self.reason else line

    def outcome_reason(self) -> str | None:
        """Why a run that judged something labelled nothing, or nothing both orders agreed on; None otherwise."""
        n, why = self.judged, f" (first: {self.abstain_example})" if self.abstain_example else ""
        if not n or self.consistent and self.labelled > self.flipped:
            return None
        if self.abstained == n:
            return f"Nothing was labelled: the judge abstained on all {n} comparison(s) it judged{why}."
        if self.labelled == 0:
            return (f"Nothing was labelled: the judge abstained on {self.abstained} of {n}, and the others were "
                    f"resolved or retired while it judged.")
        if self.labelled == self.flipped:
            rest = f"; it abstained on {self.abstained}" if self.abstained else ""
            return (f"No verdict held in both orders: all {self.flipped} labelled comparison(s) flipped with the "
                    f"order of the responses and were stored as ties{rest}.")
        return None


def nothing_left_reason(store: Store, annotator: str, mode: str, calibration_share: float) -> str:
    """Why judge `annotator` finds nothing to judge in `mode`, as a sentence."""
    left = store.judge_runs.left_counts(annotator, mode, calibration_share)
    covered = "comparisons of the calibration share" if mode == "calibration" else "open comparisons"
    if not left["candidates"]:
        if mode == "calibration":
            return (f"Nothing was labelled: no comparison falls in the calibration share "
                    f"(judge.calibration_share = {calibration_share}).")
        return ("Nothing was labelled: there are no open comparisons of two responses (a judge labels pairs only, "
                "not rankings, ratings or thumbs; generate or import some first).")
    if not left["unjudged"]:
        return f"Nothing was labelled: {annotator} has already labelled all {left['candidates']} {covered}."
    if mode == "unseen" and not left["free"]:
        return (f"Nothing was labelled: the {left['unjudged']} open comparison(s) {annotator} has not labelled are "
                f"all held or labelled by people (mode 'unseen' leaves those to them; mode 'all' judges them too).")
    return "Nothing was labelled: nothing was left to judge (the comparisons left were skipped after an abstain)."


def rationale_text(pv: PairVerdict) -> str:
    """What is stored with a judge label: its rationale plus the both-order record as one JSON line at the end."""
    record = {"outcome": pv.outcome, "first": pv.first.choice, "second": pv.second.choice,
              "confidence": pv.verdict.confidence}
    return f"{pv.verdict.rationale}\n[judge] {json.dumps(record)}".strip()


def judge_once(store: Store, judge: Judge, mode: str = "unseen", limit: int | None = None,
               batch_size: int = 16, calibration_share: float = 0.1, progress: bool = False,
               exclude: set[int] | None = None, should_stop: Callable[[], bool] | None = None,
               run_id: int | None = None) -> JudgeReport:
    """Judge up to `limit` comparisons (all that are left when None) in batches; returns the run's report.

    Abstained comparisons get no label; their ids are added to `exclude` (when given) so a watching worker does
    not ask again in the same process. The run's counts are written to its JudgeRun row after every batch.
    `run_id`: a run already started (store.judge_runs.claim) to carry out; it is finished even when nothing is left
    to judge, with the reason. Without it a run is started only when there is something to judge."""
    annotator = judge_annotator(judge.name)
    skip = exclude if exclude is not None else set()

    def next_rows(done: int) -> list:
        if (limit is not None and done >= limit) or (should_stop is not None and should_stop()):
            return []
        want = batch_size if limit is None else min(batch_size, limit - done)
        return store.judge_runs.to_judge(annotator, mode, want, calibration_share, exclude=sorted(skip))

    here = {"pid": os.getpid(), "host": socket.gethostname()}
    if run_id is not None:
        store.judge_runs.record(run_id, **here)
    rows = next_rows(0)
    if not rows:  # nothing to do: an idle watcher leaves no trace; a started run says why
        report = JudgeReport(run_id, annotator, mode)
        if run_id is not None:
            report.reason = nothing_left_reason(store, annotator, mode, calibration_share)
            store.judge_runs.record(run_id, reason=report.reason)
            store.judge_runs.finish(run_id, "done")
        return report
    if run_id is None:
        run_id = store.judge_runs.start(annotator, judge.kind, mode, record={**here, "limit": limit})
    report = JudgeReport(run_id, annotator, mode)
    bar = _progress_bar(progress, limit, annotator)
    try:
        while rows:
            items = [JudgeItem(messages, a, b) for _cid, messages, a, b in rows]
            split = []  # flipped with the order, or abstained: labelling.priority = judge_disagreement
            for (cid, *_), pv in zip(rows, judge_both_orders(judge, items), strict=True):
                stored = _store_label(store, annotator, cid, pv)
                if stored is None:
                    skip.add(cid)
                if pv.outcome in ("flipped", "abstain"):
                    split.append(cid)
                report.add(pv.outcome, stored, pv.verdict.rationale)
            store.judge_runs.count_split(split)
            store.judge_runs.update(report.run_id, **report.counts())
            if bar is not None:
                bar.update(len(rows))
                bar.set_postfix(labelled=report.labelled, flipped=report.flipped, abstained=report.abstained)
            rows = next_rows(report.judged)
    except BaseException as error:
        store.judge_runs.update(report.run_id, status="failed", finished_at=utcnow(),
                               error=" ".join(f"{type(error).__name__}: {error}".split()), **report.counts())
        raise
    finally:
        if bar is not None:
            bar.close()
    report.reason = report.outcome_reason()
    if report.reason:
        store.judge_runs.record(report.run_id, reason=report.reason)
    store.judge_runs.update(report.run_id, **report.counts())
    store.judge_runs.finish(report.run_id, "done")
    return report


def _store_label(store: Store, annotator: str, comparison_id: int, pv: PairVerdict) -> str | None:
    """Store the verdict as a judge label; the choice stored, or None (abstain, or the comparison went away)."""
    if pv.verdict.choice == "abstain":
        return None
    try:
        submit_label(store, annotator, comparison_id, pv.verdict.choice, "ab", rationale=rationale_text(pv),
                     source="judge")
    except LabelConflict as e:
        return e.existing_choice  # labelled meanwhile by another worker of the same judge: that label stands
    except (QueueError, LookupError) as e:
        log.info("judge label for comparison %s not stored: %s", comparison_id, e)
        return None
    return pv.verdict.choice


def _progress_bar(progress: bool, limit: int | None, annotator: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=limit, desc=annotator, unit="pair")


def watch(store: Store, judge: Judge, stop_event, mode: str = "unseen", batch_size: int = 16,
          calibration_share: float = 0.1, interval_s: float = 10.0, max_rounds: int | None = None,
          on_report: Callable[[JudgeReport], None] | None = None) -> list[JudgeReport]:
    """Judge new comparisons as they appear until `stop_event` is set (or after `max_rounds` runs that found
    work): each run drains what is there (checking `stop_event` between batches), then the worker sleeps
    `interval_s`. Returns the reports of the runs that judged something."""
    reports: list[JudgeReport] = []
    abstained: set[int] = set()
    while not stop_event.is_set() and (max_rounds is None or len(reports) < max_rounds):
        report = judge_once(store, judge, mode=mode, limit=None, batch_size=batch_size,
                            calibration_share=calibration_share, exclude=abstained, should_stop=stop_event.is_set)
        if report.judged:
            reports.append(report)
            if on_report is not None:
                on_report(report)
        else:
            stop_event.wait(interval_s)
    return reports


def judge_status(store: Store, judge: str | None = None, recent: int = 5) -> dict[str, Any]:
    """What the console shows about judges: per judge annotator, totals over its runs and its recent runs."""
    totals = store.judge_runs.totals()
    runs = store.judge_runs.all(judge_annotator(judge) if judge else None)
    out: dict[str, Any] = {}
    for name, counts in totals.items():
        if judge and name != judge_annotator(judge):
            continue
        mine = [r for r in runs if r.judge == name][:recent]
        out[name] = {**counts, "runs": [run_dict(r) for r in mine]}
    return out


def run_dict(run) -> dict[str, Any]:
    """A JudgeRun as plain data: its counts, `limit` (None: all there were), `reason` (why nothing was labelled)."""
    choices, record = split_choices(run.choices)
    return {"id": run.id, "judge": run.judge, "kind": run.kind, "mode": run.mode, "status": run.status,
            "judged": run.judged, "limit": record.get("limit"), "labelled": run.labelled,
            "consistent": run.consistent, "flipped": run.flipped, "abstained": run.abstained, "choices": choices,
            "reason": record.get("reason"), "error": run.error,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "updated_at": run.updated_at.isoformat() if run.updated_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None}


# -- a run's process: alive, or stale --------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """Is process `pid` running on this machine (a zombie, killed but not reaped, is not)?"""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def is_stale(run, stale_after_s: float, now=None) -> bool:
    """A running run whose process is gone (checked on the machine that runs it) or that has not reported (its
    updated_at, refreshed by Heartbeat) for stale_after_s."""
    from datetime import UTC, timedelta

    _choices, record = split_choices(run.choices)
    if record.get("pid") and record.get("host") == socket.gethostname() and not pid_alive(record["pid"]):
        return True
    beat = run.updated_at or run.started_at
    beat = beat if beat.tzinfo else beat.replace(tzinfo=UTC)  # SQLite hands datetimes back without their zone
    return (now or utcnow()) - beat > timedelta(seconds=stale_after_s)


def judge_heartbeat(store: Store, run_id: int, interval_s: float) -> Heartbeat:
    """Refreshes a run's updated_at from a thread while its judge works (a model may take minutes a batch)."""
    return Heartbeat(lambda: store.judge_runs.update(run_id), interval_s, f"judge-{run_id}")


