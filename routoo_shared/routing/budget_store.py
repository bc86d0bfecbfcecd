"""Where a budget's spending and holds live: in this process (the default), or in Redis for every process.

A store keeps, per budget, the USD spent, the calls settled, and the holds of calls in flight, and applies
the admission rule (``admitted_usd``) in one atomic step, so the guarantee of ``RoutooBudget`` holds for
every caller of the store: spending exceeds the total by at most one call's cost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class BudgetTotals:
    """A budget's state: USD spent and held (by ``open_holds`` calls in flight), and the calls settled."""

    spent_usd: float
    reserved_usd: float
    calls: int
    open_holds: int


@dataclass(frozen=True)
class Admission:
    """A store's answer to a reservation: ``held_usd`` (None when refused), and what was left beside how
    many open holds when it decided."""

    held_usd: float | None
    left_usd: float
    open_holds: int


def admitted_usd(expected_usd: float, worst_usd: float, left_usd: float, open_holds: int) -> float | None:
    """The hold a call gets: its worst case while that fits in what is left; else, with no other call in
    flight, its expected cost (only this call can run over); else None (refused).

    ``RedisBudgetStore``'s reserve script applies the same rule on the Redis server."""
    if worst_usd <= left_usd:
        return worst_usd
    if open_holds == 0 and expected_usd <= left_usd:
        return expected_usd
    return None


class BudgetStore(Protocol):
    """What ``RoutooBudget`` needs from a store. Hold ids are unique per call attempt."""

    shared: bool  # True when other processes see the same budget (the store may then be pickled)

    def claim(self, total_usd: float) -> None:
        """Bind the store to ``total_usd``; ``ValueError`` when a shared budget already has another total."""

    def reserve(self, hold_id: str, expected_usd: float, worst_usd: float) -> Admission:
        """Apply ``admitted_usd`` atomically and, when admitted, open the hold ``hold_id``."""

    def finish(self, hold_id: str, held_usd: float, actual_usd: float | None) -> None:
        """Close the hold: settle it at ``actual_usd`` (one call counted), or release it when None.
        Finishing a hold twice changes nothing."""

    def totals(self) -> BudgetTotals:
        """The budget's state now."""


class InProcessBudgetStore:
    """The holds and spending of one process, under a lock (the default store)."""

    shared = False

    def __init__(self) -> None:
        self.total_usd = 0.0
        self._spent = 0.0
        self._calls = 0
        self._reserved = 0.0
        self._holds: dict[str, float] = {}
        self._lock = threading.Lock()

    def claim(self, total_usd: float) -> None:
        self.total_usd = total_usd

    def reserve(self, hold_id: str, expected_usd: float, worst_usd: float) -> Admission:
        with self._lock:
            left = self.total_usd - self._spent - self._reserved
            held = admitted_usd(expected_usd, worst_usd, left, len(self._holds))
            admission = Admission(held, left, len(self._holds))
            if held is not None:
                self._holds[hold_id] = held
                self._reserved += held
            return admission

    def finish(self, hold_id: str, held_usd: float, actual_usd: float | None) -> None:
        with self._lock:
            if self._holds.pop(hold_id, None) is None:
                return
            # reset to exactly 0 when no hold is open: no float drift
            self._reserved = self._reserved - held_usd if self._holds else 0.0
            if actual_usd is not None:
                self._spent += actual_usd
                self._calls += 1

    def totals(self) -> BudgetTotals:
        with self._lock:
            return BudgetTotals(self._spent, self._reserved, self._calls, len(self._holds))
