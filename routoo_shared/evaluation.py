"""Cost/accuracy evaluation of Routoo against peer routers on real per-question results.

Every learned router yields a predicted quality matrix on the test prompts; the same budget
planner spends a grid of budgets for each, and the realised accuracy and cost (real output
tokens) of its choices form its curve. Summary numbers follow RouterBench (AIQ) and the paper
(accuracy at a model's cost, cost to match a model).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from pydantic import BaseModel

from routoo_shared.baselines import baseline_quality, fit_baseline, knn_quality, tune_knn
from routoo_shared.data import Outcomes, Question
from routoo_shared.metrics import per_model_report
from routoo_shared.pool import ModelPool
from routoo_shared.predictor import Predictor, TrainConfig
from routoo_shared.selector import plan_budget
from routoo_shared.tokens import count_tokens_batch

ROUTOO = "routoo"


class Point(BaseModel):
    cost_per_query: float
    accuracy: float


class EvaluationReport(BaseModel):
    """The JSON written by ``routoo evaluate`` (exactly these keys)."""

    single_models: dict[str, Point]
    oracle: Point
    routers: dict[str, list[Point]]
    aiq: dict[str, float]
    accuracy_at_cost_of: dict[str, dict[str, float | None]]
    cost_to_match: dict[str, dict[str, float | None]]


class Extras(BaseModel):
    """What the table prints beyond the JSON: predictor quality, strong-model share, per-category rows."""

    test_questions: int
    dropped_questions: int
    predictor_report: dict[str, dict[str, float]] = {}
    priciest_share_to_95: dict[str, float | None] = {}
    categories: list[dict] = []


def with_expected_output(pool: ModelPool, questions: list[Question]) -> ModelPool:
    """The pool with each model's expected output length taken from training data (mean real tokens)."""
    tokens = Outcomes.from_questions(questions, pool.names).output_tokens
    return ModelPool(
        models=[m.model_copy(update={"expected_output_tokens": float(tokens[:, j].mean())}) for j, m in enumerate(pool.models)]
    )


def complete_rows(questions: list[Question], models: list[str]) -> list[Question]:
    return [q for q in questions if all(m in q.results for m in models)]


def upper_hull(points: list[Point]) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing concave envelope of (cost, accuracy) points, as sorted vertices."""
    ordered = sorted({(p.cost_per_query, p.accuracy) for p in points})
    hull: list[tuple[float, float]] = []
    for point in ordered:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (point[1] - y1) - (y2 - y1) * (point[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(point)
    costs, accuracy = np.array(hull).T
    return costs, np.maximum.accumulate(accuracy)


def aiq(points: list[Point], low: float, high: float) -> float:
    """Area under the non-decreasing convex hull over [low, high], divided by the range (RouterBench)."""
    costs, accuracy = upper_hull(points)
    grid = np.linspace(low, high, 2001)
    values = np.interp(grid, costs, accuracy, left=0.0, right=accuracy[-1])
    return float(np.trapezoid(values, grid) / (high - low))


def accuracy_at_cost(points: list[Point], cost: float) -> float | None:
    """Best accuracy among operating points that cost no more than ``cost`` (no mixing of points)."""
    affordable = [p.accuracy for p in points if p.cost_per_query <= cost * (1 + 1e-9)]
    return max(affordable) if affordable else None


def cost_to_match(points: list[Point], accuracy: float) -> float | None:
    matching = [p.cost_per_query for p in points if p.accuracy >= accuracy - 1e-12]
    return min(matching) if matching else None


class Evaluation:
    """Trains Routoo and the baselines on one split and traces their cost/accuracy curves on another."""

    def __init__(
        self,
        pool: ModelPool,
        train: list[Question],
        dev: list[Question],
        test: list[Question],
        predictor: Predictor | None = None,
        train_config: TrainConfig | None = None,
        points: int = 40,
        seed: int = 0,
    ):
        names = pool.names
        self.pool = with_expected_output(pool, train)
        self.train, self.dev = train, dev
        self.test = complete_rows(test, names)
        self.dropped = len(test) - len(self.test)
        if not self.test:
            raise ValueError(f"no test question has results for every pool model {names}")
        self.outcomes = Outcomes.from_questions(self.test, names)
        self.correct = self.outcomes.correct
        tokens = np.array(count_tokens_batch([q.prompt for q in self.test]), dtype=float)
        self.expected_cost = self.pool.cost_matrix(tokens)
        self.real_cost = self.pool.cost_matrix(tokens, self.outcomes.output_tokens)
        self.predictor, self.train_config = predictor, train_config
        self.points, self.seed = points, seed
        self.extras = Extras(test_questions=len(self.test), dropped_questions=self.dropped)

    # ----- predicted quality of each learned router
    def _matrix(self, questions: list[Question]) -> np.ndarray:
        return Outcomes.from_questions(questions, self.pool.names).correct

    def predictions(self) -> dict[str, np.ndarray]:
        names = self.pool.names
        train_prompts = [q.prompt for q in self.train]
        dev_prompts = [q.prompt for q in self.dev]
        test_prompts = [q.prompt for q in self.test]
        train_y, dev_y = self._matrix(self.train), self._matrix(self.dev)
        predictor = self.predictor = self.predictor or Predictor.train(
            train_prompts, train_y, names, dev_prompts, dev_y, self.train_config
        )
        encoder = predictor.encoder
        train_x, dev_x, test_x = (encoder.encode(p, progress=True, persist=True) for p in (train_prompts, dev_prompts, test_prompts))
        quality = {ROUTOO: predictor.predict(test_prompts, names)}
        self.extras.predictor_report = per_model_report(quality[ROUTOO], self.correct, names)
        k = tune_knn(train_x, train_y, dev_x, dev_y)
        quality[f"knn (k={k})"] = knn_quality(train_x, train_y, test_x, k)
        for kind in ("logistic", "matrix_factorisation"):
            network = fit_baseline(kind, train_x, train_y, dev_x, dev_y, self.seed)
            quality[kind] = baseline_quality(network, test_x)
        if len(names) == 2:
            quality["threshold"] = quality["logistic"]  # scored below by its own rule
        self._train_accuracy = np.nanmean(train_y, axis=0)
        return quality

    # ----- curves
    def _point(self, chosen: np.ndarray) -> Point:
        rows = np.arange(len(chosen))
        return Point(
            cost_per_query=float(self.real_cost[rows, chosen].mean()),
            accuracy=float(self.correct[rows, chosen].mean()),
        )

    def budget_grid(self, quality: np.ndarray) -> np.ndarray:
        low = self.expected_cost.min(axis=1).mean()
        high = self.expected_cost[np.arange(len(quality)), quality.argmax(axis=1)].mean()
        return np.linspace(low, max(high, low * 1.0001), self.points)

    def budget_curve(self, quality: np.ndarray) -> list[tuple[Point, np.ndarray]]:
        n = len(quality)
        return [
            (self._point(plan.chosen), plan.chosen)
            for plan in (plan_budget(quality, self.expected_cost, budget * n) for budget in self.budget_grid(quality))
        ]

    def threshold_curve(self, weak_wrong: np.ndarray, weak: int, strong: int) -> list[tuple[Point, np.ndarray]]:
        """RouteLLM-style: send to the strong model when the weak one's predicted failure exceeds t."""
        curve = []
        for t in np.quantile(weak_wrong, np.linspace(0, 1, self.points)):
            chosen = np.where(weak_wrong >= t, strong, weak)
            curve.append((self._point(chosen), chosen))
        curve.append((self._point(np.full(len(weak_wrong), weak)), np.full(len(weak_wrong), weak)))
        return curve

    def random_curve(self, cheap: int, best: int) -> list[tuple[Point, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        draws = rng.random(len(self.test))
        curve = []
        for share in np.linspace(0, 1, self.points):
            chosen = np.where(draws < share, best, cheap)
            curve.append((self._point(chosen), chosen))
        return curve

    def single_curve(self, by_train_accuracy: np.ndarray) -> list[tuple[Point, np.ndarray]]:
        """The best single model (by training accuracy) affordable at each budget."""
        mean_cost = self.expected_cost.mean(axis=0)
        curve = []
        for budget in np.linspace(mean_cost.min(), mean_cost.max(), self.points):
            affordable = np.flatnonzero(mean_cost <= budget + 1e-15)
            model = affordable[by_train_accuracy[affordable].argmax()]
            chosen = np.full(len(self.test), model)
            curve.append((self._point(chosen), chosen))
        return curve

    # ----- the whole run
    def run(self, reference_models: list[str] | None = None) -> EvaluationReport:
        names = self.pool.names
        singles = {name: self._point(np.full(len(self.test), j)) for j, name in enumerate(names)}
        cheapest_correct = np.where(self.correct == 1, self.real_cost, np.inf)
        any_correct = np.isfinite(cheapest_correct).any(axis=1)
        oracle_choice = np.where(any_correct, cheapest_correct.argmin(axis=1), self.real_cost.argmin(axis=1))
        oracle = self._point(oracle_choice)

        quality = self.predictions()
        cheap = int(self.expected_cost.mean(axis=0).argmin())
        best = int(self._train_accuracy.argmax())
        curves: dict[str, list[tuple[Point, np.ndarray]]] = {}
        for name, matrix in quality.items():
            if name == "threshold":
                weak, strong = (0, 1) if self.expected_cost[:, 0].mean() < self.expected_cost[:, 1].mean() else (1, 0)
                curves[name] = self.threshold_curve(1 - matrix[:, weak], weak, strong)
            else:
                curves[name] = self.budget_curve(matrix)
        from routoo_shared.cascade import CASCADE_ROUTER, cascade_curve  # cascades build on this module

        cascade = cascade_curve(self, self.predictor)  # None where no answer lengths were recorded
        if cascade is not None:
            curves[CASCADE_ROUTER] = cascade
        curves["random"] = self.random_curve(cheap, best)
        curves["best_single"] = self.single_curve(self._train_accuracy)

        start = singles[names[cheap]]
        low = min(p.cost_per_query for p in singles.values())
        high = max(p.cost_per_query for p in singles.values())
        routers = {name: [p for p, _ in curve] for name, curve in curves.items()}
        priciest = int(self.expected_cost.mean(axis=0).argmax())
        self.extras.priciest_share_to_95 = {
            name: _share_to_reach(curve, priciest, 0.95 * singles[names[priciest]].accuracy)
            for name, curve in curves.items()
        }
        if reference_models:
            self.extras.categories = self.category_table(quality[ROUTOO], reference_models[0], singles)
        return EvaluationReport(
            single_models=singles,
            oracle=oracle,
            routers=routers,
            aiq={name: aiq(points + [start], low, high) for name, points in routers.items()},
            accuracy_at_cost_of={
                name: {m: accuracy_at_cost(points, singles[m].cost_per_query) for m in names}
                for name, points in routers.items()
            },
            cost_to_match={
                name: {m: cost_to_match(points, singles[m].accuracy) for m in names} for name, points in routers.items()
            },
        )

    def category_table(self, quality: np.ndarray, reference: str, singles: dict[str, Point]) -> list[dict]:
        """Routoo at the reference model's cost per query, against that model, category by category."""
        j = self.pool.index(reference)
        budget = singles[reference].cost_per_query * len(self.test)
        chosen = plan_budget(quality, self.expected_cost, budget).chosen
        rows = defaultdict(list)
        for i, question in enumerate(self.test):
            rows[question.category or "?"].append(i)
        table = []
        for category, index in sorted(rows.items()):
            index = np.array(index)
            table.append(
                {
                    "category": category,
                    "n": len(index),
                    "routoo_accuracy": float(self.correct[index, chosen[index]].mean()),
                    f"{reference}_accuracy": float(self.correct[index, j].mean()),
                    "routoo_cost_ratio": float(
                        self.real_cost[index, chosen[index]].sum() / self.real_cost[index, j].sum()
                    ),
                }
            )
        return table


def _share_to_reach(curve: list[tuple[Point, np.ndarray]], model: int, accuracy: float) -> float | None:
    shares = [float((chosen == model).mean()) for point, chosen in curve if point.accuracy >= accuracy]
    return min(shares) if shares else None


def format_table(report: EvaluationReport, extras: Extras, reference_models: list[str]) -> str:
    """Plain-text tables: single models, oracle, then each router's AIQ and the paper's two numbers."""
    lines = [f"test questions: {extras.test_questions} (dropped {extras.dropped_questions} without every model's result)"]
    lines.append(f"\n{'model':34s} {'accuracy':>9s} {'USD/1k q':>9s}")
    for name, point in sorted(report.single_models.items(), key=lambda kv: kv[1].cost_per_query):
        lines.append(f"{name:34s} {point.accuracy:9.3f} {point.cost_per_query * 1000:9.4f}")
    lines.append(f"{'oracle (cheapest correct)':34s} {report.oracle.accuracy:9.3f} {report.oracle.cost_per_query * 1000:9.4f}")
    header = f"\n{'router':26s} {'AIQ':>6s}"
    for ref in reference_models:
        short = ref[:22]
        header += f" | acc@cost({short}) {'cost to match':>13s}"
    lines.append(header)
    for name in sorted(report.aiq, key=lambda n: -report.aiq[n]):
        row = f"{name:26s} {report.aiq[name]:6.3f}"
        for ref in reference_models:
            acc = report.accuracy_at_cost_of[name][ref]
            cost = report.cost_to_match[name][ref]
            ref_point = report.single_models[ref]
            acc_text = "-" if acc is None else f"{acc:.3f} ({(acc - ref_point.accuracy) * 100:+.1f})"
            cost_text = "never" if cost is None else f"{cost / ref_point.cost_per_query:.0%}"
            row += f" | {acc_text:>{len(ref[:22]) + 10}s} {cost_text:>13s}"
        lines.append(row)
    if len(report.single_models) == 2:
        lines.append("\nshare of calls to the priciest model needed to reach 95% of its accuracy:")
        for name, share in extras.priciest_share_to_95.items():
            lines.append(f"  {name:26s} {'never' if share is None else f'{share:.1%}'}")
    if extras.categories:
        keys = list(extras.categories[0])
        lines.append("\nper category, routoo at the cost of " + keys[3].removesuffix("_accuracy") + ":")
        lines.append(f"  {'category':22s} {'n':>5s} {'routoo':>7s} {'model':>7s} {'cost ratio':>10s}")
        for row in extras.categories:
            values = list(row.values())
            lines.append(f"  {values[0]:22s} {values[1]:5d} {values[2]:7.3f} {values[3]:7.3f} {values[4]:10.2f}")
    if extras.predictor_report:
        pooled = extras.predictor_report["ALL"]
        lines.append(
            f"\nroutoo predictor on these test questions: log-loss {pooled['log_loss']:.3f}, AUC {pooled['auc']:.3f}, "
            f"Brier {pooled['brier']:.3f}, ECE {pooled['ece']:.3f}"
        )
    return "\n".join(lines)


def plot(report: EvaluationReport, path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 6.5))
    for name, points in report.routers.items():
        costs = [p.cost_per_query * 1000 for p in points]
        accuracy = [p.accuracy for p in points]
        order = np.argsort(costs)
        style = dict(linewidth=2.5, color="black") if name == ROUTOO else dict(linewidth=1.2, alpha=0.85)
        axes.plot(np.array(costs)[order], np.array(accuracy)[order], label=name, **style)
    for name, point in report.single_models.items():
        axes.scatter(point.cost_per_query * 1000, point.accuracy, s=18, color="tab:gray", zorder=3)
        axes.annotate(name, (point.cost_per_query * 1000, point.accuracy), fontsize=6, alpha=0.8,
                      xytext=(3, 2), textcoords="offset points")
    axes.scatter(report.oracle.cost_per_query * 1000, report.oracle.accuracy, marker="*", s=120, color="gold",
                 edgecolor="black", label="oracle", zorder=4)
    axes.set_xlabel("cost per 1,000 queries (USD)")
    axes.set_ylabel("accuracy")
    axes.set_title(title or "accuracy vs cost per query")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)

