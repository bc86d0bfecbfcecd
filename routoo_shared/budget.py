"""A spending budget shared by several chains or agents, safe under threads and concurrent async calls.

A call reserves its estimated cost before it starts and settles the real cost when it ends, so
concurrent calls never commit more than the budget; only a call whose real cost exceeds its
estimate can overshoot, and by at most that one call's difference.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


class BudgetExhaustedError(RuntimeError):
    """The shared budget cannot pay for even the cheapest eligible model."""


@dataclass
class Reservation:
    model: str
    estimated: float
    settled: float | None = None


class RoutooBudget:
    """Total USD for every call that holds this object; ``spent_usd`` and ``calls`` count what settled."""

    def __init__(self, total_usd: float):
        if total_usd <= 0:
            raise ValueError(f"a budget needs a positive total, got {total_usd}")
        self.total_usd = total_usd
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RoutooBudget(total_usd={self.total_usd}, spent_usd={self.spent_usd:.6g}, calls={self.calls})"

    @property
    def remaining_usd(self) -> float:
        with self._lock:
            return self.total_usd - self.spent_usd - self.reserved_usd

    def reserve(self, model: str, estimated_usd: float) -> Reservation:
        """Hold ``estimated_usd`` for a call, or raise if the budget cannot cover it."""
        with self._lock:
            left = self.total_usd - self.spent_usd - self.reserved_usd
            if estimated_usd > left:
                raise BudgetExhaustedError(
                    f"budget exhausted: {model} would cost ~{estimated_usd:.6f} USD, {max(left, 0):.6f} of "
                    f"{self.total_usd:.6f} USD left"
                )
            self.reserved_usd += estimated_usd
            return Reservation(model, estimated_usd)

    def settle(self, reservation: Reservation, actual_usd: float | None) -> None:
        """Replace the hold by the real cost (the estimate when the model reported no usage)."""
        with self._lock:
            if reservation.settled is not None:
                return
            reservation.settled = reservation.estimated if actual_usd is None else actual_usd
            self.reserved_usd -= reservation.estimated
            self.spent_usd += reservation.settled
            self.calls += 1

    def release(self, reservation: Reservation) -> None:
        """Drop the hold of a call that failed before it cost anything."""
        with self._lock:
            if reservation.settled is None:
                reservation.settled = 0.0
                self.reserved_usd -= reservation.estimated
