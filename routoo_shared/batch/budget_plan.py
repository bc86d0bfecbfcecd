"""A total budget planned over prompts held in shards: the multiplier and the fill found on sums per shard.

``plan_budget`` (``routoo_shared.routing.selector``) plans a batch held in memory. Over millions of prompts
the same plan is found from sums that each shard computes on its own: for a grid of multipliers mu, the
spend and the Lagrangian dual of ``argmax(P - mu C)`` (each pass narrows the grid around the multiplier
where spend crosses the budget); then the leftover buys the best quality-per-dollar upgrades, taken by a
ratio threshold found the same way. Only grids of sums cross between shards, so memory stays bounded
by one shard whatever the batch size, and the plan's guarantee is unchanged: total cost <= budget. The
LP bound is the least dual seen (every dual value bounds the optimum), so the reported gap is an upper
bound on the true one.

Shards are dicts of arrays: ``quality``, ``cost`` (prompts x models, USD) and ``feasible`` (bool).
A ``Passes`` runs a function over every shard and returns its results, one row a shard: in this
process (``routoo_shared.batch.engines.LocalEngine``) or on Ray.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from routoo_shared.routing.budget import checked_usd
from routoo_shared.routing.selector import InfeasibleRoutingError, PlanTotals

Shard = dict[str, np.ndarray]
Passes = Callable[[Callable[[Shard], dict[str, np.ndarray]]], list[dict[str, np.ndarray]]]
GRID = 64  # multipliers (or ratio thresholds) tried per pass
PASSES = 6  # grid refinements: the bracket shrinks ~GRID-fold each
BLOCK_ROWS = 1024  # rows a pass evaluates at once: memory ~ BLOCK_ROWS x models x GRID floats


class ShardedPlan(PlanTotals):
    """What every shard needs to choose its rows' models (``choose``), and the plan's totals; the
    multiplier is ``price_of_dollar`` (quality given up per USD saved)."""

    upgrade_ratio: float  # rows whose best upgrade buys at least this quality per USD take it (inf: none)


def assign(shard: Shard, mu: np.ndarray) -> np.ndarray:
    """Rows x multipliers: each row's ``argmax(P - mu C)`` among feasible models, the cheaper on ties
    (``plan_budget``'s rule)."""
    quality, cost, feasible = shard["quality"], shard["cost"], shard["feasible"]
    score = np.where(feasible, quality, -np.inf)[:, :, None] - mu[None, None, :] * cost[:, :, None]
    best = score.max(axis=1, keepdims=True)
    ties = np.isclose(score, best, rtol=0, atol=1e-12) & feasible[:, :, None]
    return np.where(ties, cost[:, :, None], np.inf).argmin(axis=1)


def _at(matrix: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    return np.take_along_axis(matrix, chosen, axis=1) if chosen.ndim == 2 else matrix[np.arange(len(matrix)), chosen]


def best_upgrade(shard: Shard, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the feasible upgrade from ``chosen`` with the most quality per extra USD: (ratio, extra
    USD, quality gained, model); ratio -inf where no model is better."""
    quality, cost = shard["quality"], shard["cost"]
    gain = quality - _at(quality, chosen)[:, None]
    extra = cost - _at(cost, chosen)[:, None]
    usable = shard["feasible"] & (gain > 0)
    ratio = np.where(usable, gain / np.maximum(extra, 1e-15), -np.inf)
    column = ratio.argmax(axis=1)
    return _at(ratio, column), _at(extra, column), _at(gain, column), column


def choose(shard: Shard, plan: ShardedPlan) -> np.ndarray:
    """The model index the plan gives each row of ``shard``."""
    chosen = assign(shard, np.array([plan.price_of_dollar]))[:, 0]
    ratio, _, _, column = best_upgrade(shard, chosen)
    return np.where(ratio >= plan.upgrade_ratio, column, chosen)


def _summed(passes: Passes, each: Callable[[Shard], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``each``'s sums over every shard, computed BLOCK_ROWS rows at a time (the grid multiplies a block's
    size by GRID) and added up (engines may hand back several shards' rows at once)."""

    def blocks(shard: Shard) -> dict[str, np.ndarray]:
        rows = len(shard["cost"])
        sums = [each({key: value[start : start + BLOCK_ROWS] for key, value in shard.items()})
                for start in range(0, rows, BLOCK_ROWS)]
        return {key: np.sum([np.asarray(part[key]) for part in sums], axis=0)[None] for key in sums[0]}

    results = passes(blocks)
    return {key: np.concatenate([r[key] for r in results]).sum(axis=0) for key in results[0]}


def plan_sharded(passes: Passes, budget: float) -> ShardedPlan:
    """The plan for every shard ``passes`` runs over, with total cost <= ``budget`` (USD).

    Raises TypeError / ValueError for a budget that is not a finite, non-negative number, and
    ``InfeasibleRoutingError`` when some prompt has no eligible model or the cheapest eligible models
    cost more than the budget."""
    budget = checked_usd(budget, "budget_usd")

    def extremes(shard: Shard) -> dict[str, np.ndarray]:
        feasible = shard["feasible"]
        return {"stranded": np.array(int((~feasible.any(axis=1)).sum())),
                "minimum": np.array(np.where(feasible, shard["cost"], np.inf).min(axis=1).sum()),
                "rows": np.array(len(feasible))}

    first = _summed(passes, extremes)
    if first["stranded"]:
        raise InfeasibleRoutingError("hard constraints", f"{int(first['stranded'])} prompt(s) have no eligible model")
    if budget < first["minimum"] - 1e-12:
        raise InfeasibleRoutingError(
            "budget", f"budget {budget:.6g} USD is below {first['minimum']:.6g} USD, the cost of the cheapest eligible models"
        )

    def at_multipliers(mu: np.ndarray) -> dict[str, np.ndarray]:
        def each(shard: Shard) -> dict[str, np.ndarray]:
            chosen = assign(shard, mu)
            quality = np.where(shard["feasible"], shard["quality"], -np.inf)
            score = quality[:, :, None] - mu[None, None, :] * shard["cost"][:, :, None]
            return {"spend": _at(shard["cost"], chosen).sum(axis=0), "quality": _at(shard["quality"], chosen).sum(axis=0),
                    "dual": score.max(axis=1).sum(axis=0)}
        return _summed(passes, each)

    # the multiplier: the least mu on the grid whose assignment fits, refined pass by pass
    low, high = 0.0, 1.0
    grid = np.concatenate([[0.0], np.geomspace(1e-6, 1e12, GRID - 1)])
    lp_bound = np.inf
    fits = None
    for _ in range(PASSES):
        sums = at_multipliers(grid)
        lp_bound = min(lp_bound, float((sums["dual"] + grid * budget).min()))
        ok = sums["spend"] <= budget
        if not ok.any():  # past the largest multiplier ties still pick dear models: the cheapest fit
            break
        index = int(np.argmax(ok))
        high, fits = float(grid[index]), (float(sums["spend"][index]), float(sums["quality"][index]))
        if index == 0:
            break
        low = float(grid[index - 1])
        if high - low <= 1e-9 * high:
            break
        grid = np.linspace(low, high, GRID)
    if fits is None:
        raise InfeasibleRoutingError("budget", "no multiplier fits the budget")  # unreachable past the minimum check
    spent, quality = fits

    # the fill: upgrades by quality per USD, down to the ratio whose upgrades still fit the leftover
    leftover = budget - spent
    ratio = np.inf
    chosen_mu = np.array([high])

    def upgrades_above(thresholds: np.ndarray) -> dict[str, np.ndarray]:
        def each(shard: Shard) -> dict[str, np.ndarray]:
            best, extra, gain, _ = best_upgrade(shard, assign(shard, chosen_mu)[:, 0])
            taken = best[:, None] >= thresholds[None, :]
            return {"extra": np.where(taken, extra[:, None], 0).sum(axis=0),
                    "gain": np.where(taken, gain[:, None], 0).sum(axis=0)}
        return _summed(passes, each)

    if leftover > 0:
        thresholds = np.append(np.geomspace(1e15, 1e-6, GRID - 1), np.finfo(float).tiny)
        for _ in range(PASSES):
            sums = upgrades_above(thresholds)
            ok = sums["extra"] <= leftover * (1 - 1e-9)
            index = int(np.argmin(ok)) - 1 if not ok.all() else len(ok) - 1
            if index < 0:
                break
            ratio, gained, extra = float(thresholds[index]), float(sums["gain"][index]), float(sums["extra"][index])
            if index == len(ok) - 1:
                break
            thresholds = np.linspace(thresholds[index], thresholds[index + 1], GRID)
        if np.isfinite(ratio):
            spent, quality = spent + extra, quality + gained
    return ShardedPlan(price_of_dollar=high, upgrade_ratio=ratio, spent=spent, predicted_quality=quality,
                       lp_bound=lp_bound)
