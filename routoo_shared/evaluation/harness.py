"""Cost/accuracy evaluation of Routoo against peer routers on real per-question results.

Rows are representation x method: each prompt representation (the MiniLM vector, the LM
reader's) feeds Routoo's head and every baseline (kNN, per-model logistic regression, matrix
factorisation, the category lookup table). Every learned router yields a predicted quality matrix
on the test prompts; the same budget planner spends a grid of budgets for each, and the realised
accuracy and cost (real output tokens) of its choices form its curve. AIQ comes with a bootstrap
confidence interval over test questions (and a paired one for the difference to Routoo).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel

from routoo_shared.evaluation.baselines import ROUTERS, predicted_quality, tune_knn
from routoo_shared.data.formats import Outcomes, Question
from routoo_shared.evaluation.metrics import per_model_report
from routoo_shared.routing.pool import ModelPool
from routoo_shared.predictors.predictor import Predictor, TrainConfig
from routoo_shared.evaluation.routing_quality import (  # noqa: F401  (re-exported: the evaluation's public names)
    PairScores,
    Point,
    RoutingTask,
    accuracy_at_cost,
    aiq,
    aiq_of_arrays,
    cost_to_match,
    pair_scores,
    upper_hull,
    with_expected_output,
)
from routoo_shared.routing.selector import plan_budget

ROUTOO = "routoo"
REPRESENTATIONS = ("static", "minilm", "lm-reader")

Curve = list[tuple[Point, np.ndarray]]
# A row added from outside (e.g. cascades): (evaluation, the default predictor) -> curve, or None to skip.
CurveHook = Callable[["Evaluation", Predictor], "Curve | None"]


def default_curve_hooks() -> dict[str, CurveHook]:
    """The rows every evaluation adds beyond the learned routers: Routoo with cascades."""
    from routoo_shared.evaluation.cascades import CASCADE_ROUTER, cascade_curve  # cascades build on this module

    return {CASCADE_ROUTER: cascade_curve}


def make_encoder(representation: str):
    """The prompt encoder of a representation name: ``static`` (MiniLM distilled to token vectors),
    ``minilm`` or ``lm-reader``."""
    if representation == "static":
        from routoo_shared.predictors.static_encoder import StaticEncoder

        return StaticEncoder()
    if representation == "minilm":
        from routoo_shared.predictors.encoder import PromptEncoder

        return PromptEncoder()
    if representation == "lm-reader":
        from routoo_shared.predictors.lm_reader import ReaderEncoder

        return ReaderEncoder()
    raise ValueError(f"unknown representation {representation!r}; known: {REPRESENTATIONS}")


def representation_of(encoder) -> str:
    return {"lm_reader": "lm-reader", "static": "static"}.get(getattr(encoder, "kind", "minilm"), "minilm")


class Interval(BaseModel):
    mean: float
    low: float
    high: float


class Row(BaseModel):
    representation: str | None  # None: needs no prompt representation (random, best single, hooks)
    method: str


class EvaluationReport(BaseModel):
    """The JSON written by ``routoo evaluate``. The first six keys are the stable ones; the rest were added."""

    single_models: dict[str, Point]
    oracle: Point
    routers: dict[str, list[Point]]
    aiq: dict[str, float]
    accuracy_at_cost_of: dict[str, dict[str, float | None]]
    cost_to_match: dict[str, dict[str, float | None]]
    aiq_ci: dict[str, Interval] = {}  # 95% bootstrap interval over test questions
    aiq_minus_routoo_ci: dict[str, Interval] = {}  # paired: this router's AIQ minus Routoo's, same resamples
    rows: dict[str, Row] = {}
    best_model: str | None = None  # the pool's best model by training accuracy
    priciest_share_to_95: dict[str, float | None] = {}  # share of calls to the priciest model for 95% of its accuracy
    cpt50: dict[str, float | None] = {}  # two-model pools: RouteLLM's CPT(50%), share of strong calls (0 to 1)
    cpt80: dict[str, float | None] = {}  # two-model pools: RouteLLM's CPT(80%)
    apgr: dict[str, float | None] = {}  # two-model pools: RouteLLM's average performance gap recovered
    predictor: str | None = None  # which predictor the 'routoo' row is


class Extras(BaseModel):
    """What the table prints beyond the JSON: predictor quality and per-category rows."""

    test_questions: int
    dropped_questions: int
    predictor_report: dict[str, dict[str, float]] = {}
    categories: list[dict] = []


def complete_rows(questions: list[Question], models: list[str]) -> list[Question]:
    return [q for q in questions if all(m in q.results for m in models)]


def train_head(
    pool: ModelPool, train: list[Question], dev: list[Question], config: TrainConfig | None = None, encoder=None,
    points: int = 40,
) -> Predictor:
    """Routoo's head on ``train``, early-stopped and calibrated by routing quality on ``dev``.

    ``pool`` should carry expected output lengths (``with_expected_output``); dev questions
    without every model's result still count for log-loss, not for the routing score.
    """
    names = pool.names
    dev_rows = np.array([i for i, q in enumerate(dev) if all(m in q.results for m in names)], dtype=int)
    dev_task = RoutingTask.from_questions(pool, [dev[i] for i in dev_rows], points) if len(dev_rows) else None
    return Predictor.train(
        [q.prompt for q in train], Outcomes.from_questions(train, names).correct, names, [q.prompt for q in dev],
        Outcomes.from_questions(dev, names).correct, config, encoder, categories=[q.category for q in train],
        dev_task=dev_task, dev_rows=dev_rows,
    )


def router_name(method: str, representation: str, default: str) -> str:
    return method if representation == default else f"{method} [{representation}]"


class Evaluation:
    """Trains Routoo and the baselines on one split and traces their cost/accuracy curves on another.

    ``predictor``: use this trained predictor for the Routoo row of its own representation instead
    of training one. ``representations``: the prompt representations to compare (the predictor's
    first). ``curve_hooks``: extra rows, name -> ``CurveHook``.
    """

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
        representations: list[str] | None = None,
        curve_hooks: dict[str, CurveHook] | None = None,
        bootstrap: int = 1000,
    ):
        names = pool.names
        self.pool = with_expected_output(pool, train)
        self.train, self.dev = train, dev
        self.test = complete_rows(test, names)
        self.dropped = len(test) - len(self.test)
        if not self.test:
            raise ValueError(f"no test question has results for every pool model {names}")
        self.task = RoutingTask.from_questions(self.pool, self.test, points)
        self.correct, self.expected_cost, self.real_cost = self.task.correct, self.task.expected_cost, self.task.real_cost
        self.predictor, self.train_config = predictor, train_config
        chosen = representations or [representation_of(predictor.encoder) if predictor else "static"]
        if predictor and representation_of(predictor.encoder) != chosen[0]:
            chosen = [representation_of(predictor.encoder)] + [r for r in chosen if r != representation_of(predictor.encoder)]
        unknown = [r for r in chosen if r not in REPRESENTATIONS]
        if unknown:  # before any training
            raise ValueError(f"unknown representation(s) {unknown}; known: {REPRESENTATIONS}")
        self.representations = list(dict.fromkeys(chosen))
        self.points, self.seed, self.bootstrap = points, seed, bootstrap
        self.curve_hooks = dict(curve_hooks) if curve_hooks is not None else default_curve_hooks()
        self.rows: dict[str, Row] = {}
        self.extras = Extras(test_questions=len(self.test), dropped_questions=self.dropped)

    # ----- predicted quality of each learned router
    def _matrix(self, questions: list[Question]) -> np.ndarray:
        return Outcomes.from_questions(questions, self.pool.names).correct

    def _head(self, encoder) -> Predictor:
        return train_head(self.pool, self.train, self.dev, self.train_config, encoder, self.points)

    def predictions(self) -> dict[str, np.ndarray]:
        names = self.pool.names
        train_y, dev_y = self._matrix(self.train), self._matrix(self.dev)
        prompts = {part: [q.prompt for q in getattr(self, part)] for part in ("train", "dev", "test")}
        default = self.representations[0]
        has_categories = all(q.category for q in self.train)
        quality = {}
        for representation in self.representations:
            own = self.predictor if self.predictor and representation_of(self.predictor.encoder) == representation else None
            predictor = own or self._head(make_encoder(representation))
            if representation == default:
                self.predictor = predictor
            name = router_name(ROUTOO, representation, default)
            quality[name] = predictor.predict(prompts["test"], names)
            self.rows[name] = Row(representation=representation, method="routoo head")
            encoder = predictor.encoder
            x = {part: encoder.encode(texts, progress=True, persist=True) for part, texts in prompts.items()}
            for method in ROUTERS:
                if method == "category_lookup" and not has_categories:
                    continue
                label = f"knn (k={tune_knn(x['train'], train_y, x['dev'], dev_y)})" if method == "knn" else method
                name = router_name(label, representation, default)
                quality[name] = predicted_quality(
                    method, x["train"], train_y, x["dev"], dev_y, x["test"],
                    [q.category for q in self.train], [q.category for q in self.dev], self.seed,
                )
                self.rows[name] = Row(representation=representation, method=method)
        self.extras.predictor_report = per_model_report(quality[ROUTOO], self.correct, names)
        if len(names) == 2:
            quality["threshold"] = quality["logistic"]  # scored below by its own rule
            self.rows["threshold"] = Row(representation=default, method="threshold on logistic")
        self._train_accuracy = np.nanmean(train_y, axis=0)
        return quality

    # ----- curves
    def budget_curve(self, quality: np.ndarray) -> Curve:
        return self.task.curve(quality)

    def threshold_curve(self, weak_wrong: np.ndarray, weak: int, strong: int) -> Curve:
        """RouteLLM-style: send to the strong model when the weak one's predicted failure exceeds t."""
        curve = []
        for t in np.quantile(weak_wrong, np.linspace(0, 1, self.points)):
            chosen = np.where(weak_wrong >= t, strong, weak)
            curve.append((self.task.point(chosen), chosen))
        curve.append((self.task.point(np.full(len(weak_wrong), weak)), np.full(len(weak_wrong), weak)))
        return curve

    def random_curve(self, cheap: int, best: int) -> Curve:
        rng = np.random.default_rng(self.seed)
        draws = rng.random(len(self.test))
        curve = []
        for share in np.linspace(0, 1, self.points):
            chosen = np.where(draws < share, best, cheap)
            curve.append((self.task.point(chosen), chosen))
        return curve

    def single_curve(self, by_train_accuracy: np.ndarray) -> Curve:
        """The best single model (by training accuracy) affordable at each budget."""
        mean_cost = self.expected_cost.mean(axis=0)
        curve = []
        for budget in np.linspace(mean_cost.min(), mean_cost.max(), self.points):
            affordable = np.flatnonzero(mean_cost <= budget + 1e-15)
            model = affordable[by_train_accuracy[affordable].argmax()]
            chosen = np.full(len(self.test), model)
            curve.append((self.task.point(chosen), chosen))
        return curve

    # ----- the whole run
    def run(self, reference_models: list[str] | None = None) -> EvaluationReport:
        names = self.pool.names
        singles = {name: self.task.point(np.full(len(self.test), j)) for j, name in enumerate(names)}
        cheapest_correct = np.where(self.correct == 1, self.real_cost, np.inf)
        any_correct = np.isfinite(cheapest_correct).any(axis=1)
        oracle = self.task.point(np.where(any_correct, cheapest_correct.argmin(axis=1), self.real_cost.argmin(axis=1)))

        quality = self.predictions()
        cheap = self.task.cheapest
        best = int(self._train_accuracy.argmax())
        curves: dict[str, Curve] = {}
        for name, matrix in quality.items():
            if name == "threshold":
                weak, strong = (0, 1) if self.expected_cost[:, 0].mean() < self.expected_cost[:, 1].mean() else (1, 0)
                curves[name] = self.threshold_curve(1 - matrix[:, weak], weak, strong)
            else:
                curves[name] = self.budget_curve(matrix)
        for name, hook in self.curve_hooks.items():
            curve = hook(self, self.predictor)
            if curve is not None:
                curves[name] = curve
                self.rows[name] = Row(representation=self.representations[0], method=name)
        curves["random"] = self.random_curve(cheap, best)
        curves["best_single"] = self.single_curve(self._train_accuracy)
        self.rows["random"] = Row(representation=None, method="random mix")
        self.rows["best_single"] = Row(representation=None, method="best single model")

        routers = {name: [p for p, _ in curve] for name, curve in curves.items()}
        priciest = int(self.expected_cost.mean(axis=0).argmax())
        if reference_models:
            self.extras.categories = self.category_table(quality[ROUTOO], reference_models[0], singles)
        intervals, paired = bootstrap_aiq(self.task, curves, self.bootstrap, self.seed)
        pairs = self.pair_scores(curves, singles, priciest) if len(names) == 2 else {}
        return EvaluationReport(
            single_models=singles,
            oracle=oracle,
            routers=routers,
            aiq={name: self.task.aiq_of(points) for name, points in routers.items()},
            accuracy_at_cost_of={
                name: {m: accuracy_at_cost(points, singles[m].cost_per_query) for m in names}
                for name, points in routers.items()
            },
            cost_to_match={
                name: {m: cost_to_match(points, singles[m].accuracy) for m in names} for name, points in routers.items()
            },
            aiq_ci=intervals,
            aiq_minus_routoo_ci=paired,
            rows=self.rows,
            best_model=names[best],
            priciest_share_to_95={
                name: _share_to_reach(curve, priciest, 0.95 * singles[names[priciest]].accuracy)
                for name, curve in curves.items()
            },
            cpt50={name: scores.cpt50 for name, scores in pairs.items()},
            cpt80={name: scores.cpt80 for name, scores in pairs.items()},
            apgr={name: scores.apgr for name, scores in pairs.items()},
            predictor=self.predictor.name,
        )

    def pair_scores(self, curves: dict[str, Curve], singles: dict[str, Point], strong: int) -> dict[str, PairScores]:
        """RouteLLM's CPT(50%), CPT(80%) and APGR of each curve on a two-model pool, the priciest
        model being the strong one; a curve's share of strong calls is where its answers came from."""
        weak = 1 - strong
        names = self.pool.names
        return {
            name: pair_scores(
                np.array([(chosen == strong).mean() for _, chosen in curve]), np.array([p.accuracy for p, _ in curve]),
                singles[names[weak]].accuracy, singles[names[strong]].accuracy,
            )
            for name, curve in curves.items()
        }

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


def bootstrap_aiq(task: RoutingTask, curves: dict[str, Curve], resamples: int, seed: int) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """95% percentile intervals of each curve's AIQ over test questions resampled with replacement,
    keeping each operating point's choices; and of each router's AIQ minus Routoo's on the same resamples."""
    if resamples == 0:
        return {}, {}
    n = len(task.correct)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples).astype(float) / n
    singles_cost = weights @ task.real_cost
    singles_accuracy = weights @ task.correct
    rows = np.arange(n)
    draws = {}
    for name, curve in curves.items():
        cost = weights @ np.stack([task.real_cost[rows, chosen] for _, chosen in curve]).T
        accuracy = weights @ np.stack([task.correct[rows, chosen] for _, chosen in curve]).T
        cost = np.concatenate([cost, singles_cost[:, [task.cheapest]]], axis=1)  # the curve's anchor
        accuracy = np.concatenate([accuracy, singles_accuracy[:, [task.cheapest]]], axis=1)
        draws[name] = np.array([
            aiq_of_arrays(cost[b], accuracy[b], singles_cost[b].min(), singles_cost[b].max()) for b in range(resamples)
        ])

    def interval(values: np.ndarray) -> Interval:
        low, high = np.percentile(values, [2.5, 97.5])
        return Interval(mean=float(values.mean()), low=float(low), high=float(high))

    intervals = {name: interval(values) for name, values in draws.items()}
    paired = {name: interval(values - draws[ROUTOO]) for name, values in draws.items() if name != ROUTOO and ROUTOO in draws}
    return intervals, paired


def _share_to_reach(curve: Curve, model: int, accuracy: float) -> float | None:
    shares = [float((chosen == model).mean()) for point, chosen in curve if point.accuracy >= accuracy]
    return min(shares) if shares else None


def format_table(report: EvaluationReport, extras: Extras, reference_models: list[str]) -> str:
    """Plain-text tables: single models, oracle, then one row per representation x method."""
    lines = [f"test questions: {extras.test_questions} (dropped {extras.dropped_questions} without every model's result)"]
    lines.append(f"\n{'model':34s} {'accuracy':>9s} {'USD/1k q':>9s}")
    for name, point in sorted(report.single_models.items(), key=lambda kv: kv[1].cost_per_query):
        lines.append(f"{name:34s} {point.accuracy:9.3f} {point.cost_per_query * 1000:9.4f}")
    lines.append(f"{'oracle (cheapest correct)':34s} {report.oracle.accuracy:9.3f} {report.oracle.cost_per_query * 1000:9.4f}")
    references = reference_models or ([report.best_model] if report.best_model else [])
    lines.append(f"\nroutoo = {report.predictor}; AIQ with its 95% bootstrap interval; "
                 f"'vs routoo' = paired 95% interval of (router - routoo)")
    header = f"{'representation':15s} {'method':24s} {'AIQ':>6s} {'95% CI':>15s} {'vs routoo':>17s}"
    for ref in references:
        header += f" | acc@cost({ref[:22]}) {'cost to match':>13s}"
    lines.append(header)
    for name in sorted(report.aiq, key=lambda n: -report.aiq[n]):
        row = report.rows.get(name, Row(representation=None, method=name))
        ci = report.aiq_ci.get(name)
        ci_text = f"[{ci.low:.3f}, {ci.high:.3f}]" if ci else ""
        diff = report.aiq_minus_routoo_ci.get(name)
        diff_text = f"[{diff.low:+.3f}, {diff.high:+.3f}]" if diff else ""
        method = name.split(" [")[0] if name.endswith("]") else name
        line = f"{row.representation or '-':15s} {method:24s} {report.aiq[name]:6.3f} {ci_text:>15s} {diff_text:>17s}"
        for ref in references:
            acc = report.accuracy_at_cost_of[name][ref]
            cost = report.cost_to_match[name][ref]
            ref_point = report.single_models[ref]
            acc_text = "-" if acc is None else f"{acc:.3f} ({(acc - ref_point.accuracy) * 100:+.1f})"
            cost_text = "never" if cost is None else f"{cost / ref_point.cost_per_query:.0%}"
            line += f" | {acc_text:>{len(ref[:22]) + 10}s} {cost_text:>13s}"
        lines.append(line)
    if len(report.single_models) == 2:
        lines.append("\ncalls to the priciest model: for 95% of its accuracy, and RouteLLM's CPT(50%), CPT(80%) "
                     "(for 50% / 80% of the accuracy gap) and APGR:")
        lines.append(f"  {'router':34s} {'95%':>7s} {'CPT(50%)':>9s} {'CPT(80%)':>9s} {'APGR':>6s}")

        def share(value: float | None) -> str:
            return "never" if value is None else f"{value:.1%}"

        for name, to_95 in report.priciest_share_to_95.items():
            apgr = report.apgr.get(name)
            lines.append(f"  {name:34s} {share(to_95):>7s} {share(report.cpt50.get(name)):>9s} "
                         f"{share(report.cpt80.get(name)):>9s} {'-' if apgr is None else f'{apgr:.3f}':>6s}")
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
