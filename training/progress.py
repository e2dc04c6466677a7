"""A running round's bookkeeping in its TrainingRun row: status, phase and the wall time of each phase, heartbeat,
per-step metrics, cancellation.

The recipe (training.round) reports between its steps; the trainer callback reports between TRL's steps."""

import logging
import math
import os
import time

from data.heartbeat import Heartbeat
from data.models import utcnow

log = logging.getLogger(__name__)

# Logged per step into TrainingRun.metrics (whatever of these TRL reports; kl is KTO's reference-point estimate).
STEP_KEYS = ("loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/margins",
             "rewards/accuracies", "logps/chosen", "logps/rejected", "kl", "epoch")


class RoundCancelled(Exception):
    """The operator cancelled the round."""


class RunProgress:
    """What one round writes into its row. `cancelled` and `diverged` say why the trainer callback stopped
    training, so the recipe can tell a stop it asked for from the end of training."""

    def __init__(self, store, run_id: int):
        self.store, self.run_id = store, run_id
        self.cancelled = self.diverged = False
        self.timer = PhaseTimer()

    def start(self, before: list | None = None) -> None:
        """The row is running, in this process. `before`: (phase, seconds) spent before this process ran it (the
        pair selection when it was queued, starting the process), first in its phase times."""
        self.timer = PhaseTimer(before)
        self.timer.enter("starting")
        self.store.runs.update(self.run_id, status="running", pid=os.getpid(), started_at=utcnow(),
                                       heartbeat_at=utcnow(), report={"phase": "starting",
                                                                      "phases": self.timer.phases()})

    def phase(self, phase: str, **extra) -> None:
        """What the round does now, merged into the row's report with the time spent so far in each phase (the
        console shows both)."""
        self.timer.enter(phase)
        run = self.store.runs.get(self.run_id)
        self.store.runs.update(self.run_id, heartbeat_at=utcnow(), report={
            **(run.report or {}), "phase": phase, **extra, "phases": self.timer.phases()})

    def check_not_cancelled(self) -> None:
        """Raise RoundCancelled when the operator asked to cancel; the recipe asks between its steps."""
        run = self.store.runs.get(self.run_id)
        if run is not None and run.status == "cancelling":
            raise RoundCancelled()

    def finish(self, status: str, **fields) -> None:
        """Give the row its final status; its report keeps the phase times up to now."""
        if "report" in fields:
            fields["report"] = {**fields["report"], "phases": self.timer.phases()}
        elif self.timer.started:
            run = self.store.runs.get(self.run_id)
            fields["report"] = {**(run.report or {}), "phases": self.timer.phases()}
        self.store.runs.finish(self.run_id, status, **fields)

    def failed(self, error: Exception) -> str:
        """Finish the row as failed with one readable line for people (returned); the traceback goes to the log
        (logs/round-N.log). Call it while handling `error`."""
        message = " ".join(f"{type(error).__name__}: {error}".split())
        log.error("training run %s failed: %s", self.run_id, message, exc_info=True)
        self.finish("failed", error=message)
        return message

    def heartbeat(self, interval_s: float) -> "Heartbeat":
        return run_heartbeat(self.store, self.run_id, interval_s)

    def step_logged(self, step: int, max_steps: int, logs: dict) -> bool:
        """Store one logged step's metrics; True when training must stop now (a NaN loss, or a cancel request)."""
        if "train_runtime" in logs:  # the end-of-training summary, not a step
            return False
        entry = {"step": step, "max_steps": max_steps}
        entry.update({k: float(v) for k, v in logs.items() if k in STEP_KEYS and isinstance(v, int | float)})
        status = self.store.runs.log_step(self.run_id, entry)
        stop = False
        if "loss" in entry and not math.isfinite(entry["loss"]):
            self.diverged = stop = True
        if status == "cancelling":
            self.cancelled = stop = True
        return stop

    def step_ended(self) -> bool:
        """Refresh the heartbeat; True when training must stop now (a cancel request)."""
        if self.store.runs.heartbeat(self.run_id) != "cancelling":
            return False
        self.cancelled = True
        return True


def trainer_callback(progress: RunProgress):
    """A transformers TrainerCallback that reports TRL's steps to `progress` and stops training when it says so.
    The class is made here, per round, so that importing this module does not import transformers."""
    from transformers import TrainerCallback

    class RunCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            progress.phase("training", max_steps=state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if progress.step_logged(state.global_step, state.max_steps, logs or {}):
                control.should_training_stop = True

        def on_step_end(self, args, state, control, **kwargs):
            if progress.step_ended():
                control.should_training_stop = True

    return RunCallback()


class PhaseTimer:
    """Wall time per phase of a round, in the order the phases first began; a phase entered again (the trainer's
    callback enters 'training' once more) adds to its time."""

    def __init__(self, before: list | None = None):
        self._seconds: dict[str, float] = {str(name): float(s) for name, s in before or []}
        self._current: str | None = None
        self._since = time.monotonic()

    @property
    def started(self) -> bool:
        return self._current is not None

    def enter(self, phase: str) -> None:
        self._close()
        self._current = phase
        self._seconds.setdefault(phase, 0.0)

    def _close(self) -> None:
        now = time.monotonic()
        if self._current is not None:
            self._seconds[self._current] += now - self._since
        self._since = now

    def phases(self) -> list[list]:
        """[[phase, seconds], ...] up to now (JSON keeps them as lists)."""
        self._close()
        return [[name, round(seconds, 3)] for name, seconds in self._seconds.items()]


def run_heartbeat(store, run_id: int, interval_s: float) -> Heartbeat:
    """Refreshes the run's heartbeat from a thread, also through loading, saving and evaluating."""
    return Heartbeat(lambda: store.runs.heartbeat(run_id), interval_s, f"run-{run_id}")


