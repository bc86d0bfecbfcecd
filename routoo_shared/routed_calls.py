"""What every framework integration does around a call: settings, routing, budget, fallback record.

``RoutedCalls`` is a pydantic mixin; ``RoutooChatModel`` (LangChain) and ``RoutooLLM`` (LlamaIndex)
inherit it next to their framework's base class and only translate messages and responses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from routoo_shared.budget import Reservation, RoutooBudget
from routoo_shared.fallback import FallbackAttempts
from routoo_shared.router import Router, RoutingDecision
from routoo_shared.selector import Constraints

Result = TypeVar("Result")

SETTINGS = (
    "quality_cost_tradeoff",
    "max_cost_per_query",
    "min_quality",
    "max_latency_s",
    "allowed_models",
    "denied_models",
    "on_infeasible",
)


class RoutedCalls(BaseModel):
    """Routing settings (each overridable per call) and the per-call routing steps."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: Router
    quality_cost_tradeoff: float = Field(default=0.0, ge=0)
    max_cost_per_query: float | None = None
    min_quality: float | None = None
    max_latency_s: float | None = None
    allowed_models: list[str] | None = None
    denied_models: list[str] | None = None
    on_infeasible: Literal["raise", "relax"] = "raise"
    max_fallbacks: int = Field(default=2, ge=0, description="next-best models tried after the chosen one fails")
    budget: RoutooBudget | None = Field(default=None, description="spending shared with other chains or agents")

    def check_pool(self, given: set[str]) -> None:
        pool = set(self.router.pool.names)
        if pool != given:
            raise ValueError(
                f"models and the router's pool differ: no chat model for {sorted(pool - given)}, "
                f"no spec for {sorted(given - pool)}"
            )

    def routing_constraints(self, **overrides: Any) -> Constraints:
        return Constraints(**{name: getattr(self, name) for name in SETTINGS}).merged(**overrides)

    def route_call(self, messages: Any, kwargs: dict[str, Any], **requirements: bool) -> tuple[RoutingDecision, dict[str, Any]]:
        """The decision, and the call's kwargs without the routing settings.

        Per-call settings come in ``kwargs`` (``quality_cost_tradeoff=...``); ``model="name"``
        forces one pool model; ``requirements`` are capability flags the call needs.
        """
        if not messages:
            raise ValueError("a routed call needs at least one message")
        call = dict(kwargs)
        overrides = {name: call.pop(name) for name in tuple(Constraints.model_fields) if name in call}
        overrides.update({k: v for k, v in requirements.items() if v})
        forced = call.pop("model", None)
        if forced is not None:
            self.router.pool[forced]  # unknown model -> KeyError naming the pool
            overrides["allowed_models"] = [forced]
        decision = self.router.route(messages, budget=self.budget, **self.routing_constraints(**overrides).model_dump())
        return decision, call

    def call_with_fallback(
        self, decision: RoutingDecision, invoke: Callable[[str], Result]
    ) -> tuple[Result, FallbackAttempts, Reservation | None]:
        """``invoke(model)`` on the chosen model, then the next-best ones until one succeeds.

        Returns the result, the attempt record and the budget hold, which the caller settles
        once the real usage is known (at the end of a stream).
        """
        attempts = FallbackAttempts(decision, self.max_fallbacks)
        for name in attempts:
            reservation = self.reserve(decision, name)
            try:
                result = invoke(name)
            except Exception as error:  # the next-best candidate takes over
                self.release(reservation)
                attempts.failed(name, error)
                continue
            attempts.succeeded(name)
            return result, attempts, reservation

    async def acall_with_fallback(
        self, decision: RoutingDecision, invoke: Callable[[str], Awaitable[Result]]
    ) -> tuple[Result, FallbackAttempts, Reservation | None]:
        """The async form of ``call_with_fallback``."""
        attempts = FallbackAttempts(decision, self.max_fallbacks)
        for name in attempts:
            reservation = self.reserve(decision, name)
            try:
                result = await invoke(name)
            except Exception as error:
                self.release(reservation)
                attempts.failed(name, error)
                continue
            attempts.succeeded(name)
            return result, attempts, reservation

    def reserve(self, decision: RoutingDecision, name: str) -> Reservation | None:
        return self.budget.reserve(name, decision.candidate(name).estimated_cost_usd) if self.budget else None

    def settle(self, reservation: Reservation | None, name: str, input_tokens: int | None, output_tokens: int | None) -> None:
        """Charge the real cost when the model reported its usage, else the estimate."""
        if reservation is None:
            return
        actual = None
        if input_tokens is not None and output_tokens is not None:
            actual = self.router.pool[name].cost(input_tokens, output_tokens)
        self.budget.settle(reservation, actual)

    def release(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            self.budget.release(reservation)

    @staticmethod
    def decision_record(decision: RoutingDecision, attempts: FallbackAttempts) -> dict[str, Any]:
        """The JSON-ready record both integrations attach to responses under ``routoo``."""
        record = decision.model_dump()
        record.update(answered_by=attempts.answered_by, attempts=attempts.record(), reason=decision.explain(attempts.answered_by))
        return record
