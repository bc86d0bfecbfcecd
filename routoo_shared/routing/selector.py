"""Cost-aware selection over a predicted quality matrix (prompts x models).

Every mode reads the same two matrices: predicted quality P and estimated cost C. Hard limits
(allow/deny, capabilities, context, latency, cost ceiling) mask models out; the mode then picks
among what is left. The batch-budget mode is the paper's setting: a multiple-choice knapsack
solved by a Lagrangian search over the price of a dollar, then a greedy use of the leftover.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from routoo_shared.routing.budget import checked_usd
from routoo_shared.routing.pool import ModelPool

# Order matters: a model masked by several constraints is reported under the first.
CONSTRAINT_ORDER = (
    "invalid_prediction",
    "allowed_models",
    "denied_models",
    "requires_tools",
    "requires_structured_output",
    "requires_streaming",
    "requires_vision",
    "context_window",
    "max_latency_s",
    "max_cost_per_query",
)
HARD_CONSTRAINTS = CONSTRAINT_ORDER[:8]  # calling an excluded model would fail outright (or is unjudgeable)


class InfeasibleRoutingError(ValueError):
    """No model satisfies the request; ``constraint`` names the one that emptied the candidate set."""

    def __init__(self, constraint: str, message: str):
        super().__init__(message)
        self.constraint = constraint


class Constraints(BaseModel):
    """Per-call routing settings. Unset fields do not constrain; NaN and infinite values are refused."""

    model_config = ConfigDict(allow_inf_nan=False)

    quality_cost_tradeoff: float = Field(
        default=0.0,
        ge=0,
        description="quality given up per unit of cost, where 1 unit = the priciest eligible model's cost "
        "for this prompt; 0 picks the best predicted quality",
    )
    max_cost_per_query: float | None = Field(default=None, ge=0, description="USD ceiling per call")
    min_quality: float | None = Field(default=None, ge=0, le=1, description="cheapest model predicted above this")
    max_latency_s: float | None = Field(default=None, gt=0)
    allowed_models: list[str] | None = None
    denied_models: list[str] | None = None
    requires_tools: bool = False
    requires_structured_output: bool = False
    requires_streaming: bool = False
    requires_vision: bool = False
    on_infeasible: Literal["raise", "relax"] = Field(
        default="raise",
        description="'relax' drops the soft limits (latency, cost ceiling, quality floor) when nothing "
        "meets them, keeping the hard ones; the decision then says what was relaxed",
    )

    def merged(self, **overrides) -> "Constraints":
        """A copy with ``overrides`` applied (None values are ignored); unknown names are an error."""
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"unknown routing setting(s) {unknown}; known: {sorted(type(self).model_fields)}")
        values = {k: v for k, v in overrides.items() if v is not None}
        return type(self).model_validate({**self.model_dump(), **values})


class Selection(BaseModel, arbitrary_types_allowed=True):
    """The outcome for a batch: chosen column per prompt, each model's rank score and exclusion reason."""

    chosen: np.ndarray  # (N,) int
    scores: np.ndarray  # (N, M): higher is better for the active mode; -inf where excluded
    excluded_by: np.ndarray  # (N, M) object: constraint name or None
    binding: list[str | None]  # per prompt: the setting that moved the choice off the best-quality model


def capability_masks(pool: ModelPool, constraints: Constraints) -> dict[str, np.ndarray]:
    """Boolean (M,) masks of the prompt-independent limits: allow/deny lists and capabilities."""
    names = pool.names
    masks: dict[str, np.ndarray] = {}
    for setting in ("allowed_models", "denied_models"):
        listed = getattr(constraints, setting)
        if listed is None:
            continue
        unknown = sorted(set(listed) - set(names))
        if unknown:
            raise KeyError(f"{setting} names unknown model(s) {unknown}; the pool has {names}")
        inside = np.isin(names, listed)
        masks[setting] = inside if setting == "allowed_models" else ~inside
    for setting, flag in (
        ("requires_tools", "supports_tools"),
        ("requires_structured_output", "supports_structured_output"),
        ("requires_streaming", "supports_streaming"),
        ("requires_vision", "supports_vision"),
    ):
        if getattr(constraints, setting):  # a capability not declared (None) does not exclude
            masks[setting] = np.array([getattr(m, flag) is not False for m in pool.models])
    return masks


def constraint_masks(
    pool: ModelPool, input_tokens: np.ndarray, cost: np.ndarray, constraints: Constraints, quality: np.ndarray
) -> dict[str, np.ndarray]:
    """Boolean (N, M) masks, True where the model is allowed, for each set constraint.

    A non-finite predicted quality (a corrupt predictor) excludes its model as ``invalid_prediction``.
    """
    ones = np.ones((len(input_tokens), len(pool)), dtype=bool)
    masks = {name: ones & mask[None, :] for name, mask in capability_masks(pool, constraints).items()}
    masks["invalid_prediction"] = np.isfinite(quality)
    tokens = np.asarray(input_tokens, dtype=float)[:, None]
    window = np.array([m.context_window for m in pool.models])[None, :]
    expected_out = np.array([m.expected_output_tokens for m in pool.models])[None, :]
    masks["context_window"] = tokens + expected_out <= window
    if constraints.max_latency_s is not None:
        ttft = np.array([m.ttft_s for m in pool.models])[None, :]
        prefill = np.array([m.prefill_tokens_per_s for m in pool.models])[None, :]
        speed = np.array([m.tokens_per_s for m in pool.models])[None, :]
        masks["max_latency_s"] = ttft + tokens / prefill + expected_out / speed <= constraints.max_latency_s
    if constraints.max_cost_per_query is not None:
        masks["max_cost_per_query"] = cost <= constraints.max_cost_per_query
    return masks


def _first_exclusion(masks: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    excluded_by = np.full(shape, None, dtype=object)
    for name in reversed(CONSTRAINT_ORDER):  # earlier constraints overwrite later ones
        if name in masks:
            excluded_by[~masks[name]] = name
    return excluded_by


class Selector:
    """Picks one model per prompt from predicted quality and estimated cost."""

    def __init__(self, pool: ModelPool, constraints: Constraints | None = None):
        self.pool = pool
        self.constraints = constraints or Constraints()

    def select(
        self, quality: np.ndarray, input_tokens: np.ndarray, constraints: Constraints | None = None
    ) -> Selection:
        """Per-prompt choice under ``constraints`` (trade-off, ceiling, floor and hard limits)."""
        constraints = constraints or self.constraints
        quality = np.atleast_2d(np.asarray(quality, dtype=float))
        cost = self.pool.cost_matrix(input_tokens)
        masks = constraint_masks(self.pool, input_tokens, cost, constraints, quality)
        excluded_by = _first_exclusion(masks, quality.shape)
        feasible = np.equal(excluded_by, None)
        hard_feasible = np.all([masks[n] for n in HARD_CONSTRAINTS if n in masks], axis=0)

        for row in np.flatnonzero(~hard_feasible.any(axis=1)):
            raise InfeasibleRoutingError(
                excluded_by[row, 0] if len(set(excluded_by[row])) == 1 else "hard constraints",
                f"no model can take prompt {row}: " + _explain(self.pool.names, excluded_by[row]),
            )
        quality = np.where(np.isfinite(quality), quality, 0.0)  # excluded above; keeps arithmetic clean
        scores, floor_met = self._scores(quality, cost, feasible, constraints)
        binding: list[str | None] = [None] * len(quality)
        empty = ~(feasible & floor_met).any(axis=1)
        for row in np.flatnonzero(empty):
            reason = "min_quality" if feasible[row].any() else _soft_culprit(excluded_by[row], hard_feasible[row])
            if constraints.on_infeasible == "raise":
                raise InfeasibleRoutingError(
                    reason,
                    f"no model satisfies {reason} for prompt {row}: " + _explain(self.pool.names, excluded_by[row])
                    + (f"; best predicted quality is {quality[row][hard_feasible[row]].max():.3f}"
                       if reason == "min_quality" else "")
                    + " (pass on_infeasible='relax' to fall back to the hard limits only)",
                )
            relaxed = constraints.model_copy(update={"max_latency_s": None, "max_cost_per_query": None, "min_quality": None})
            scores[row], _ = self._scores(quality[row : row + 1], cost[row : row + 1], hard_feasible[row : row + 1], relaxed)
            binding[row] = f"relaxed:{reason}"
        chosen = scores.argmax(axis=1)
        best_quality = quality.argmax(axis=1)  # unconstrained: any setting that moved us off it is named
        for row in range(len(quality)):
            if binding[row] is not None or chosen[row] == best_quality[row]:
                continue
            blocker = excluded_by[row, best_quality[row]]
            if blocker is not None:
                binding[row] = blocker
            elif constraints.min_quality is not None:
                binding[row] = "min_quality"
            else:
                binding[row] = "quality_cost_tradeoff"
        return Selection(chosen=chosen, scores=scores, excluded_by=excluded_by, binding=binding)

    @staticmethod
    def _scores(
        quality: np.ndarray, cost: np.ndarray, feasible: np.ndarray, constraints: Constraints
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rank scores (higher wins) and where the quality floor holds."""
        if constraints.min_quality is not None:
            floor_met = quality >= constraints.min_quality
            # cheapest above the floor; among equal costs, the better one
            scores = -cost + 1e-9 * quality
            scores = np.where(floor_met, scores, scores - 1e6)  # keeps a ranking of the rest
        else:
            floor_met = np.ones_like(feasible)
            reference = np.where(feasible, cost, 0).max(axis=1, keepdims=True)
            reference = np.where(reference > 0, reference, 1.0)
            scores = quality - constraints.quality_cost_tradeoff * cost / reference
        return np.where(feasible, scores, -np.inf), floor_met

    def calibrate_tradeoff(
        self, quality: np.ndarray, input_tokens: np.ndarray, target_cost_per_query: float, iterations: int = 50
    ) -> float:
        """The online form of the budget: the trade-off that spends ``target_cost_per_query`` on average
        over held-out (dev) prompts; use it for the prompts that arrive one at a time later."""
        cost = self.pool.cost_matrix(input_tokens)

        def mean_cost(tradeoff: float) -> float:
            chosen = self.select(quality, input_tokens, self.constraints.merged(quality_cost_tradeoff=tradeoff)).chosen
            return float(cost[np.arange(len(chosen)), chosen].mean())

        low, high = 0.0, 1.0
        if mean_cost(low) <= target_cost_per_query:
            return low
        while mean_cost(high) > target_cost_per_query:
            high *= 2
            if high > 1e6:
                raise InfeasibleRoutingError(
                    "target_cost_per_query",
                    f"target {target_cost_per_query:.3g} USD per query is below what the cheapest models cost",
                )
        for _ in range(iterations):
            middle = (low + high) / 2
            low, high = (low, middle) if mean_cost(middle) <= target_cost_per_query else (middle, high)
        return high


class PlanTotals(BaseModel):
    """A budget plan's totals: USD spent, predicted quality, the LP relaxation's bound and the multiplier."""

    spent: float
    predicted_quality: float
    lp_bound: float
    price_of_dollar: float

    @property
    def gap_to_lp(self) -> float:
        """Relative shortfall against the LP optimum (an upper bound on the integer optimum)."""
        return max(0.0, (self.lp_bound - self.predicted_quality) / max(self.lp_bound, 1e-12))


class BudgetPlan(PlanTotals, arbitrary_types_allowed=True):
    """A batch assignment under a total budget, with its distance to the LP relaxation's optimum."""

    chosen: np.ndarray


def plan_budget(quality: np.ndarray, cost: np.ndarray, budget: float, feasible: np.ndarray | None = None) -> BudgetPlan:
    """Maximise total predicted quality with total cost <= ``budget`` (multiple-choice knapsack).

    A bisection on the Lagrange multiplier mu finds the cheapest-to-feasible assignment
    argmax(P - mu C); the leftover budget then buys the best quality-per-dollar upgrades.
    The LP bound is the Lagrangian dual min_mu sum max(P - mu C) + mu B. ``budget`` (USD) must be a
    finite, non-negative number (TypeError / ValueError otherwise).
    """
    budget = checked_usd(budget, "budget_usd")
    quality = np.asarray(quality, dtype=float)
    cost = np.asarray(cost, dtype=float)
    feasible = np.ones_like(quality, dtype=bool) if feasible is None else feasible
    if not feasible.any(axis=1).all():
        raise InfeasibleRoutingError("hard constraints", "some prompt has no eligible model")
    rows = np.arange(len(quality))
    masked_quality = np.where(feasible, quality, -np.inf)
    minimum = np.where(feasible, cost, np.inf).min(axis=1).sum()
    if budget < minimum - 1e-12:
        raise InfeasibleRoutingError(
            "budget", f"budget {budget:.6g} USD is below {minimum:.6g} USD, the cost of the cheapest eligible models"
        )

    def assign(mu: float) -> np.ndarray:
        score = masked_quality - mu * cost
        best = score.max(axis=1, keepdims=True)
        ties = np.isclose(score, best, rtol=0, atol=1e-12) & feasible
        return np.where(ties, cost, np.inf).argmin(axis=1)  # among ties, the cheaper

    def dual(mu: float) -> float:
        return float((masked_quality - mu * cost).max(axis=1).sum() + mu * budget)

    low, high = 0.0, 1.0
    if cost[rows, assign(low)].sum() <= budget:
        high = 0.0
    else:
        while cost[rows, assign(high)].sum() > budget and high < 1e12:
            low, high = high, high * 4
        for _ in range(100):
            middle = (low + high) / 2
            low, high = (low, middle) if cost[rows, assign(middle)].sum() <= budget else (middle, high)
    chosen = assign(high)
    if cost[rows, chosen].sum() > budget:  # mu large enough still ties on expensive; take the cheapest
        chosen = np.where(feasible, cost, np.inf).argmin(axis=1)
    chosen = _spend_leftover(masked_quality, cost, chosen, budget - cost[rows, chosen].sum())
    return BudgetPlan(
        chosen=chosen,
        spent=float(cost[rows, chosen].sum()),
        predicted_quality=float(quality[rows, chosen].sum()),
        lp_bound=min(dual(low), dual(high)),
        price_of_dollar=high,
    )


def _spend_leftover(quality: np.ndarray, cost: np.ndarray, chosen: np.ndarray, leftover: float) -> np.ndarray:
    """Greedy upgrades by quality gained per dollar while the leftover budget allows."""
    rows = np.arange(len(quality))
    chosen = chosen.copy()
    for _ in range(len(quality)):
        gain = quality - quality[rows, chosen][:, None]
        extra = cost - cost[rows, chosen][:, None]
        usable = (gain > 0) & (extra <= leftover) & np.isfinite(gain)
        if not usable.any():
            break
        ratio = np.where(usable, gain / np.maximum(extra, 1e-15), -np.inf)
        row, column = np.unravel_index(ratio.argmax(), ratio.shape)
        leftover -= extra[row, column]
        chosen[row] = column
    return chosen


def _explain(names: list[str], excluded_by: np.ndarray) -> str:
    return ", ".join(f"{name} excluded by {reason}" for name, reason in zip(names, excluded_by) if reason)


def _soft_culprit(excluded_by: np.ndarray, hard_feasible: np.ndarray) -> str:
    reasons = [r for r, ok in zip(excluded_by, hard_feasible) if ok and r]
    return max(set(reasons), key=reasons.count) if reasons else "constraints"
