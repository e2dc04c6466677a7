"""Queueing rounds, one at a time across processes, and starting them as their own process.

The lock is the database: a TrainingRun row in status queued/running/cancelling whose process is alive and
whose heartbeat is fresh. It is created inside one write transaction (BEGIN IMMEDIATE on SQLite), which first
marks stale runs failed (their process is gone, or their heartbeat is older than training.stale_after_s).
`maybe_start_round` starts a round automatically every training.auto_every newly resolved pairs."""

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from data.models import utcnow
from data.store import RoundBusy
from training.config import RoundConfig
from training.pairs import NotEnoughPairs, is_held_out, resolved_pairs, select_pairs
from training.registry import clean_temp_dirs

__all__ = ["NotEnoughPairs", "RoundBusy", "is_stale", "launch", "maybe_start_round", "queue_round",
           "recover_stale_runs", "start_round"]


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
    return store.recover_stale_runs(lambda run: is_stale(run, stale_after_s))


def queue_round(store, models_dir: Path, cfg: RoundConfig) -> int:
    """Select the round's pairs and queue it (raises NotEnoughPairs, RoundBusy); returns the run id."""
    parent = store.deployed_version()
    if parent is None:
        raise LookupError("no model version is deployed: a round trains on the deployed version")
    selection = select_pairs(store, cfg)
    config = {"round": cfg.to_dict(), "eval_ids": selection.eval_ids, "new_pairs": len(selection.new),
              "replay_pairs": len(selection.replay), "host": socket.gethostname()}
    run = store.create_training_run(parent.id, selection.train_ids, config,
                                    is_stale=lambda r: is_stale(r, cfg.stale_after_s))
    clean_temp_dirs(models_dir)  # we hold the lock: whatever .tmp folder is there was left by a dead round
    return run.id


def launch(workdir: Path, run_id: int, database_url: str | None = None, store=None) -> subprocess.Popen:
    """Start `python -m training.run_round` for a queued run, detached, logging to <workdir>/logs/round-N.log."""
    workdir = Path(workdir).resolve()
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "training.run_round", "--workdir", str(workdir), "--run-id", str(run_id)]
    if database_url:
        cmd += ["--database-url", database_url]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    with open(logs / f"round-{run_id}.log", "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    if store is not None:
        # The child writes its own pid when it starts; writing it here too covers a child that dies before that.
        store.update_training_run(run_id, pid=proc.pid, heartbeat_at=utcnow())
    return proc


def start_round(store, workdir: Path, cfg: RoundConfig, database_url: str | None = None
                ) -> tuple[int, subprocess.Popen]:
    """Queue a round and start its process; returns (run id, process)."""
    run_id = queue_round(store, Path(workdir) / "models", cfg)
    return run_id, launch(workdir, run_id, database_url, store)


def new_pairs_count(store, cfg: RoundConfig) -> int:
    """Resolved training-side pairs no finished round has used yet."""
    trained = store.trained_comparison_ids()
    return sum(1 for r in resolved_pairs(store, cfg)
               if r.comparison_id not in trained and not is_held_out(r.prompt_json, cfg.eval_fraction))


def maybe_start_round(store, workdir: Path, cfg: RoundConfig, database_url: str | None = None
                      ) -> tuple[int, subprocess.Popen] | None:
    """Start a round when training.auto_every (> 0) new pairs have resolved since the last one and no round
    is active; None otherwise. Safe to call from many processes at once: the lock lets one through."""
    if cfg.auto_every <= 0:
        return None
    recover_stale_runs(store, cfg.stale_after_s)
    if any(r.status in store.ACTIVE_RUN_STATUSES for r in store.training_runs()):
        return None
    if new_pairs_count(store, cfg) < max(cfg.auto_every, cfg.min_pairs):
        return None
    try:
        return start_round(store, workdir, cfg, database_url)
    except (RoundBusy, NotEnoughPairs):
        return None
