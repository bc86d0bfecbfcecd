"""Budgets, cooldowns, sticky conversations, request windows and the feedback log shared by every
process and host that points at one Redis server.

Every decision is one Lua script run on the Redis server, so no two processes can both take the last
dollar (a read-then-write from clients could). The keys of one budget share a hash tag (``{team-a}:spent``,
``{team-a}:holds``, ...), so they live on one Redis Cluster slot and one script may touch them all. Times
are the Redis server's (``TIME``), so hosts need not agree on a clock.

Holds are leases: a hold lives ``lease_s`` seconds unless the process that opened it renews it (a thread
does, every third of a lease, while the call runs), so the holds of a killed worker expire back into the
budget. Each hold has an id; settling is idempotent (a retried settle after a lost reply counts once), and
a settle that cannot reach Redis is retried until it lands, never dropped.

``redis`` is imported here only: nothing imports this module unless a Redis store is asked for.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Literal

import redis

from routoo_shared.data.feedback import FeedbackLog
from routoo_shared.data.formats import Question, write_questions
from routoo_shared.routing.budget import BudgetExhaustedError
from routoo_shared.routing.budget_store import Admission, BudgetTotals
from routoo_shared.routing.fallback import is_rate_limit, retry_after_s
from routoo_shared.routing.health import ModelHealth

log = logging.getLogger(__name__)

SETTLED_KEEP_S = 3600  # settled hold ids are remembered this long, so a late retry of a settle counts once

# KEYS: total, spent, calls, held, holds (hash id -> USD), leases (zset id -> expiry ms), settled (zset)
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_REAP = """
local dead = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now)
for _, id in ipairs(dead) do
  local amount = redis.call('HGET', KEYS[5], id)
  if amount then
    redis.call('HDEL', KEYS[5], id)
    redis.call('INCRBYFLOAT', KEYS[4], '-' .. amount)
  end
end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now) end
local open = redis.call('HLEN', KEYS[5])
if open == 0 then redis.call('SET', KEYS[4], '0') end
"""
_STATE = """
local spent = tonumber(redis.call('GET', KEYS[2]) or '0')
local held = tonumber(redis.call('GET', KEYS[4]) or '0')
"""
CLAIM = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""
# ARGV: hold id, expected USD, worst USD, lease ms. The rule of budget_store.admitted_usd.
RESERVE = _NOW + _REAP + _STATE + """
local total = tonumber(redis.call('GET', KEYS[1]))
if not total then
  return redis.error_reply('ROUTOO_NO_BUDGET the budget is not in Redis (deleted, or Redis restarted without persistence)')
end
local left = total - spent - held
local amount = nil
if tonumber(ARGV[3]) <= left then amount = ARGV[3]
elseif open == 0 and tonumber(ARGV[2]) <= left then amount = ARGV[2] end
local answer = {amount or false, string.format('%.17g', left), open}
if amount then
  redis.call('HSET', KEYS[5], ARGV[1], amount)
  redis.call('INCRBYFLOAT', KEYS[4], amount)
  redis.call('ZADD', KEYS[6], now + tonumber(ARGV[4]), ARGV[1])
end
return answer
"""
# ARGV: hold id, actual USD ('' to release), settled-id retention ms. Returns 1, or 0 when already finished.
FINISH = _NOW + """
if redis.call('ZSCORE', KEYS[7], ARGV[1]) then return 0 end
local amount = redis.call('HGET', KEYS[5], ARGV[1])
if amount then
  redis.call('HDEL', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
  if redis.call('HLEN', KEYS[5]) == 0 then redis.call('SET', KEYS[4], '0')
  else redis.call('INCRBYFLOAT', KEYS[4], '-' .. amount) end
end
if ARGV[2] ~= '' then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[2])
  redis.call('INCR', KEYS[3])
end
redis.call('ZADD', KEYS[7], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - tonumber(ARGV[3]))
return 1
"""
# ARGV: lease ms, then (hold id, held USD) pairs. A hold reaped while its call still ran (the process
# stalled past a lease, or Redis was out of reach) is held again: the call is running and will spend.
RENEW = _NOW + """
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if not redis.call('ZSCORE', KEYS[7], id) then
    if redis.call('HSETNX', KEYS[5], id, ARGV[i + 1]) == 1 then
      redis.call('INCRBYFLOAT', KEYS[4], ARGV[i + 1])
    end
    redis.call('ZADD', KEYS[6], now + tonumber(ARGV[1]), id)
  end
end
return 1
"""
TOTALS = _NOW + _REAP + _STATE + """
return {string.format('%.17g', spent), string.format('%.17g', held), tonumber(redis.call('GET', KEYS[3]) or '0'), open}
"""


class StoreUnavailableError(BudgetExhaustedError):
    """The shared store (Redis) did not answer: the call is refused rather than spent unaccounted."""


def checked_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in "{}"):
        raise ValueError(f"{what} must be a non-empty string without braces, got {name!r}")
    return name


def connect(url: str) -> redis.Redis:
    """A client for ``redis://host:port/db`` (``rediss://`` for TLS; ``?socket_timeout=...`` in seconds).
    ``ValueError`` for a URL redis-py cannot read."""
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"a Redis store is named by a redis://host:port/db URL, got {url!r}")
    options = {} if "socket_timeout" in url else {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    return redis.Redis.from_url(url, **options)


class NamedClient:
    """A client of the Redis server at ``url`` for the state named ``name`` (no braces); pickles (to
    worker processes) by the two, and reconnects there."""

    def __init__(self, url: str, name: str):
        self.url, self.name = url, checked_name(name, f"a {type(self).__name__}'s name")
        self.client = connect(url)

    def __reduce__(self):
        return type(self), (self.url, self.name)


class RedisBudgetStore:
    """One named budget in Redis, shared by every process that opens it (``RoutooBudget(store=...)``).

    ``url``: ``redis://host:port/db``. ``name``: the budget's name, also its hash tag (no braces).
    ``lease_s``: how long a hold outlives the process that stopped renewing it (seconds).
    ``on_unavailable``: when Redis does not answer a reservation, ``"refuse"`` raises
    ``StoreUnavailableError`` (fail closed, the default); ``"admit"`` lets the call run holding its worst
    case in this process, and its hold and spending reach Redis once it answers again (the guarantee is
    suspended while Redis is away; nothing goes uncounted).
    """

    shared = True

    def __init__(
        self, url: str, name: str, lease_s: float = 15.0, on_unavailable: Literal["refuse", "admit"] = "refuse"
    ):
        if not (isinstance(lease_s, (int, float)) and 0 < lease_s < float("inf")):
            raise ValueError(f"lease_s must be a positive number of seconds, got {lease_s!r}")
        if on_unavailable not in ("refuse", "admit"):
            raise ValueError(f"on_unavailable must be 'refuse' or 'admit', got {on_unavailable!r}")
        self.url, self.name = url, checked_name(name, "a budget's name")
        self.lease_s, self.on_unavailable = float(lease_s), on_unavailable
        self.client = connect(url)
        self.keys = [f"{{{name}}}:{part}" for part in ("total", "spent", "calls", "held", "holds", "leases", "settled")]
        self._scripts = {s: self.client.register_script(text) for s, text in
                         (("claim", CLAIM), ("reserve", RESERVE), ("finish", FINISH), ("renew", RENEW), ("totals", TOTALS))}
        self._open: dict[str, float] = {}  # this process's holds in flight: renewed until finished
        self._unfinished: dict[str, tuple[float, float | None]] = {}  # finishes Redis has not confirmed
        self._lock = threading.Lock()
        self._renewer: _Renewer | None = None

    def __reduce__(self):
        return type(self), (self.url, self.name, self.lease_s, self.on_unavailable)

    def __repr__(self) -> str:
        return f"RedisBudgetStore({self.url!r}, name={self.name!r}, lease_s={self.lease_s})"

    def _run(self, script: str, *args) -> object:
        return self._scripts[script](keys=self.keys, args=list(args))

    def claim(self, total_usd: float) -> None:
        try:
            stored = float(self._run("claim", repr(total_usd)))
        except redis.RedisError as error:
            raise StoreUnavailableError(f"the budget store {self.url} did not answer: {error}") from error
        if stored != total_usd:
            raise ValueError(
                f"budget {self.name!r} in {self.url} has total_usd={stored!r}, not {total_usd!r}: "
                "every process sharing a budget must give it the same total (or use another name)"
            )

    def reserve(self, hold_id: str, expected_usd: float, worst_usd: float) -> Admission:
        try:
            amount, left, open_holds = self._run("reserve", hold_id, repr(expected_usd), repr(worst_usd),
                                                 int(self.lease_s * 1000))
        except redis.ResponseError as error:  # Redis answered, and the budget is not there: never admitted
            raise StoreUnavailableError(f"budget {self.name!r} in {self.url}: {error}") from error
        except redis.RedisError as error:
            if self.on_unavailable == "refuse":
                raise StoreUnavailableError(
                    f"the budget store {self.url} did not answer, so no call is admitted on budget {self.name!r} "
                    f"(fail closed; on_unavailable='admit' lets calls run and counts them later): {error}"
                ) from error
            log.warning("budget store %s unreachable; admitting %s holding %.6g USD", self.url, hold_id, worst_usd)
            amount, left, open_holds = repr(worst_usd), float("nan"), -1
        held = None if amount is None else float(amount)
        if held is not None:
            with self._lock:
                self._open[hold_id] = held
            self._renewing()
        return Admission(held, float(left), int(open_holds))

    def finish(self, hold_id: str, held_usd: float, actual_usd: float | None) -> None:
        with self._lock:
            self._open.pop(hold_id, None)
            self._unfinished[hold_id] = (held_usd, actual_usd)
        self._flush(hold_id)

    def _flush(self, hold_id: str) -> bool:
        """Send one finish to Redis; it stays queued (and its hold renewed) until Redis confirms it."""
        with self._lock:
            pending = self._unfinished.get(hold_id)
        if pending is None:
            return True
        actual = "" if pending[1] is None else repr(pending[1])
        try:
            self._run("finish", hold_id, actual, SETTLED_KEEP_S * 1000)
        except redis.RedisError as error:
            log.warning("budget store %s unreachable; settling %s later: %s", self.url, hold_id, error)
            self._renewing()
            return False
        with self._lock:
            self._unfinished.pop(hold_id, None)
        return True

    def renew(self) -> None:
        """Extend the lease of every hold this process has open (and of finishes not yet confirmed, which
        keep holding until they land), then retry those finishes. The renewal thread calls it."""
        with self._lock:
            holds = {**self._open, **{h: held for h, (held, _) in self._unfinished.items()}}
            unfinished = list(self._unfinished)
        if holds:
            pairs = [value for hold_id, held in holds.items() for value in (hold_id, repr(held))]
            self._run("renew", int(self.lease_s * 1000), *pairs)
        for hold_id in unfinished:
            self._flush(hold_id)

    def totals(self) -> BudgetTotals:
        try:
            spent, held, calls, open_holds = self._run("totals")
        except redis.RedisError as error:
            raise StoreUnavailableError(f"the budget store {self.url} did not answer: {error}") from error
        return BudgetTotals(float(spent), float(held), int(calls), int(open_holds))

    def delete(self) -> None:
        """Remove the budget from Redis (its total, spending and holds)."""
        self.client.delete(*self.keys)

    def _renewing(self) -> None:
        with self._lock:
            if self._renewer is None or not self._renewer.alive():
                self._renewer = _Renewer(self)

    def _idle(self) -> bool:
        """True (and the renewer forgotten) when this process has nothing left to renew or send."""
        with self._lock:
            if self._open or self._unfinished:
                return False
            self._renewer = None
            return True


class _Renewer:
    """A daemon thread renewing one store's leases every third of a lease while it has holds open
    (started again in a forked child, where threads do not survive)."""

    def __init__(self, store: RedisBudgetStore):
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._loop, args=(weakref.ref(store), store.lease_s / 3),
                                       name=f"routoo-lease-{store.name}", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.thread.is_alive()

    def _loop(self, store_ref: weakref.ref, every_s: float) -> None:
        while True:
            time.sleep(every_s)
            store = store_ref()
            if store is None or store._idle():
                return
            try:
                store.renew()
            except redis.RedisError as error:
                log.warning("could not renew budget holds in %s: %s", store.url, error)
            del store


# KEYS: fails (hash model -> consecutive failures), until (hash model -> cooldown end, server ms)
# ARGV: model, rest ms for a rate limit ('' for another failure), allowed fails, cooldown ms
HEALTH_FAILED = _NOW + """
local fails = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local rest = 0
if ARGV[2] ~= '' then rest = tonumber(ARGV[2])
elseif fails >= tonumber(ARGV[3]) then rest = tonumber(ARGV[4]) end
if rest > 0 then
  local deadline = math.max(tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0'), now + rest)
  redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', deadline))
end
return fails
"""
# ARGV: models. Returns each one's cooldown left, ms (0 when healthy).
HEALTH_COOLING = _NOW + """
local left = {}
for i, model in ipairs(ARGV) do
  left[i] = math.max(tonumber(redis.call('HGET', KEYS[2], model) or '0') - now, 0)
end
return left
"""


class RedisModelHealth(ModelHealth):
    """``ModelHealth`` whose failure counts and cooldowns live in Redis: a model cooling in one process
    rests in every process at their next call (each call reads the cooldowns: one round trip).

    ``name`` separates deployments sharing one Redis (no braces). A failure Redis cannot record is
    logged and counted in no process; a cooldown Redis cannot answer counts as none (health never
    refuses a call: fallback still guards it)."""

    def __init__(self, url: str, allowed_fails: int = 3, cooldown_s: float = 60.0, name: str = "routoo"):
        super().__init__(allowed_fails, cooldown_s)
        self.url, self.name = url, checked_name(name, "a health store's name")
        self.client = connect(url)
        self.keys = [f"{{health:{name}}}:fails", f"{{health:{name}}}:until"]
        self._failed = self.client.register_script(HEALTH_FAILED)
        self._cooling = self.client.register_script(HEALTH_COOLING)

    def __reduce__(self):
        return type(self), (self.url, self.allowed_fails, self.cooldown_s, self.name)

    def failed(self, model: str, error: BaseException) -> None:
        rest = (retry_after_s(error) or self.cooldown_s) if is_rate_limit(error) else None
        try:
            self._failed(keys=self.keys, args=[model, "" if rest is None else int(rest * 1000),
                                               self.allowed_fails, int(self.cooldown_s * 1000)])
        except redis.RedisError as store_error:
            log.warning("health store %s unreachable; %s's failure not recorded: %s", self.url, model, store_error)

    def succeeded(self, model: str) -> None:
        try:
            with self.client.pipeline() as both:
                both.hdel(self.keys[0], model).hdel(self.keys[1], model).execute()
        except redis.RedisError as store_error:
            log.warning("health store %s unreachable; %s's success not recorded: %s", self.url, model, store_error)

    def cooling(self, models: list[str]) -> dict[str, float]:
        try:
            left = self._cooling(keys=self.keys, args=list(models)) if models else []
        except redis.RedisError as store_error:
            log.warning("health store %s unreachable; no cooldowns known: %s", self.url, store_error)
            left = [0] * len(models)
        return {model: int(ms) / 1000 for model, ms in zip(models, left)}


class RedisConversationStore(NamedClient):
    """Sticky routing's conversations in Redis (the ``ConversationStore`` of ``RoutedCalls.conversations``),
    so every worker keeps a thread on one model. Each key expires ``ttl_s`` after its last turn. Redis
    out of reach: a lookup finds nothing (the call is routed afresh) and a turn is not remembered, both
    logged; no call fails for it."""

    def __init__(self, url: str, name: str = "routoo"):
        super().__init__(url, name)

    def _key(self, key: str) -> str:
        return f"routoo:conversations:{self.name}:{key}"

    def get(self, key: str) -> str | None:
        try:
            model = self.client.get(self._key(key))
        except redis.RedisError as error:
            log.warning("conversation store %s unreachable; routing afresh: %s", self.url, error)
            return None
        return None if model is None else model.decode()

    def set(self, key: str, model: str, ttl_s: float) -> None:
        try:
            self.client.set(self._key(key), model, px=max(int(ttl_s * 1000), 1))
        except redis.RedisError as error:
            log.warning("conversation store %s unreachable; %s not kept: %s", self.url, key, error)


# KEYS: the key's request times (zset member -> server ms). ARGV: limit, member.
# Returns -1 (admitted), else ms until the oldest request leaves the minute.
RATE_ADMIT = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + 60000 - now
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], 61000)
return -1
"""


class RedisRequestWindow(NamedClient):
    """Each API key's requests over the last minute, counted in Redis for every worker of
    ``routoo serve --workers N`` (one atomic script a request). Redis out of reach: the request is
    admitted and the miss logged (budgets, not rate limits, guard the money)."""

    def __init__(self, url: str, name: str = "routoo"):
        super().__init__(url, name)
        self._admit = self.client.register_script(RATE_ADMIT)

    def admit(self, key: str, limit: int) -> float | None:
        """None when ``key`` may send one more request now (counted), else the seconds to wait."""
        try:
            wait_ms = self._admit(keys=[f"routoo:rate:{self.name}:{key}"], args=[limit, uuid.uuid4().hex])
        except redis.RedisError as error:
            log.warning("request window %s unreachable; admitting a request of %s: %s", self.url, key, error)
            return None
        return None if int(wait_ms) < 0 else int(wait_ms) / 1000


class RedisFeedbackLog(NamedClient, FeedbackLog):
    """``FeedbackLog`` on the Redis stream ``name`` (``XADD``), which every worker and host appends to;
    ``export`` writes it as the questions file ``routoo train --train`` reads. A row Redis does not
    take raises the client's ``redis.RedisError`` (feedback is never dropped silently)."""

    def __init__(self, url: str, name: str = "routoo-feedback"):
        super().__init__(url, name)

    def _append(self, question: Question) -> None:
        self.client.xadd(self.name, {"row": question.model_dump_json(exclude_none=True)})

    def read(self) -> list[Question]:
        """Every recorded row, oldest first."""
        return [Question.model_validate_json(fields[b"row"]) for _, fields in self.client.xrange(self.name)]

    def export(self, path: str | Path) -> int:
        """Write every row to ``path`` (JSONL, the dataset format); how many."""
        rows = self.read()
        write_questions(rows, Path(path))
        return len(rows)
