"""The round process: `python -m training.run_round --models-dir DIR --run-id N` runs queued TrainingRun N (see
training.round) and exits 0 when it is done, 1 when it failed or was cancelled; `--worker` instead runs every round
handed to it until it has been idle for --idle-s seconds (training.worker). A round of several processes
(training.num_processes) runs this once per rank under `accelerate launch` (training.distributed). The database URL
comes in the environment (DATABASE_URL_ENV), never on the command line, where `ps` would show its password."""

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.run_round", description=__doc__)
    parser.add_argument("--models-dir", type=Path, required=True, help="the model registry to train into")
    parser.add_argument("--run-id", type=int, help="the queued TrainingRun to run")
    parser.add_argument("--worker", action="store_true", help="run the rounds handed to this process (by pid)")
    parser.add_argument("--idle-s", type=float, default=300.0, help="with --worker: leave after this long idle")
    parser.add_argument("--log-dir", type=Path, help="with --worker: where each round's log goes (round-N.log)")
    args = parser.parse_args(argv)
    if (args.run_id is None) == (not args.worker):
        parser.error("give --run-id N or --worker")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from data.store import Store
    from training.worker import DATABASE_URL_ENV

    if not os.environ.get(DATABASE_URL_ENV):
        parser.error(f"{DATABASE_URL_ENV} must name the database")
    store = Store(os.environ[DATABASE_URL_ENV])
    try:
        if args.worker:
            return work(store, args)
        return run_one(store, args.models_dir, args.run_id)
    finally:
        store.close()


def run_one(store, models_dir: Path, run_id: int) -> int:
    from training import distributed
    from training.round import run_round

    result = run_round(store, models_dir, run_id)
    if distributed.world_size() > 1:
        # One rank of a launched round (training.num_processes): the row says how it ended, and the launcher reads
        # it. A failed rank exits 1, so the launcher ends the others at once (they may wait for it in a collective).
        return 1 if result.status == "failed" else 0
    print(f"training run {result.run_id}: {result.status}" + (f" -> {result.version}" if result.version else "")
          + (f" ({result.error})" if result.error else ""), flush=True)
    return 0 if result.status == "done" else 1


def work(store, args) -> int:
    # Import the heavy libraries now, while no round waits: the first round handed over starts warm too.
    from trl import DPOConfig, DPOTrainer  # noqa: F401

    from training.worker import serve

    serve(store, args.models_dir, args.log_dir or args.models_dir.parent / "logs", args.idle_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
