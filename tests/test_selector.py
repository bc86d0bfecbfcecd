"""Every selector mode against brute force on random matrices."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routoo_shared.routing.pool import ModelPool, ModelSpec
from routoo_shared.routing.selector import Constraints, InfeasibleRoutingError, Selector, plan_budget


def make_pool(m: int, rng: np.random.Generator) -> ModelPool:
    return ModelPool(
        models=[
            ModelSpec(
                name=f"m{j}",
                price_in_per_mtok=float(rng.uniform(0.1, 10)),
                price_out_per_mtok=float(rng.uniform(0.1, 30)),
                expected_output_tokens=float(rng.integers(10, 500)),
                context_window=int(rng.choice([2048, 8192, 128000])),
                ttft_s=float(rng.uniform(0.1, 2)),
                tokens_per_s=float(rng.uniform(20, 200)),
                supports_tools=bool(rng.random() < 0.5),
            )
            for j in range(m)
        ]
    )


seeds = st.integers(min_value=0, max_value=10_000)


@settings(max_examples=60, deadline=None)
@given(seeds)
def test_tradeoff_ceiling_and_hard_limits_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m = 7, int(rng.integers(2, 6))
    pool = make_pool(m, rng)
    pool.models[0].context_window, pool.models[0].supports_tools = 128000, True  # every prompt fits somewhere
    quality = rng.random((n, m))
    tokens = rng.integers(10, 3000, n)
    cost = pool.cost_matrix(tokens)
    constraints = Constraints(
        quality_cost_tradeoff=float(rng.choice([0.0, 0.3, 2.0])),
        max_cost_per_query=float(np.quantile(cost, 0.9)),
        max_latency_s=20.0,
        requires_tools=bool(rng.random() < 0.3),
        on_infeasible="relax",
    )
    if constraints.requires_tools and not any(s.supports_tools for s in pool.models):
        return
    selection = Selector(pool, constraints).select(quality, tokens)
    for i in range(n):
        def ok(j, soft=True, i=i):
            spec = pool.models[j]
            hard = (not constraints.requires_tools or spec.supports_tools) and tokens[i] + spec.expected_output_tokens <= spec.context_window
            return hard and (not soft or (cost[i, j] <= constraints.max_cost_per_query and spec.latency(tokens[i]) <= 20.0))

        eligible = [j for j in range(m) if ok(j)] or [j for j in range(m) if ok(j, soft=False)]
        reference = max(cost[i, j] for j in eligible)
        best = max(eligible, key=lambda j: quality[i, j] - constraints.quality_cost_tradeoff * cost[i, j] / reference)
        assert selection.chosen[i] == best


@settings(max_examples=60, deadline=None)
@given(seeds)
def test_quality_floor_picks_cheapest_above_floor(seed):
    rng = np.random.default_rng(seed)
    n, m = 6, int(rng.integers(2, 6))
    pool = make_pool(m, rng)
    quality = rng.random((n, m))
    quality[:, 0] = 0.95  # someone always clears the floor
    tokens = rng.integers(10, 500, n)
    pool = ModelPool(models=[s.model_copy(update={"context_window": 128000}) for s in pool.models])
    cost = pool.cost_matrix(tokens)
    selection = Selector(pool, Constraints(min_quality=0.6)).select(quality, tokens)
    for i in range(n):
        above = [j for j in range(m) if quality[i, j] >= 0.6]
        assert cost[i, selection.chosen[i]] == pytest.approx(min(cost[i, j] for j in above))


@settings(max_examples=40, deadline=None)
@given(seeds)
def test_budget_plan_is_near_the_exact_knapsack_optimum(seed):
    rng = np.random.default_rng(seed)
    n, m = 6, 3
    quality = rng.random((n, m))
    cost = rng.uniform(0.1, 1.0, (n, m))
    budget = float(cost.min(axis=1).sum() + rng.uniform(0, 1) * (cost.max(axis=1).sum() - cost.min(axis=1).sum()))
    plan = plan_budget(quality, cost, budget)
    rows = np.arange(n)
    best = max(
        quality[rows, list(choice)].sum()
        for choice in itertools.product(range(m), repeat=n)
        if cost[rows, list(choice)].sum() <= budget + 1e-12
    )
    assert plan.spent <= budget + 1e-9
    assert plan.predicted_quality <= best + 1e-9
    assert plan.lp_bound >= best - 1e-6  # the LP relaxation bounds the integer optimum
    # the Lagrangian solution plus greedy fill loses at most one item's quality to the LP optimum
    assert plan.predicted_quality >= plan.lp_bound - quality.max() - 1e-9


def test_budget_below_the_cheapest_assignment_is_an_error():
    quality, cost = np.ones((3, 2)), np.array([[1.0, 2.0]] * 3)
    with pytest.raises(InfeasibleRoutingError, match="budget") as error:
        plan_budget(quality, cost, 2.0)
    assert error.value.constraint == "budget"


def test_infeasible_constraints_name_the_constraint():
    rng = np.random.default_rng(0)
    pool = make_pool(3, rng)
    quality, tokens = rng.random((1, 3)), np.array([100])
    with pytest.raises(InfeasibleRoutingError, match="max_cost_per_query") as error:
        Selector(pool, Constraints(max_cost_per_query=0.0)).select(quality, tokens)
    assert error.value.constraint == "max_cost_per_query"
    with pytest.raises(InfeasibleRoutingError, match="min_quality"):
        Selector(pool, Constraints(min_quality=1.0)).select(quality * 0.5, tokens)
    with pytest.raises(InfeasibleRoutingError, match="context_window"):
        Selector(pool).select(quality, np.array([10_000_000]))
    relaxed = Selector(pool, Constraints(max_cost_per_query=0.0, on_infeasible="relax")).select(quality, tokens)
    assert relaxed.binding == ["relaxed:max_cost_per_query"]
    with pytest.raises(KeyError, match="unknown model"):
        Selector(pool, Constraints(allowed_models=["nope"])).select(quality, tokens)
    with pytest.raises(TypeError, match="unknown routing setting"):
        Constraints().merged(max_price=1)


def test_online_calibration_hits_the_target_average_cost():
    rng = np.random.default_rng(1)
    pool = make_pool(4, rng)
    pool = ModelPool(models=[s.model_copy(update={"context_window": 128000}) for s in pool.models])
    quality, tokens = rng.random((400, 4)), rng.integers(10, 500, 400)
    selector = Selector(pool)
    cost = pool.cost_matrix(tokens)
    target = float(cost.min(axis=1).mean() + 0.3 * (cost.max(axis=1).mean() - cost.min(axis=1).mean()))
    tradeoff = selector.calibrate_tradeoff(quality, tokens, target)
    chosen = selector.select(quality, tokens, Constraints(quality_cost_tradeoff=tradeoff)).chosen
    assert cost[np.arange(400), chosen].mean() <= target * 1.0001
    looser = selector.select(quality, tokens, Constraints(quality_cost_tradeoff=tradeoff * 0.9)).chosen
    assert cost[np.arange(400), looser].mean() > target * 0.9
