"""What one server process remembers about accounts between requests: which names were seen enabled lately, and
the API's token caches to clear when an account changes here. One per App, never a module global."""

import threading
import time
import weakref

ENABLED_TTL_S = 10.0  # another process's disable reaches this one within this many seconds
MAX_NAMES = 10_000


class AccountMemory:
    """A browser keeps its login cookie after its account is disabled, and the API caches a token's user for
    TokenCache.TTL_S: both are checked against the database at most that often. A change made in this process
    forgets what it remembers about the user at once (`forget`)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._enabled: dict[str, float] = {}  # name -> when it was last seen enabled
        self._token_caches: weakref.WeakSet = weakref.WeakSet()

    def seen_enabled(self, name: str) -> bool:
        """Whether `name` was seen enabled less than ENABLED_TTL_S ago."""
        with self._lock:
            seen = self._enabled.get(name)
        return seen is not None and time.monotonic() - seen < ENABLED_TTL_S

    def remember_enabled(self, name: str) -> None:
        with self._lock:
            if len(self._enabled) > MAX_NAMES:
                self._enabled.clear()
            self._enabled[name] = time.monotonic()

    def watch_tokens(self, cache) -> None:
        """Register an API token cache (app.api.TokenCache): an account change drops its user's cached tokens."""
        self._token_caches.add(cache)

    def forget(self, name: str) -> None:
        with self._lock:
            self._enabled.pop(name, None)
        for cache in list(self._token_caches):
            cache.forget(user_name=name)
