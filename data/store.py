"""The store: prefloop's API over the database. Everyone outside `data/` reads and writes through it; it owns the
engine and the sessions, and composes the parts that own each kind of record."""

import threading
from contextlib import contextmanager

from data.accounts import Accounts
from data.db import locks_rows, make_engine, queue_connection, read_session, write_connection, write_session
from data.derived import Derivation
from data.devices import Devices
from data.judge_runs import JudgeRuns
from data.prompts import Prompts
from data.quality import GoldPolicy
from data.runs import TrainingRuns
from data.schema import ensure_current
from data.stats import Stats
from data.versions import Versions


class Store:
    """Owns the engine and its sessions; what is stored is reached by what it is about: store.prompts,
    .versions, .accounts, .runs, .judge_runs, .devices and .stats (each method there runs one short session)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self._write_lock = threading.RLock()  # see _one_writer
        ensure_current(self.engine)  # a new database is created; an old one is refused (`prefloop db upgrade`)
        self.prompts = Prompts(self)
        self.versions = Versions(self)
        self.accounts = Accounts(self)
        self.runs = TrainingRuns(self)
        self.judge_runs = JudgeRuns(self)
        self.devices = Devices(self)
        self.stats = Stats(self)
        # The gold-accuracy hold-back (labelling.gold_*): who is held back decides which labels resolve pairs.
        # An app sets it from its settings; a bare store (a round's process) holds back under the defaults.
        self.gold_policy = GoldPolicy()
        # Which pairs rankings and ratings yield (labelling.ranking_pairs, rating_gap), set the same way.
        self.derivation = Derivation()

    def read(self):
        return read_session(self.engine)

    def write(self):
        return _one_writer(self._write_lock, write_session(self.engine))

    def write_conn(self):
        """Like write(), but a plain Connection (no ORM Session) in one write transaction: for hot paths in SQL."""
        return _one_writer(self._write_lock, write_connection(self.engine))

    def queue_conn(self, annotator: str):
        """write_conn for one annotator's label-queue operation. On PostgreSQL it runs beside other annotators'
        (row locks keep each comparison within its overlap: data/queue.py); on SQLite it is write_conn."""
        if locks_rows(self.engine):
            return queue_connection(self.engine, annotator)
        return self.write_conn()

    @property
    def parallel_writers(self) -> int:
        """How many threads of one process usefully run label-queue transactions at once."""
        return 4 if locks_rows(self.engine) else 1

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def _one_writer(lock, session_cm):
    """Writers of one process take turns on a lock before BEGIN IMMEDIATE. Under many concurrent
    annotators this queues them in the process instead of in SQLite's busy handler, whose sleep-and-retry
    backoff gave waits of seconds at the tail. Other processes still coordinate through the database lock."""
    with lock, session_cm as session:
        yield session

