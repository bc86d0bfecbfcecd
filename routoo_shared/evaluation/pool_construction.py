"""Pool construction (the paper's "universe constructor"): which models are worth routing between.

From a universe of labelled models, greedy forward selection adds, one at a time, the model that
most raises the router's accuracy-cost curve (AIQ) on dev questions, up to ``k`` models,
optionally only among models priced under a ceiling. A pool is scored by the predictor's dev
predictions restricted to its columns: the per-model heads do not depend on which other models
are in the pool, so one predictor trained on the universe scores every candidate pool.

The curve of a pool is traced by the Lagrangian form of the budget planner (each prompt takes
argmax quality - mu * cost, for a grid of mu), which is what ``plan_budget`` bisects on; AIQ is
taken over the universe's cost range, the same range for every candidate, so pools that cannot
reach the cheap end are charged for it.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from routoo_shared.data.formats import Question
from routoo_shared.evaluation.harness import Evaluation, Point, aiq
from routoo_shared.routing.pool import ModelPool


class PoolStep(BaseModel):
    """One greedy step: the model added and what the pool reaches with it (dev split)."""

    added: str
    price_out_per_mtok: float
    aiq: float
    gain: float = Field(description="AIQ added by this model")
    best_accuracy: float = Field(description="highest accuracy on the pool's curve")
    cost_at_best: float = Field(description="USD per query at that accuracy")
    test_aiq: float | None = Field(default=None, description="reported only, never used to choose")


class PoolConstruction(BaseModel):
    """The greedy path: ``steps[i]`` is the pool of the first i + 1 added models."""

    steps: list[PoolStep]
    priced_out: list[str] = Field(description="universe models above the price ceiling")
    cost_range: tuple[float, float] = Field(description="USD per query over which AIQ is taken")

    @property
    def pool(self) -> list[str]:
        return [step.added for step in self.steps]


class _Scorer:
    """Dev (or test) matrices of a universe, and the AIQ of any subset of its columns."""

    def __init__(self, evaluation: Evaluation, quality: np.ndarray):
        self.quality = quality
        self.expected, self.real, self.correct = evaluation.expected_cost, evaluation.real_cost, evaluation.correct
        self.cost_range = (float(self.real.mean(0).min()), float(self.real.mean(0).max()))
        reference = self.expected.max(axis=1).mean()
        self.prices = np.concatenate([[0.0], np.geomspace(0.01, 1000, 59)]) / reference

    def curve(self, columns: list[int]) -> list[Point]:
        quality, expected = self.quality[:, columns], self.expected[:, columns]
        rows = np.arange(len(quality))
        points = []
        for price in self.prices:
            chosen = np.asarray(columns)[(quality - price * expected).argmax(axis=1)]
            points.append(Point(cost_per_query=float(self.real[rows, chosen].mean()),
                                accuracy=float(self.correct[rows, chosen].mean())))
        return points

    def aiq(self, columns: list[int]) -> float:
        return aiq(self.curve(columns), *self.cost_range)


def build_pool(
    universe: ModelPool,
    train: list[Question],
    dev: list[Question],
    predictor,
    k: int,
    max_price_per_mtok: float | None = None,
    test: list[Question] | None = None,
) -> PoolConstruction:
    """Greedy forward selection of at most ``k`` models from ``universe`` by dev AIQ.

    ``predictor``: anything with ``predict(prompts, models)`` that knows every universe model,
    trained on ``train`` (which also gives each model's expected output length). Models whose
    input or output price (USD per 1M tokens) exceeds ``max_price_per_mtok`` are left out.
    ``test``: when given, each step's test AIQ is reported alongside (never used to choose).
    Stops early when no remaining model raises AIQ. Raises ValueError when no model is affordable
    or no dev question has every universe model's result.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    affordable = [
        m.name for m in universe.models
        if max_price_per_mtok is None or max(m.price_in_per_mtok, m.price_out_per_mtok) <= max_price_per_mtok
    ]
    if not affordable:
        raise ValueError(f"no universe model is priced at or under {max_price_per_mtok} USD per 1M tokens")
    priced_out = [n for n in universe.names if n not in affordable]
    pool = universe.subset(affordable)
    scorers = {}
    for split, questions in (("dev", dev), ("test", test)):
        if questions is None:
            continue
        evaluation = Evaluation(pool, train, dev, questions, predictor=predictor)
        quality = predictor.predict([q.prompt for q in evaluation.test], pool.names)
        scorers[split] = _Scorer(evaluation, quality)
    dev_scorer = scorers["dev"]

    chosen: list[int] = []
    steps: list[PoolStep] = []
    current = 0.0
    while len(chosen) < min(k, len(affordable)):
        scores = {j: dev_scorer.aiq(chosen + [j]) for j in range(len(affordable)) if j not in chosen}
        best = max(scores, key=scores.get)
        if chosen and scores[best] <= current + 1e-9:
            break
        chosen.append(best)
        curve = dev_scorer.curve(chosen)
        top = max(curve, key=lambda p: (p.accuracy, -p.cost_per_query))
        steps.append(PoolStep(
            added=affordable[best],
            price_out_per_mtok=pool.models[best].price_out_per_mtok,
            aiq=scores[best],
            gain=scores[best] - current,
            best_accuracy=top.accuracy,
            cost_at_best=top.cost_per_query,
            test_aiq=scorers["test"].aiq(chosen) if "test" in scorers else None,
        ))
        current = scores[best]
    return PoolConstruction(steps=steps, priced_out=priced_out, cost_range=dev_scorer.cost_range)


def format_construction(construction: PoolConstruction) -> str:
    """The table of what each added model buys."""
    low, high = construction.cost_range
    lines = [f"AIQ over {low * 1000:.4f}-{high * 1000:.4f} USD per 1k queries (dev split)"]
    if construction.priced_out:
        lines.append(f"left out by the price ceiling: {', '.join(construction.priced_out)}")
    lines.append(f"{'step':>4s} {'added model':34s} {'USD/1M out':>10s} {'AIQ':>7s} {'gain':>7s} "
                 f"{'best acc':>8s} {'USD/1k q':>9s} {'test AIQ':>8s}")
    for i, step in enumerate(construction.steps, 1):
        test = "" if step.test_aiq is None else f"{step.test_aiq:8.4f}"
        lines.append(
            f"{i:4d} {step.added:34s} {step.price_out_per_mtok:10.2f} {step.aiq:7.4f} {step.gain:+7.4f} "
            f"{step.best_accuracy:8.3f} {step.cost_at_best * 1000:9.4f} {test:>8s}"
        )
    return "\n".join(lines)
