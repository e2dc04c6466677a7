"""A heartbeat thread: it keeps a long-running job's row fresh (a round's, a judge run's) while the job works, so
a row whose process died can be told from one that is only slow."""

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls `beat` every `interval_s` seconds from a thread, for as long as the `with` block runs."""

    def __init__(self, beat: Callable[[], object], interval_s: float, name: str):
        self.beat, self.interval_s = beat, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except Exception:  # a busy database must not kill the job; the next beat retries
                log.warning("heartbeat of %s failed", self._thread.name, exc_info=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
