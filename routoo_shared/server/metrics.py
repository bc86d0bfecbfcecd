"""Prometheus metrics of one server: calls, USD, fallbacks and cooldowns per model, latencies, budgets.

Counters and histograms live in the app's own registry (two apps in one process never mix); model
cooldowns and each key's budget are read when Prometheus scrapes. Routing and upstream latency are
measured by a LangChain callback on the routed call itself: routing ends when the chosen model's run
(tagged ``nostream``) starts, and each upstream attempt is that run, start to end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from routoo_shared.routing.health import ModelHealth
from routoo_shared.server.keys import Keyring

TAG_NOSTREAM = "nostream"  # the tag RoutooChatModel puts on the chosen model's run
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """The server's metrics; ``text()`` is the Prometheus exposition format."""

    def __init__(self, keyring: Keyring, health: ModelHealth, models: list[str]):
        self.registry = CollectorRegistry()
        self.requests = Counter("routoo_requests", "HTTP requests to /v1/chat/completions by key and status",
                                ["key", "status"], registry=self.registry)
        self.calls = Counter("routoo_calls", "routed calls answered by each model", ["model"], registry=self.registry)
        self.spent = Counter("routoo_spent_usd", "USD of the answers delivered, by the model that answered (a stream "
                             "the client left is charged to its key's budget only)", ["model"], registry=self.registry)
        self.fallbacks = Counter("routoo_fallbacks", "attempts that failed and moved the call to the next model, "
                                 "by the model that failed and the failure kind", ["model", "kind"], registry=self.registry)
        self.routing_seconds = Histogram("routoo_routing_seconds", "time from a routed call's start to its first "
                                         "upstream attempt", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.upstream_seconds = Histogram("routoo_upstream_seconds", "duration of each upstream attempt",
                                          buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_Scraped(keyring, health, models))

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def answered(self, model: str, cost_usd: float, attempts: Iterable[dict[str, Any]]) -> None:
        self.calls.labels(model).inc()
        self.spent.labels(model).inc(cost_usd)
        self.failed(attempts)

    def failed(self, attempts: Iterable[dict[str, Any]]) -> None:
        for attempt in attempts:
            if attempt.get("error") and attempt.get("kind") not in ("budget", "cooldown"):
                self.fallbacks.labels(attempt["model"], attempt.get("kind") or "provider").inc()

    def timer(self) -> "CallTimer":
        return CallTimer(self.routing_seconds.observe, self.upstream_seconds.observe)


class _Scraped:
    """Gauges read at scrape time: each model's cooldown and each key's budget."""

    def __init__(self, keyring: Keyring, health: ModelHealth, models: list[str]):
        self.keyring, self.health, self.models = keyring, health, models

    def collect(self):
        cooling = GaugeMetricFamily("routoo_model_cooldown_seconds", "seconds left in each model's cooldown", labels=["model"])
        for model in self.models:
            cooling.add_metric([model], self.health.cooling_s(model))
        yield cooling
        gauges = {name: GaugeMetricFamily(f"routoo_key_budget_{name}_usd", f"{what}, per key (this period)", labels=["key"])
                  for name, what in (("remaining", "USD left to spend"), ("spent", "USD spent"),
                                     ("reserved", "USD held by calls in flight"), ("total", "the budget"))}
        for state in self.keyring.states.values():
            budget = state.budget()
            if budget is None:
                continue
            gauges["remaining"].add_metric([state.name], budget.remaining_usd)
            gauges["spent"].add_metric([state.name], budget.spent_usd)
            gauges["reserved"].add_metric([state.name], budget.reserved_usd)
            gauges["total"].add_metric([state.name], budget.total_usd)
        yield from gauges.values()


class CallTimer(BaseCallbackHandler):
    """Times one routed call from LangChain's run events (runs inline: no executor hop)."""

    run_inline = True

    def __init__(self, routing: Callable[[float], None], upstream: Callable[[float], None]):
        self.routing, self.upstream = routing, upstream
        self.started: float | None = None
        self.attempts: dict[UUID, float] = {}

    def on_chat_model_start(self, serialized: dict, messages: list, *, run_id: UUID, tags: list[str] | None = None,
                            **kwargs: Any) -> None:
        now = time.perf_counter()
        if TAG_NOSTREAM not in (tags or []):
            self.started = self.started or now
            return
        if not self.attempts and self.started is not None:
            self.routing(now - self.started)
        self.attempts[run_id] = now

    def _ended(self, run_id: UUID) -> None:
        started = self.attempts.get(run_id)
        if started is not None:
            self.upstream(time.perf_counter() - started)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id)
