"""Try the chosen model, then the next-best eligible ones, recording every attempt.

Both integrations drive the same loop: ``for model in attempts: ... attempts.failed(model, error)``.
An empty answer counts as a failure, so nothing empty is returned silently.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from routoo_shared.router import RoutingDecision


class Attempt(BaseModel):
    model: str
    error: str | None = None


class EmptyResponseError(RuntimeError):
    """A model returned neither text nor tool calls."""


class AllModelsFailedError(RuntimeError):
    """Every candidate that was tried raised or answered empty."""

    def __init__(self, attempts: list[Attempt]):
        lines = "; ".join(f"{a.model}: {a.error}" for a in attempts)
        super().__init__(f"all {len(attempts)} routed model(s) failed: {lines}")
        self.attempts = attempts


class FallbackAttempts:
    """Iterates over the chosen model and up to ``max_fallbacks`` next-best eligible ones."""

    def __init__(self, decision: RoutingDecision, max_fallbacks: int = 2):
        if max_fallbacks < 0:
            raise ValueError("max_fallbacks must be >= 0")
        self.order = [decision.model] + decision.fallbacks[:max_fallbacks]
        self.attempts: list[Attempt] = []
        self.answered_by: str | None = None

    def __iter__(self) -> Iterator[str]:
        for model in self.order:
            if self.answered_by is not None:
                return
            yield model
        if self.answered_by is None:
            raise AllModelsFailedError(self.attempts)

    def failed(self, model: str, error: BaseException) -> None:
        self.attempts.append(Attempt(model=model, error=f"{type(error).__name__}: {error}"))

    def succeeded(self, model: str) -> None:
        self.attempts.append(Attempt(model=model))
        self.answered_by = model

    def record(self) -> list[dict]:
        return [a.model_dump() for a in self.attempts]
