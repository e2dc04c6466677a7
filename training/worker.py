"""The warm round process: one per model registry and database, it runs the rounds handed to it and stays up
between them with torch, transformers and TRL imported, so a round after the first starts at once instead of
spending ~10 s importing them. It leaves after training.worker_idle_s without a round."""

import fcntl
import gc
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from data.models import utcnow

log = logging.getLogger(__name__)

DATABASE_URL_ENV = "PREFLOOP_DATABASE_URL"  # how a round process gets the database (the setting's own variable)
PID_FILE = ".round-worker.json"  # in the registry: which process is its warm round process
LOCK_FILE = ".round-worker.lock"
POLL_S = 0.2  # how often an idle worker looks for a round handed to it


def start_process(args: list[str], log_file: Path, database_url: str) -> subprocess.Popen:
    """`python -m training.run_round ARGS`, detached from the caller's session, its output appended to log_file."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    env[DATABASE_URL_ENV] = database_url  # the environment, not argv: `ps` shows argv to every user
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "training.run_round", *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)


@contextmanager
def handoff_lock(models_dir: Path):
    """Held while a launcher hands a run over and while the worker decides to leave, so that no run is handed to a
    worker that is leaving (it would wait, queued, until it went stale)."""
    with open(Path(models_dir) / LOCK_FILE, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def database_key(database_url: str) -> str:
    return hashlib.sha256(database_url.encode()).hexdigest()[:16]


def live_worker(models_dir: Path, database_url: str) -> int | None:
    """The pid of the registry's warm round process, when it is alive on this machine and serves this database."""
    try:
        info = json.loads((Path(models_dir) / PID_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if info.get("host") != socket.gethostname() or info.get("database") != database_key(database_url):
        return None
    pid = info.get("pid")
    return pid if isinstance(pid, int) and is_worker(pid) else None


def is_worker(pid: int) -> bool:
    """Is `pid` a live round worker (not a process that took a dead worker's pid)?"""
    import psutil

    try:
        proc = psutil.Process(pid)
        command = proc.cmdline()
        return proc.status() != psutil.STATUS_ZOMBIE and "training.run_round" in command and "--worker" in command
    except psutil.Error:
        return False


def hand_over(store, run_id: int, *, workdir: Path, models_dir: Path, database_url: str, idle_s: float) -> int:
    """Give queued run `run_id` to the registry's warm round process, starting one when none is alive; returns its
    pid, which the run row keeps (a worker that dies leaves its run stale, and the next round goes ahead)."""
    models_dir = Path(models_dir).resolve()
    with handoff_lock(models_dir):
        pid = live_worker(models_dir, database_url)
        if pid is None:
            args = ["--models-dir", str(models_dir), "--worker", "--idle-s", str(idle_s),
                    "--log-dir", str(log_dir(workdir))]
            pid = start_process(args, log_dir(workdir) / "round-worker.log", database_url).pid
            info = {"pid": pid, "host": socket.gethostname(), "database": database_key(database_url)}
            (models_dir / PID_FILE).write_text(json.dumps(info), encoding="utf-8")
        store.runs.update(run_id, pid=pid, heartbeat_at=utcnow())
    return pid


def log_dir(workdir: Path) -> Path:
    return Path(workdir).resolve() / "logs"


# -- the worker's side ----------------------------------------------------------------------------------------------
def serve(store, models_dir: Path, logs: Path, idle_s: float) -> None:
    """Run every round handed to this process, each logging to logs/round-N.log, until idle_s pass without one, the
    registry is gone (a removed workdir) or SIGTERM comes."""
    from training.round import run_round

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    me, idle_since = os.getpid(), time.monotonic()
    try:
        while Path(models_dir).is_dir():
            run_id = store.runs.handed_to(me)
            if run_id is not None:
                with output_to(logs / f"round-{run_id}.log"):
                    result = run_round(store, models_dir, run_id)
                log.info("training run %s: %s", run_id, result.status)
                release_memory()
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= idle_s and leave(store, models_dir, me):
                return
            else:
                time.sleep(POLL_S)
    finally:
        forget(models_dir, me)


def release_memory() -> None:
    """The round's models and trainer: gone before the next round loads its own (and, on a GPU, handed back to
    the device, where a generator may want it)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def leave(store, models_dir: Path, me: int) -> bool:
    """Leave unless a run was handed over meanwhile; the pid file goes first, under the hand-over lock."""
    with handoff_lock(models_dir):
        if store.runs.handed_to(me) is not None:
            return False
        forget(models_dir, me)
        return True


def forget(models_dir: Path, me: int) -> None:
    """Remove the registry's pid file when it names this process."""
    path = Path(models_dir) / PID_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == me:
            path.unlink()
    except (OSError, ValueError):
        pass


@contextmanager
def output_to(path: Path):
    """Send this process's stdout and stderr (file descriptors 1 and 2, so TRL's and C code's output too) to
    `path` for the block: each round's log holds its own output and traceback."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
