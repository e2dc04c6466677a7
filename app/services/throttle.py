"""Login back-off, one policy for the JSON API and the web UI: a few wrong passwords in a row cost nothing, then
each further try for the same name, or from the same address, must wait twice as long as the one before."""

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from app.services.errors import TooManyTries


@dataclass
class _Record:
    tries: int  # login tries counted since the last success
    last: float  # clock time of the last counted try


class LoginThrottle:
    """Failed-login counts per name and per client address, in this process's memory.

    For a name, a try counts when it starts (so tries for one account sent side by side cannot all slip past the
    limit). For an address, only a failed try counts (`failed`): a whole office behind one address logging in at
    nine o'clock is many tries in flight at once, and none of them is a guess. A success forgets the name and the
    address. After `free_per_name` tries in a row, the next one must wait `first_wait_s` after the last, then
    twice that, up to `max_wait_s`; an address gets more free failures than a name. A record untouched for
    `forget_s` is dropped, and at most `max_entries` records are kept (the stalest go first), so memory stays
    bounded whatever an attacker sends.

    Each server process keeps its own counts (`serve --workers N` lets N times as many tries through): a back-off
    against guessing, not an account lock, so a restart or another process costing a guesser nothing more is
    acceptable, and no database write is added to every login."""

    def __init__(self, *, free_per_name: int = 5, free_per_address: int = 20, first_wait_s: float = 1.0,
                 max_wait_s: float = 300.0, forget_s: float = 3600.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.free = {"name": free_per_name, "address": free_per_address}
        self.first_wait_s = first_wait_s
        self.max_wait_s = max_wait_s
        self.forget_s = max(forget_s, max_wait_s)  # never forget a record while it still makes someone wait
        self.max_entries = max_entries
        self.clock = clock
        self._lock = threading.Lock()
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()  # stalest first

    def attempt(self, name: str, address: str | None = None) -> None:
        """Count one login try for `name` (the address counts only if it fails), or refuse it with TooManyTries
        (saying how long to wait) while the name or the address `address` (None: unknown) must wait. A refused try
        is not counted."""
        now = self.clock()
        keys = self._keys(name, address)
        with self._lock:
            waits = {kind: self._wait((kind, value), now) for kind, value in keys}
            kind = max(waits, key=waits.get)
            if waits[kind] > 0:
                raise TooManyTries(f"Too many failed logins for this {kind}: try again in "
                                   f"{_duration(waits[kind])}.", retry_after_s=waits[kind])
            self._count(keys[0], now)

    def failed(self, name: str, address: str | None = None) -> None:
        """A wrong password: the address's failures grow (the name's try was counted when it started)."""
        if address:
            with self._lock:
                self._count(("address", address), self.clock())

    def succeeded(self, name: str, address: str | None = None) -> None:
        """A right password: the name and the address start afresh."""
        with self._lock:
            for key in self._keys(name, address):
                self._records.pop(key, None)

    def wait_s(self, name: str, address: str | None = None) -> float:
        """Seconds until `name` may try again from `address` (0: now)."""
        now = self.clock()
        with self._lock:
            return max(self._wait(key, now) for key in self._keys(name, address))

    def tracked(self) -> int:
        """How many names and addresses are remembered now (bounded by max_entries)."""
        return len(self._records)

    @staticmethod
    def _keys(name: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("name", (name or "").strip()[:256])]  # what an attacker may send is bounded in memory too
        return keys + ([("address", address)] if address else [])

    def _wait(self, key: tuple[str, str], now: float) -> float:
        record = self._records.get(key)
        if record is None or now - record.last > self.forget_s:
            return 0.0
        over = record.tries - self.free[key[0]]
        if over < 0:
            return 0.0
        wait = min(self.max_wait_s, self.first_wait_s * 2.0 ** min(over, 64))
        return max(0.0, record.last + wait - now)

    def _count(self, key: tuple[str, str], now: float) -> None:
        record = self._records.pop(key, None)
        if record is None or now - record.last > self.forget_s:
            record = _Record(0, now)
        record.tries += 1
        record.last = now
        self._records[key] = record  # to the end: the dict stays ordered stalest first
        while self._records and (len(self._records) > self.max_entries
                                 or now - next(iter(self._records.values())).last > self.forget_s):
            self._records.popitem(last=False)


def _duration(seconds: float) -> str:
    seconds = math.ceil(seconds)
    if seconds < 120:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} min"
