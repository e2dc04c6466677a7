"""Queueing rounds, one at a time across processes, and handing them to a round process (the registry's warm
round worker, training.worker, or a process of the round's own).

The lock is the database: a TrainingRun row in status queued/running/cancelling whose process is alive and
whose heartbeat is fresh. It is created inside one write transaction (BEGIN IMMEDIATE on SQLite), which first
marks stale runs failed (their process is gone, or their heartbeat is older than training.stale_after_s).
`maybe_start_round` starts a round automatically every training.auto_every newly resolved pairs, backing off
after failed automatic rounds and pausing after training.auto_max_failures in a row (see auto_backoff)."""

import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from data.models import utcnow
from data.runs import RoundBusy
from training.config import RoundConfig
from training.pairs import NotEnoughPairs, is_held_out, resolved_pairs, select_pairs
from training.registry import clean_temp_dirs
from training.worker import DATABASE_URL_ENV, hand_over, log_dir, start_process

__all__ = ["DATABASE_URL_ENV", "AutoBackoff", "NotEnoughPairs", "RoundBusy", "auto_backoff", "error_line", "is_stale",
           "launch", "log_path", "maybe_start_round", "queue_round", "recover_stale_runs", "resume_auto_rounds",
           "start_round"]


def pid_alive(pid: int) -> bool:
    """Is process `pid` running on this machine (a zombie, killed but not reaped, is not)?"""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # SQLite hands datetimes back without their zone


def is_stale(run, stale_after_s: float, now: datetime | None = None) -> bool:
    """An active run whose process is gone or whose heartbeat is older than stale_after_s. The pid is checked only
    on the machine that started the run (with a shared database, another machine has only the heartbeat)."""
    on_this_host = (run.config or {}).get("host", socket.gethostname()) == socket.gethostname()
    if run.pid is not None and on_this_host and not pid_alive(run.pid):
        return True
    beat = run.heartbeat_at or run.started_at
    if beat is None:
        return True
    return (now or utcnow()) - _aware(beat) > timedelta(seconds=stale_after_s)


def recover_stale_runs(store, stale_after_s: float) -> list[int]:
    """Mark failed the rounds whose process died (e.g. kill -9); returns their ids."""
    return store.runs.recover_stale(lambda run: is_stale(run, stale_after_s))


def queue_round(store, models_dir: Path, cfg: RoundConfig, trigger: str = "manual") -> int:
    """Select the round's pairs and queue it (raises NotEnoughPairs, RoundBusy); returns the run id.
    `trigger`: 'manual' or 'auto' (maybe_start_round), kept in the run's config for the back-off."""
    parent = store.versions.deployed()
    if parent is None:
        raise LookupError("no model version is deployed: a round trains on the deployed version")
    began = time.monotonic()
    selection = select_pairs(store, cfg)
    # select_s and queued_at start the round's phase times (training.round.time_before_start)
    config = {"round": cfg.to_dict(), "eval_ids": selection.eval_ids, "new_pairs": len(selection.new),
              "replay_pairs": len(selection.replay), "skipped_pairs": selection.skipped,
              "deferred_pairs": selection.deferred, "host": socket.gethostname(), "trigger": trigger,
              "probe_prompts": probe_set(store, cfg),
              "select_s": round(time.monotonic() - began, 3), "queued_at": time.time()}
    run = store.runs.create(parent.id, selection.train_ids, config,
                                    is_stale=lambda r: is_stale(r, cfg.stale_after_s))
    clean_temp_dirs(models_dir)  # we hold the lock: whatever .tmp folder is there was left by a dead round
    return run.id


def probe_set(store, cfg: RoundConfig) -> list[list[dict]]:
    """The prompts every round samples before and after (training.probe_prompts of them), drawn once per database
    and kept in the run rows, so every round is measured on the same ground, however few pairs it holds out.
    Drawn again only when the kept set is smaller than training.probe_prompts asks (a later, bigger setting, or
    fewer prompts at the first draw)."""
    if cfg.probe_prompts <= 0:
        return []
    kept = store.runs.probe_prompts()
    if len(kept) >= cfg.probe_prompts:
        return kept[:cfg.probe_prompts]
    drawn = store.runs.draw_probe_prompts(cfg.probe_prompts)
    return drawn if len(drawn) > len(kept) else kept


def log_path(workdir: Path, run_id: int) -> Path:
    """Where a round process writes its output, the traceback of a failure included."""
    return log_dir(workdir) / f"round-{run_id}.log"


def launch(workdir: Path, run_id: int, database_url: str, store=None, *, models_dir: Path) -> subprocess.Popen:
    """Start `python -m training.run_round` for one queued run, detached, logging to <workdir>/logs/round-N.log."""
    args = ["--models-dir", str(Path(models_dir).resolve()), "--run-id", str(run_id)]
    proc = start_process(args, log_path(workdir, run_id), database_url)
    if store is not None:
        # The child writes its own pid when it starts; writing it here too covers a child that dies before that.
        store.runs.update(run_id, pid=proc.pid, heartbeat_at=utcnow())
    return proc


def start_round(store, workdir: Path, cfg: RoundConfig, database_url: str | None = None, trigger: str = "manual",
                *, models_dir: Path) -> tuple[int, int]:
    """Queue a round and hand it to a process; returns (run id, the process's pid). With training.worker_idle_s
    > 0 the process is the registry's warm round worker (started when none is alive), else one of its own. The
    round trains into the registry `models_dir` on the database `database_url` (default: the store's); its log
    goes under `workdir`."""
    run_id = queue_round(store, models_dir, cfg, trigger)
    url = database_url or store.url
    if cfg.worker_idle_s > 0:
        return run_id, hand_over(store, run_id, workdir=workdir, models_dir=models_dir, database_url=url,
                                 idle_s=cfg.worker_idle_s)
    return run_id, launch(workdir, run_id, url, store, models_dir=models_dir).pid


def new_pairs_count(store, cfg: RoundConfig) -> int:
    """Resolved training-side pairs no finished round has used yet."""
    trained = store.runs.trained_comparison_ids()
    return sum(1 for r in resolved_pairs(store, cfg)
               if r.comparison_id not in trained and not is_held_out(r.prompt_json, cfg.eval_fraction))


def maybe_start_round(store, workdir: Path, cfg: RoundConfig, database_url: str | None = None,
                      now: datetime | None = None, *, models_dir: Path) -> tuple[int, int] | None:
    """Start a round when training.auto_every (> 0) new pairs have resolved since the last one, no round is
    active and the back-off allows it (auto_backoff at `now`); None otherwise. Safe to call from many processes
    at once: the lock lets one through."""
    if cfg.auto_every <= 0:
        return None
    recover_stale_runs(store, cfg.stale_after_s)
    if any(r.status in store.runs.ACTIVE_STATUSES for r in store.runs.all()):
        return None
    if not auto_backoff(store, cfg, now).may_start:
        return None
    if new_pairs_count(store, cfg) < max(cfg.auto_every, cfg.min_pairs):
        return None
    try:
        return start_round(store, workdir, cfg, database_url, trigger="auto", models_dir=models_dir)
    except (RoundBusy, NotEnoughPairs):
        return None


# -- failed automatic rounds: back off, then pause until an operator resumes ------------------------------------
# Derived from the database alone (every process that may start automatic rounds reads the same rows): the
# automatic runs that failed since the last successful round of any kind and the last resume (an AuditEvent).
RESUMED = "auto_rounds_resumed"


@dataclass(frozen=True)
class AutoBackoff:
    failures: int = 0  # automatic rounds failed in a row
    run_id: int | None = None  # the last failed automatic run
    error: str | None = None  # its error, one line
    next_try_at: datetime | None = None  # no automatic round before this (None: no wait)
    paused: bool = False  # training.auto_max_failures reached: only an operator's resume restarts them
    now: datetime | None = None

    @property
    def may_start(self) -> bool:
        return not self.paused and (self.next_try_at is None or self.now >= self.next_try_at)


def retry_delay_s(cfg: RoundConfig, failures: int) -> float:
    """The wait after `failures` automatic rounds failed in a row: auto_retry_s doubled per failure, capped."""
    if failures <= 0:
        return 0.0
    return min(cfg.auto_retry_s * 2.0 ** min(failures - 1, 60), cfg.auto_retry_max_s)


def auto_backoff(store, cfg: RoundConfig, now: datetime | None = None) -> AutoBackoff:
    """Where automatic rounds stand at `now`: how many failed in a row, the last error, when the next may start."""
    now = _aware(now or utcnow())
    resumed = last_resume_at(store)
    failed = []
    for run in reversed(store.runs.all()):
        finished = _aware(run.finished_at) if run.finished_at else None
        if resumed is not None and finished is not None and finished <= resumed:
            break
        if run.status == "done":
            break
        if run.status == "failed" and (run.config or {}).get("trigger") == "auto":
            failed.append(run)
    if not failed:
        return AutoBackoff(now=now)
    last = failed[0]
    since = _aware(last.finished_at or now)
    return AutoBackoff(len(failed), last.id, error_line(last.error) or "no error recorded",
                       since + timedelta(seconds=retry_delay_s(cfg, len(failed))),
                       0 < cfg.auto_max_failures <= len(failed), now)


def error_line(error: str | None, limit: int = 500) -> str | None:
    """A stored error as one line for people: the first non-empty line, whitespace collapsed, at most `limit`
    characters (rows written before errors were kept to one line have a traceback after it)."""
    first = next((line for line in (error or "").splitlines() if line.strip()), None)
    if first is None:
        return None
    text = " ".join(first.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def last_resume_at(store) -> datetime | None:
    """When an operator last resumed automatic rounds."""
    from data.curation import last_event_at

    when = last_event_at(store, RESUMED)
    return _aware(when) if when else None


def resume_auto_rounds(store, cfg: RoundConfig, actor: str) -> AutoBackoff:
    """An operator resumes automatic rounds: the failure streak (and its wait) ends now. Recorded as an
    AuditEvent; returns the state it ended. Nothing is recorded when no automatic round has failed."""
    from data.curation import record_event

    state = auto_backoff(store, cfg)
    if state.failures:
        record_event(store, actor, RESUMED, "rounds", state.run_id,
                     detail={"failures": state.failures, "error": state.error, "paused": state.paused})
    return state
