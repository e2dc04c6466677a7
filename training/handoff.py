"""Sharing one GPU between the generator and a round: the generator sleeps while the trainer runs, then wakes
and serves the new version.

For a generator in the same process as the round (the demo, a single-GPU box). A backend with sleep()/wake()
(vLLM's sleep mode) gives its GPU memory back for the round; one without (hf on CPU) keeps serving meanwhile,
and the hand-off is just load_version. Generators in other processes need none of this: they read the
deployed version between batches and swap on their own."""

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any


def can_sleep(backend) -> bool:
    return callable(getattr(backend, "sleep", None)) and callable(getattr(backend, "wake", None))


@contextmanager
def generator_asleep(backend, level: int = 1):
    """Sleep the backend (when it can) for the duration of the block; wake it afterwards, even on failure."""
    slept = can_sleep(backend)
    if slept:
        backend.sleep(level=level)
    try:
        yield slept
    finally:
        if slept:
            backend.wake()


def serve(backend, path: str | None) -> bool:
    """Load `path` into the (awake) backend unless it serves it already; True when it swapped."""
    from generation.backend import same_model

    if path is None or same_model(backend.path, path):
        return False
    backend.load_version(path)
    return True


def train_with_handoff(backend, run: Callable[[], Any], deployed_path: Callable[[], str | None],
                       level: int = 1) -> Any:
    """Sleep the generator, run the round, wake it and serve whatever version is deployed now.

    `run` trains (returns anything, e.g. a RoundResult); `deployed_path` reads the deployed version's path
    after it, so a failed or undeployed round leaves the generator on the version it served before."""
    with generator_asleep(backend, level):
        result = run()
    serve(backend, deployed_path())
    return result
