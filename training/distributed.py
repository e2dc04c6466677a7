"""Rounds in several processes (training.num_processes > 1): the `accelerate launch` command that runs one, and the
rank plumbing the recipe uses under it. Every rank trains; rank 0 alone writes the run row, the registry folder and
the report, and decides for all when training stops."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

from training.progress import RunProgress
from training.registry import Staging, temp_dir

log = logging.getLogger(__name__)

LAUNCHER = "accelerate.commands.launch"  # `accelerate launch`, run with this interpreter (no PATH needed)
LAUNCHED_ENV = "PREFLOOP_ROUND_LAUNCHED"  # set for a launched round's ranks: their WORLD_SIZE and RANK are ours
FSDP_FLAGS = ("--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
              "--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_reshard_after_forward", "true")


# -- where this process stands ------------------------------------------------------------------------------------
def world_size() -> int:
    """How many processes run this round: torchrun, under `accelerate launch`, sets WORLD_SIZE; 1 alone (also in
    a process that inherited a WORLD_SIZE from elsewhere, a cluster job's say)."""
    return int(os.environ.get("WORLD_SIZE", "1")) if os.environ.get(LAUNCHED_ENV) else 1


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if os.environ.get(LAUNCHED_ENV) else 0


def is_main() -> bool:
    """Rank 0, or a process alone: the one that writes."""
    return rank() == 0


def needs_launch(cfg) -> bool:
    """The round asks for several processes and this is not one of them: it must be launched."""
    return cfg.num_processes > 1 and world_size() == 1


def local_device(device: str) -> str:
    """The GPU of this rank (cuda:LOCAL_RANK) when several processes share the machine's GPUs; `device` else."""
    if world_size() > 1 and device.startswith("cuda"):
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def join(cfg) -> None:
    """Under the launcher, join the round's other processes now (accelerate starts the process group: gloo on
    CPU, NCCL on GPUs), so rank 0's word can be shared before the trainer exists; alone, nothing."""
    if world_size() == 1:
        return
    from accelerate import PartialState

    from generation.hf_backend import resolve_device

    state = PartialState(cpu=not resolve_device(cfg.device).startswith("cuda"))
    if is_main():
        log.info("round in %d processes (world size %d, %s over %s); rank 0 is pid %d", world_size(),
                 state.num_processes, state.distributed_type.value, state.backend, os.getpid())


def from_main(value):
    """Rank 0's `value`, on every rank. A collective: every rank must call it, in the same order."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every rank is here (alone: nothing)."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def shared_tempdir(prefix: str):
    """A temporary folder for the block, the same one on every rank (rank 0 makes it and removes it)."""
    if world_size() == 1:
        with tempfile.TemporaryDirectory(prefix=prefix) as path:
            yield path
        return
    path = from_main(tempfile.mkdtemp(prefix=prefix) if is_main() else None)
    try:
        yield path
    finally:
        if is_main():
            shutil.rmtree(path, ignore_errors=True)


def shared_dataset(dataset, folder: str):
    """`dataset` as files in `folder` (a shared_tempdir) that every rank opens, when there are several: TRL caches
    the reference log-probs beside a dataset's files, rank 0 writes them and the others read them, which a dataset
    held in memory (its cache in a temporary folder of each process) would not allow. Alone, `dataset` itself."""
    if world_size() == 1:
        return dataset
    from datasets import load_from_disk

    path = os.path.join(folder, "pairs")
    if is_main():
        dataset.save_to_disk(path)
    barrier()
    return load_from_disk(path)


def full_state_dict(trainer):
    """The trained weights gathered whole from the FSDP shards (a collective: every rank calls it; rank 0 gets
    them, on CPU); None when the model is not sharded (every rank holds it whole)."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return None
    return trainer.accelerator.get_state_dict(trainer.model)


# -- rank 0 writes, the others follow ----------------------------------------------------------------------------
class RankProgress(RunProgress):
    """RunProgress for one of a round's processes: rank 0 writes the row (its pid, phases, each step's metrics
    once, the heartbeat); the others write nothing. Training stops on every rank at the step rank 0 says (a
    cancel, a NaN loss): a rank that stopped alone would wait for the others forever."""

    def __init__(self, store, run_id: int):
        super().__init__(store, run_id)
        self.main = is_main()

    def start(self, before: list | None = None) -> None:
        if self.main:
            super().start(before)
        else:
            self.timer.enter("starting")

    def phase(self, phase: str, **extra) -> None:
        if self.main:
            super().phase(phase, **extra)
        else:
            self.timer.enter(phase)

    def finish(self, status: str, **fields) -> None:
        if self.main:
            super().finish(status, **fields)

    def check_not_cancelled(self) -> None:
        """Rank 0's part of the round only (after training): no other rank waits for its answer."""
        if self.main:
            super().check_not_cancelled()

    def heartbeat(self, interval_s: float):
        return super().heartbeat(interval_s) if self.main else nullcontext()

    def step_logged(self, step: int, max_steps: int, logs: dict) -> bool:
        if "train_runtime" in logs:  # the end-of-training summary: the same on every rank, nothing to agree on
            return False
        return self._agree(super().step_logged(step, max_steps, logs) if self.main else False)

    def step_ended(self) -> bool:
        return self._agree(super().step_ended() if self.main else False)

    def _agree(self, stop: bool) -> bool:
        """Rank 0's stop, cancelled and diverged, on every rank."""
        stop, self.cancelled, self.diverged = from_main((stop, self.cancelled, self.diverged))
        return stop


def round_progress(store, run_id: int) -> RunProgress:
    """The progress writer of this process: the plain one alone, a RankProgress under the launcher."""
    return RankProgress(store, run_id) if world_size() > 1 else RunProgress(store, run_id)


class Unstaged(Staging):
    """Another rank's view of the round's staging folder: the path, never emptied, written or removed (rank 0
    saves into it, and must not find it gone because another rank finished first)."""

    def folder(self, name: str) -> Path:
        self.path = temp_dir(self.models_dir, name)
        return self.path

    def promote(self, name: str) -> Path:
        raise RuntimeError("only rank 0 promotes a version")

    def __exit__(self, *exc) -> None:
        pass


def staging(models_dir: Path) -> Staging:
    return Staging(models_dir) if is_main() else Unstaged(models_dir)


# -- launching a round in several processes ------------------------------------------------------------------------
def launch_command(cfg, models_dir: Path, run_id: int, device: str) -> list[str]:
    """`python -m accelerate.commands.launch ... -m training.run_round --models-dir DIR --run-id N`: num_processes
    processes (torchrun), DDP or, with training.fsdp on GPUs, FSDP. On CPU too: accelerate's --cpu would start only
    one process, so CPU rounds launch like GPU ones and their processes join over gloo (DPOConfig's use_cpu);
    accelerate has no FSDP there, so a CPU round trains data-parallel whatever training.fsdp says."""
    command = [sys.executable, "-m", LAUNCHER, "--num_processes", str(cfg.num_processes), "--num_machines", "1",
               "--main_process_port", "0",  # a free port: rounds of several workdirs may run at once
               "--mixed_precision", "no", "--dynamo_backend", "no"]  # mixed precision is the round's (dpo_args)
    command += FSDP_FLAGS if cfg.fsdp and device.startswith("cuda") else ["--multi_gpu"]
    return command + ["-m", "training.run_round", "--models-dir", str(Path(models_dir).resolve()),
                      "--run-id", str(run_id)]


def launch_env(store, device: str) -> dict[str, str]:
    """This process's environment, plus the database (in the environment, never argv: `ps` shows argv), the
    checkout on PYTHONPATH and, on CPU, accelerate told so."""
    from training.worker import DATABASE_URL_ENV

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, DATABASE_URL_ENV: store.url, LAUNCHED_ENV: "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    if not device.startswith("cuda"):
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def launch_round(store, models_dir: Path, run_id: int, cfg):
    """Run round `run_id` in cfg.num_processes processes and wait for them; their output goes where this
    process's goes (the round's log in the warm worker). Rank 0 takes the row (its pid) and ends it; a row the
    processes left unended (one died, or could not start) is failed here. Returns the row's RoundResult."""
    from generation.hf_backend import resolve_device

    device = resolve_device(cfg.device)
    command = launch_command(cfg, models_dir, run_id, device)
    log.info("training run %s: %d processes: %s", run_id, cfg.num_processes, " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.Popen(command, env=launch_env(store, device), stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        code = proc.wait()
    finally:
        stop_group(proc)  # this process is leaving (SIGTERM): the round's processes go with it
    store.runs.finish(run_id, "failed", error=f"the round's {cfg.num_processes} processes exited (code {code}) "
                                              f"before it ended; see logs/round-{run_id}.log")
    return result_of(store, run_id)


def stop_group(proc: subprocess.Popen, wait_s: float = 10.0) -> None:
    """End the launcher and the processes it started (its process group), if still running."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def result_of(store, run_id: int):
    """The RoundResult a launched round's row records."""
    from training.round import RoundResult

    run = store.runs.get(run_id)
    version = next((v for v in store.versions.all() if v.id == run.output_version_id), None)
    deployed = store.versions.deployed()
    return RoundResult(run_id, run.status, version.name if version else None,
                       bool(version and deployed and deployed.id == version.id), run.report or {}, run.error)
