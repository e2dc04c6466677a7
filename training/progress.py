"""A running round's bookkeeping in its TrainingRun row: status, phase, heartbeat, per-step metrics, cancellation.

The recipe (training.round) reports between its steps; the trainer callback reports between TRL's steps."""

import logging
import math
import os
import threading

from data.models import utcnow

log = logging.getLogger(__name__)

# Logged per step into TrainingRun.metrics (whatever of these TRL reports).
STEP_KEYS = ("loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/margins",
             "rewards/accuracies", "logps/chosen", "logps/rejected", "epoch")


class RoundCancelled(Exception):
    """The operator cancelled the round."""


class RunProgress:
    """What one round writes into its row. `cancelled` and `diverged` say why the trainer callback stopped
    training, so the recipe can tell a stop it asked for from the end of training."""

    def __init__(self, store, run_id: int):
        self.store, self.run_id = store, run_id
        self.cancelled = self.diverged = False

    def start(self) -> None:
        """The row is running, in this process."""
        self.store.runs.update(self.run_id, status="running", pid=os.getpid(), started_at=utcnow(),
                                       heartbeat_at=utcnow(), report={"phase": "starting"})

    def phase(self, phase: str, **extra) -> None:
        """What the round does now, merged into the row's report (the console shows it)."""
        run = self.store.runs.get(self.run_id)
        self.store.runs.update(self.run_id, heartbeat_at=utcnow(),
                                       report={**(run.report or {}), "phase": phase, **extra})

    def check_not_cancelled(self) -> None:
        """Raise RoundCancelled when the operator asked to cancel; the recipe asks between its steps."""
        run = self.store.runs.get(self.run_id)
        if run is not None and run.status == "cancelling":
            raise RoundCancelled()

    def finish(self, status: str, **fields) -> None:
        self.store.runs.finish(self.run_id, status, **fields)

    def failed(self, error: Exception) -> str:
        """Finish the row as failed with one readable line for people (returned); the traceback goes to the log
        (logs/round-N.log). Call it while handling `error`."""
        message = " ".join(f"{type(error).__name__}: {error}".split())
        log.error("training run %s failed: %s", self.run_id, message, exc_info=True)
        self.finish("failed", error=message)
        return message

    def heartbeat(self, interval_s: float) -> "Heartbeat":
        return Heartbeat(self.store, self.run_id, interval_s)

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


class Heartbeat:
    """Refreshes the run's heartbeat from a thread, also through loading, saving and evaluating."""

    def __init__(self, store, run_id: int, interval_s: float):
        self.store, self.run_id, self.interval_s = store, run_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.store.runs.heartbeat(self.run_id)
            except Exception:  # a busy database must not kill the round; the next beat retries
                log.warning("heartbeat of run %s failed", self.run_id, exc_info=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
