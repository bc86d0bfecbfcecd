"""Cooldowns: a model that keeps failing, or is rate limited, rests so traffic goes to healthy ones.

After ``allowed_fails`` consecutive failures a model cools down for ``cooldown_s``; a rate-limit error
cools it at once, for the provider's Retry-After when it gives one (LiteLLM's Router: ``allowed_fails``,
``cooldown_time``). A cooling model is tried only after every healthy candidate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from routoo_shared.routing.fallback import is_rate_limit, retry_after_s


class ModelHealth:
    """Consecutive failures and cooldown deadlines per model name; thread-safe, picklable."""

    def __init__(self, allowed_fails: int = 3, cooldown_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        if allowed_fails < 1:
            raise ValueError(f"allowed_fails must be at least 1, got {allowed_fails}")
        if not cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be a non-negative number of seconds, got {cooldown_s}")
        self.allowed_fails = allowed_fails
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._fails: dict[str, int] = {}
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def failed(self, model: str, error: BaseException) -> None:
        with self._lock:
            fails = self._fails.get(model, 0) + 1
            self._fails[model] = fails
            rest = None
            if is_rate_limit(error):
                rest = retry_after_s(error) or self.cooldown_s
            elif fails >= self.allowed_fails:
                rest = self.cooldown_s
            if rest:
                self._until[model] = max(self._until.get(model, 0.0), self.clock() + rest)

    def succeeded(self, model: str) -> None:
        with self._lock:
            self._fails.pop(model, None)
            self._until.pop(model, None)

    def cooling(self, models: list[str]) -> dict[str, float]:
        """Seconds left in each model's cooldown (0 when it is healthy)."""
        with self._lock:
            now = self.clock()
            return {m: max(self._until.get(m, 0.0) - now, 0.0) for m in models}

    def cooling_s(self, model: str) -> float:
        """Seconds left in the model's cooldown (0 when it is healthy)."""
        return self.cooling([model])[model]

    def order(self, models: list[str]) -> tuple[list[str], list[str]]:
        """(healthy models in the given order, cooling ones by the soonest end of their cooldown)."""
        rest = self.cooling(models)
        healthy = [m for m in models if rest[m] == 0]
        return healthy, sorted((m for m in models if rest[m] > 0), key=rest.get)
