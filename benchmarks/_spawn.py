"""Run one side of a benchmark in a fresh spawned process, so its peak RSS and timings are its own."""

import multiprocessing as mp
from queue import Empty


def run_spawned(child, name: str, *args):
    """Call `child(queue, *args)` in a spawned process and return what it puts on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue, *args))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{name} died with exit code {proc.exitcode}") from None
    proc.join()
    return result
