"""A spending budget shared by several chains or agents, safe under threads and concurrent async calls.

The guarantee: spending exceeds ``total_usd`` by at most one call's cost, under any concurrency.
Each call brings its expected cost and its worst case (its prompt plus its output bound: the call's
``max_tokens``, else the model's ``max_output_tokens``). While the worst cases of every call in flight
fit in what is left, calls run concurrently, each holding its worst case; past that point the budget
admits one call at a time, holding its expected cost, so only that one call can run over. Every hold is
settled to the real cost or released on every exit path (success, error, timeout, cancellation,
interrupt, abandoned stream). A model that writes past its own ``max_output_tokens`` breaks the bound
by its excess.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass


class BudgetExhaustedError(Exception):
    """The shared budget cannot pay for even the cheapest eligible model.

    An ``Exception``, not a ``RuntimeError``: LlamaIndex's ``asyncio_run`` rewrites a ``RuntimeError``
    into "Detected nested async", and this error must reach the caller by its name."""


def checked_usd(value: float, what: str) -> float:
    """``value`` as a finite, non-negative float, or ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of USD, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of USD, got {value!r}")
    return float(value)


@dataclass
class Reservation:
    """One call's hold on the budget: ``held`` USD until it is settled (``settled`` USD) or released."""

    model: str
    held: float
    settled: float | None = None


class RoutooBudget:
    """Total USD for every call that holds this object; ``spent_usd`` and ``calls`` count what settled.

    Raises ``ValueError``/``TypeError`` for a total that is not a finite positive number.
    """

    def __init__(self, total_usd: float):
        if checked_usd(total_usd, "a budget's total_usd") == 0:
            raise ValueError("a budget's total_usd must be positive, got 0")
        self.total_usd = float(total_usd)
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.calls = 0
        self._open_holds = 0  # reserved_usd is reset to exactly 0 when none is open (no float drift)
        self._lock = threading.Lock()

    def __copy__(self) -> "RoutooBudget":
        return self  # copies of a chain or an LLM share its budget

    def __deepcopy__(self, memo: dict) -> "RoutooBudget":
        return self

    def __reduce__(self):
        raise TypeError(
            "a RoutooBudget cannot be pickled: its guarantee holds for the calls of one process; "
            "give each process (e.g. each ingestion worker) its own budget"
        )

    def __repr__(self) -> str:
        return (
            f"RoutooBudget(total_usd={self.total_usd}, spent_usd={self.spent_usd:.6g}, "
            f"reserved_usd={self.reserved_usd:.6g}, calls={self.calls})"
        )

    @property
    def remaining_usd(self) -> float:
        """USD neither spent nor held by a call in flight (may be negative after an overshoot)."""
        with self._lock:
            return self.total_usd - self.spent_usd - self.reserved_usd

    def reserve(self, model: str, expected_usd: float, worst_usd: float | None = None) -> Reservation:
        """Hold ``worst_usd`` while it fits beside every call in flight; else, with no call in flight,
        hold ``expected_usd``; else raise ``BudgetExhaustedError``."""
        expected_usd = checked_usd(expected_usd, f"the expected cost of {model}")
        worst_usd = max(checked_usd(expected_usd if worst_usd is None else worst_usd, f"the worst-case cost of {model}"),
                        expected_usd)
        with self._lock:
            left = self.total_usd - self.spent_usd - self.reserved_usd
            if worst_usd <= left:
                held = worst_usd
            elif self._open_holds == 0 and expected_usd <= left:
                held = expected_usd  # the last call runs alone: only it can run over
            else:
                raise BudgetExhaustedError(
                    f"budget exhausted: {model} may cost up to {worst_usd:.6f} USD (~{expected_usd:.6f} expected), "
                    f"{max(left, 0):.6f} of {self.total_usd:.6f} USD left"
                    + (f" and {self._open_holds} call(s) in flight" if self._open_holds else "")
                )
            self.reserved_usd += held
            self._open_holds += 1
            return Reservation(model, held)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the hold by the real cost; a second settle or release of the same hold is a no-op."""
        actual_usd = checked_usd(actual_usd, f"the cost reported for {reservation.model}")
        with self._lock:
            if reservation.settled is not None:
                return
            reservation.settled = actual_usd
            self._drop(reservation)
            self.spent_usd += actual_usd
            self.calls += 1

    def release(self, reservation: Reservation) -> None:
        """Drop the hold of a call that cost nothing (it failed before the provider billed it)."""
        with self._lock:
            if reservation.settled is None:
                reservation.settled = 0.0
                self._drop(reservation)

    def _drop(self, reservation: Reservation) -> None:
        self._open_holds -= 1
        self.reserved_usd = self.reserved_usd - reservation.held if self._open_holds else 0.0
