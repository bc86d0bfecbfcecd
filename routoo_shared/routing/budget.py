"""A spending budget shared by several chains or agents, safe under threads, concurrent async calls and,
in a shared store (Redis), every process and host that names it.

The guarantee: spending exceeds ``total_usd`` by at most one call's cost, under any concurrency.
Each call brings its expected cost and its worst case (its prompt plus its output bound: the call's
``max_tokens``, else the model's ``max_output_tokens``). While the worst cases of every call in flight
fit in what is left, calls run concurrently, each holding its worst case; past that point the budget
admits one call at a time, holding its expected cost, so only that one call can run over. Every hold is
settled to the real cost or released on every exit path (success, error, timeout, cancellation,
interrupt, abandoned stream). A model that writes past its own ``max_output_tokens`` breaks the bound
by its excess. The holds and spending live in a store (``budget_store``): this process's by default,
or Redis (``routoo_shared.stores.redis_store``), where the same rule runs as one atomic script for
every process at once.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field

from routoo_shared.routing.budget_store import BudgetStore, InProcessBudgetStore


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
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class RoutooBudget:
    """Total USD for every call that holds this object; ``spent_usd`` and ``calls`` count what settled.

    ``store``: where spending and holds live: this process (None, the default), a ``redis://host:port/db``
    URL shared by every process and host that names the same budget ``name``, or a store object
    (``RedisBudgetStore``). Raises ``ValueError``/``TypeError`` for a total that is not a finite positive
    number, a URL without a ``name``, or a shared budget that already has another total.
    """

    def __init__(self, total_usd: float, store: "str | BudgetStore | None" = None, name: str | None = None):
        if checked_usd(total_usd, "a budget's total_usd") == 0:
            raise ValueError("a budget's total_usd must be positive, got 0")
        self.total_usd = float(total_usd)
        self.store = opened_store(store, name)
        self.store.claim(self.total_usd)

    def __copy__(self) -> "RoutooBudget":
        return self  # copies of a chain or an LLM share its budget

    def __deepcopy__(self, memo: dict) -> "RoutooBudget":
        return self

    def __reduce__(self):
        if not self.store.shared:
            raise TypeError(
                "a RoutooBudget cannot be pickled: its guarantee holds for the calls of one process; "
                "give each process (e.g. each ingestion worker) its own budget, or share one in Redis "
                "(RoutooBudget(total_usd, store='redis://host:6379/0', name='team-a'))"
            )
        return type(self), (self.total_usd, self.store)

    def __repr__(self) -> str:
        now = self.store.totals()
        return (
            f"RoutooBudget(total_usd={self.total_usd}, spent_usd={now.spent_usd:.6g}, "
            f"reserved_usd={now.reserved_usd:.6g}, calls={now.calls})"
        )

    @property
    def spent_usd(self) -> float:
        """USD settled by every call of this budget (in every process sharing its store)."""
        return self.store.totals().spent_usd

    @property
    def reserved_usd(self) -> float:
        """USD held by calls in flight."""
        return self.store.totals().reserved_usd

    @property
    def calls(self) -> int:
        """Calls settled."""
        return self.store.totals().calls

    @property
    def remaining_usd(self) -> float:
        """USD neither spent nor held by a call in flight (may be negative after an overshoot)."""
        now = self.store.totals()
        return self.total_usd - now.spent_usd - now.reserved_usd

    def reserve(self, model: str, expected_usd: float, worst_usd: float | None = None) -> Reservation:
        """Hold ``worst_usd`` while it fits beside every call in flight; else, with no call in flight,
        hold ``expected_usd``; else raise ``BudgetExhaustedError`` (``StoreUnavailableError``, one of
        them, when a shared store does not answer)."""
        expected_usd = checked_usd(expected_usd, f"the expected cost of {model}")
        worst_usd = max(checked_usd(expected_usd if worst_usd is None else worst_usd, f"the worst-case cost of {model}"),
                        expected_usd)
        reservation = Reservation(model, worst_usd)
        admission = self.store.reserve(reservation.id, expected_usd, worst_usd)
        if admission.held_usd is None:
            raise BudgetExhaustedError(
                f"budget exhausted: {model} may cost up to {worst_usd:.6f} USD (~{expected_usd:.6f} expected), "
                f"{max(admission.left_usd, 0):.6f} of {self.total_usd:.6f} USD left"
                + (f" and {admission.open_holds} call(s) in flight" if admission.open_holds else "")
            )
        reservation.held = admission.held_usd
        return reservation

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the hold by the real cost; a second settle or release of the same hold is a no-op."""
        actual_usd = checked_usd(actual_usd, f"the cost reported for {reservation.model}")
        self._finish(reservation, actual_usd)

    def release(self, reservation: Reservation) -> None:
        """Drop the hold of a call that cost nothing (it failed before the provider billed it)."""
        self._finish(reservation, None)

    def _finish(self, reservation: Reservation, actual_usd: float | None) -> None:
        if reservation.settled is not None:
            return
        reservation.settled = 0.0 if actual_usd is None else actual_usd
        self.store.finish(reservation.id, reservation.held, actual_usd)


def opened_store(store: "str | BudgetStore | None", name: str | None) -> "BudgetStore":
    """The store a budget keeps its state in (see ``RoutooBudget``)."""
    if store is None:
        if name is not None:
            raise ValueError("a budget's name names it in a shared store; pass store='redis://...' with it")
        return InProcessBudgetStore()
    if isinstance(store, str):
        if name is None:
            raise ValueError(f"a budget in {store} needs a name (RoutooBudget(..., store=url, name='team-a'))")
        from routoo_shared.stores.redis_store import RedisBudgetStore

        return RedisBudgetStore(store, name)
    if name is not None:
        raise ValueError("name is given with a store URL; a store object already names its budget")
    return store
