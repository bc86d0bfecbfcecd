"""API keys: SHA-256 digests in the config, one budget and one request-rate window per key.

A secret is shown once, when ``routoo keys add`` makes it; the config keeps its SHA-256 only, and
nothing the server logs or returns holds either (a request's key is known by its name). Every
per-key budget is made in ``Keyring`` by one factory and every request window may be a shared one, so
a shared store (several workers) can supply budgets and windows of its own.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import yaml

from routoo_shared.routing.budget import RoutooBudget
from routoo_shared.server.config import KeyEntry, ServerConfig

SECRET_PREFIX = "rt-"
BudgetFactory = Callable[[KeyEntry, str], RoutooBudget]  # (key, period such as "2026-12-04" or "all") -> budget


class RequestWindow(Protocol):
    """Requests per key over the last minute, kept for several workers (``RedisRequestWindow``)."""

    def admit(self, key: str, limit: int) -> float | None:
        """None when ``key`` may send one more request now (counted), else the seconds to wait."""


class AuthenticationError(Exception):
    """No key, or one the config does not hold (HTTP 401)."""


class RateLimitedError(Exception):
    """The key sent more requests in the last minute than its ``requests_per_minute`` (HTTP 429)."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def add_key(config_path: str | Path, name: str, budget_usd: float | None = None, renew: str | None = None,
            allowed_presets: list[str] | None = None, allowed_models: list[str] | None = None,
            requests_per_minute: int | None = None) -> str:
    """Append a key to ``config_path`` (created if missing) and return its secret, which is stored nowhere.

    Raises ``ValueError`` for a repeated name or a bad field (the whole file is validated before writing).
    """
    path = Path(config_path)
    data = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    secret = new_secret()
    entry = KeyEntry(name=name, sha256=digest(secret), budget_usd=budget_usd, renew=renew, allowed_presets=allowed_presets,
                     allowed_models=allowed_models, requests_per_minute=requests_per_minute)
    data["keys"] = list(data.get("keys") or []) + [entry.model_dump(exclude_none=True)]
    ServerConfig.from_data(data, str(path))  # repeated names and every other field checked before writing
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return secret


def default_budget(key: KeyEntry, period: str) -> RoutooBudget:
    return RoutooBudget(total_usd=key.budget_usd)


def shared_budgets(store: str) -> BudgetFactory:
    """Budgets in the Redis store at ``store`` (``redis://host:port/db``): one per key and period, named
    ``routoo-key:<key>:<period>``, that every worker of ``routoo serve --workers N`` shares."""

    def make(key: KeyEntry, period: str) -> RoutooBudget:
        return RoutooBudget(total_usd=key.budget_usd, store=store, name=f"routoo-key:{key.name}:{period}")

    return make


class KeyState:
    """A key's budget for the current period and its request times over the last minute."""

    def __init__(self, entry: KeyEntry, make_budget: BudgetFactory, clock: Callable[[], float] = time.time,
                 window: "RequestWindow | None" = None):
        self.entry = entry
        self._make_budget = make_budget
        self._window = window
        self._clock = clock
        self._period: str | None = None
        self._budget: RoutooBudget | None = None
        self._requests: collections.deque[float] = collections.deque()

    @property
    def name(self) -> str:
        return self.entry.name

    def period(self) -> str:
        if self.entry.renew != "daily":
            return "all"
        return datetime.datetime.fromtimestamp(self._clock(), datetime.timezone.utc).date().isoformat()

    def budget(self) -> RoutooBudget | None:
        """The budget calls are held on now (a new one each UTC day with ``renew: daily``; calls in
        flight across midnight settle on the day they started); None for a key without one."""
        if self.entry.budget_usd is None:
            return None
        period = self.period()
        if period != self._period:
            self._budget, self._period = self._make_budget(self.entry, period), period
        return self._budget

    def admit(self) -> None:
        """Count one request; ``RateLimitedError`` when the last minute already holds the limit."""
        limit = self.entry.requests_per_minute
        if limit is None:
            return
        if self._window is not None:  # counted for every worker sharing the window
            wait = self._window.admit(self.name, limit)
            if wait is not None:
                raise RateLimitedError(f"key {self.name!r} is limited to {limit} requests per minute", wait)
            return
        now = self._clock()
        while self._requests and self._requests[0] <= now - 60:
            self._requests.popleft()
        if len(self._requests) >= limit:
            wait = self._requests[0] + 60 - now
            raise RateLimitedError(f"key {self.name!r} is limited to {limit} requests per minute", wait)
        self._requests.append(now)


class Keyring:
    """The configured keys by digest. With no keys the server is open (``authenticate`` returns None)."""

    def __init__(self, entries: list[KeyEntry], make_budget: BudgetFactory = default_budget,
                 window: "RequestWindow | None" = None):
        self.states = {entry.sha256: KeyState(entry, make_budget, window=window) for entry in entries}

    @property
    def open(self) -> bool:
        return not self.states

    def authenticate(self, authorization: str | None) -> KeyState | None:
        """The key of an ``Authorization: Bearer <secret>`` header; ``AuthenticationError`` otherwise."""
        if self.open:
            return None
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        state = self.states.get(digest(secret.strip()))
        if state is None:
            raise AuthenticationError("invalid API key")
        return state
