"""The round process: `python -m training.run_round --models-dir DIR --run-id N`, with the database URL in the
environment (DATABASE_URL_ENV), never on the command line where `ps` would show its password.

Runs queued TrainingRun N (see training.round) and exits 0 when it is done, 1 when it failed or was cancelled."""

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.run_round", description=__doc__)
    parser.add_argument("--models-dir", type=Path, required=True, help="the model registry to train into")
    parser.add_argument("--run-id", type=int, required=True, help="the queued TrainingRun to run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from data.store import Store
    from training.round import run_round
    from training.scheduler import DATABASE_URL_ENV

    if not os.environ.get(DATABASE_URL_ENV):
        parser.error(f"{DATABASE_URL_ENV} must name the database")
    store = Store(os.environ[DATABASE_URL_ENV])
    try:
        result = run_round(store, args.models_dir, args.run_id)
    finally:
        store.close()
    print(f"training run {result.run_id}: {result.status}" + (f" -> {result.version}" if result.version else "")
          + (f" ({result.error})" if result.error else ""), flush=True)
    return 0 if result.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
