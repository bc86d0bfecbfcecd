"""Routing quality of a predicted quality matrix: the accuracy/cost curve the budget planner traces.

The same measure serves evaluation (on the test split) and model selection (on held-out parts
of train): a predictor is as good as the curve its predictions buy, not as its log-loss. Summary
numbers follow RouterBench (AIQ) and the paper (accuracy at a model's cost, cost to match it).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from routoo_shared.data.formats import Outcomes, Question
from routoo_shared.routing.pool import ModelPool
from routoo_shared.routing.selector import plan_budget
from routoo_shared.routing.tokens import count_tokens_batch


class Point(BaseModel):
    cost_per_query: float
    accuracy: float


def upper_hull(points: list[Point]) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing concave envelope of (cost, accuracy) points, as sorted vertices."""
    return _hull(np.array([p.cost_per_query for p in points]), np.array([p.accuracy for p in points]))


def _hull(costs: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ordered = sorted(set(zip(costs.tolist(), accuracy.tolist())))
    hull: list[tuple[float, float]] = []
    for point in ordered:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (point[1] - y1) - (y2 - y1) * (point[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(point)
    hull_costs, hull_accuracy = np.array(hull).T
    return hull_costs, np.maximum.accumulate(hull_accuracy)


def aiq(points: list[Point], low: float, high: float) -> float:
    """Area under the non-decreasing convex hull over [low, high], divided by the range (RouterBench)."""
    return aiq_of_arrays(np.array([p.cost_per_query for p in points]), np.array([p.accuracy for p in points]), low, high)


def aiq_of_arrays(costs: np.ndarray, accuracy: np.ndarray, low: float, high: float) -> float:
    """``aiq`` for operating points given as two arrays (cost per query, accuracy)."""
    hull_costs, hull_accuracy = _hull(costs, accuracy)
    grid = np.linspace(low, high, 2001)
    values = np.interp(grid, hull_costs, hull_accuracy, left=0.0, right=hull_accuracy[-1])
    return float(np.trapezoid(values, grid) / (high - low))


def accuracy_at_cost(points: list[Point], cost: float) -> float | None:
    """Best accuracy among operating points that cost no more than ``cost`` (no mixing of points)."""
    affordable = [p.accuracy for p in points if p.cost_per_query <= cost * (1 + 1e-9)]
    return max(affordable) if affordable else None


def cost_to_match(points: list[Point], accuracy: float) -> float | None:
    matching = [p.cost_per_query for p in points if p.accuracy >= accuracy - 1e-12]
    return min(matching) if matching else None


class PairScores(BaseModel):
    """RouteLLM's metrics of one router on a weak/strong pair (Ong et al. 2024, arXiv 2406.18665).

    ``cpt50``/``cpt80``: the smallest share of calls to the strong model (0 to 1) at which the
    router recovers 50% / 80% of the accuracy gap between the weak and the strong model (None:
    never); ``apgr``: the average performance gap recovered, the area under PGR over that share.
    """

    cpt50: float | None
    cpt80: float | None
    apgr: float | None


def pair_scores(strong_share: np.ndarray, accuracy: np.ndarray, weak_accuracy: float, strong_accuracy: float) -> PairScores:
    """``PairScores`` of a router's operating points, (K,) shares of strong calls and accuracies.

    As RouteLLM's ``evaluate.py``: the points, sorted by share and joined linearly, run from the
    weak model alone (share 0) to the strong one alone (share 1); PGR(a) = (a - weak) / (strong -
    weak). All None when the strong model is not more accurate than the weak one.
    """
    gap = strong_accuracy - weak_accuracy
    if gap <= 0:
        return PairScores(cpt50=None, cpt80=None, apgr=None)
    shares = np.concatenate([[0.0], np.asarray(strong_share, float), [1.0]])
    pgr = (np.concatenate([[weak_accuracy], np.asarray(accuracy, float), [strong_accuracy]]) - weak_accuracy) / gap
    order = np.lexsort((pgr, shares))
    shares, pgr = shares[order], pgr[order]

    def calls_to(level: float) -> float | None:
        above = np.flatnonzero(pgr >= level - 1e-12)
        if len(above) == 0:
            return None
        i = above[0]
        if i == 0 or pgr[i - 1] >= level:
            return float(shares[i])
        return float(shares[i - 1] + (level - pgr[i - 1]) / (pgr[i] - pgr[i - 1]) * (shares[i] - shares[i - 1]))

    return PairScores(cpt50=calls_to(0.5), cpt80=calls_to(0.8), apgr=float(np.trapezoid(pgr, shares)))


def with_expected_output(pool: ModelPool, questions: list[Question]) -> ModelPool:
    """The pool with each model's expected output length taken from training data (mean real tokens)."""
    tokens = Outcomes.from_questions(questions, pool.names).output_tokens
    return ModelPool(
        models=[m.model_copy(update={"expected_output_tokens": float(tokens[:, j].mean())}) for j, m in enumerate(pool.models)]
    )


class RoutingTask:
    """Questions x models with known outcomes: what any predicted quality matrix buys on them.

    ``correct`` is 0/1 (no NaN: keep questions every model answered); ``expected_cost`` (USD) is
    what the planner sees (prompt tokens, mean output tokens); ``real_cost`` (USD) charges each
    model's real output tokens on each question. ``points`` budgets form each curve.
    """

    def __init__(self, correct: np.ndarray, expected_cost: np.ndarray, real_cost: np.ndarray, points: int = 40):
        if not (correct.shape == expected_cost.shape == real_cost.shape) or not np.isfinite(correct).all():
            raise ValueError("correct, expected_cost and real_cost must be finite matrices of one shape")
        self.correct, self.expected_cost, self.real_cost, self.points = correct, expected_cost, real_cost, points
        single_costs = real_cost.mean(axis=0)
        self.low, self.high = float(single_costs.min()), float(single_costs.max())
        self.cheapest = int(expected_cost.mean(axis=0).argmin())

    @classmethod
    def from_questions(cls, pool: ModelPool, questions: list[Question], points: int = 40) -> "RoutingTask":
        """``pool`` should carry expected output lengths from training data (``with_expected_output``)."""
        outcomes = Outcomes.from_questions(questions, pool.names)
        tokens = np.array(count_tokens_batch([q.prompt for q in questions]), dtype=float)
        return cls(
            outcomes.correct, pool.cost_matrix(tokens), pool.cost_matrix(tokens, outcomes.output_tokens), points
        )

    def point(self, chosen: np.ndarray) -> Point:
        rows = np.arange(len(chosen))
        return Point(
            cost_per_query=float(self.real_cost[rows, chosen].mean()), accuracy=float(self.correct[rows, chosen].mean())
        )

    def curve(self, quality: np.ndarray) -> list[tuple[Point, np.ndarray]]:
        """(operating point, choices) for a grid of budgets from the cheapest choice to the best-predicted one."""
        n = len(quality)
        low = self.expected_cost.min(axis=1).mean()
        high = self.expected_cost[np.arange(n), np.nan_to_num(quality, nan=-np.inf).argmax(axis=1)].mean()
        plans = (plan_budget(quality, self.expected_cost, b * n) for b in np.linspace(low, max(high, low * 1.0001), self.points))
        return [(self.point(plan.chosen), plan.chosen) for plan in plans]

    def aiq_of(self, points: list[Point]) -> float:
        """AIQ over the single models' cost range, the curve anchored at the cheapest model's point."""
        start = self.point(np.full(len(self.correct), self.cheapest))
        return aiq(points + [start], self.low, self.high)

    def aiq(self, quality: np.ndarray) -> float:
        return self.aiq_of([point for point, _ in self.curve(quality)])
