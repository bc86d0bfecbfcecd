"""Cascades against the same predictor without them, on mmlu_pro, with the bundled predictor.

Rows: the budget planner's curve (``routoo`` in ``routoo evaluate``), the trade-off sweep with
cascades switched off (``min_gain`` out of reach), and with them on (``routoo+cascade``). The
sweep-without-cascades row separates the cascade's effect from the sweep's own (the planner's
greedy use of leftover budget).

    PYTHONPATH=. python3 scripts/cascade_report.py --pool open --on test
    PYTHONPATH=. python3 scripts/cascade_report.py --pool open --on dev   # 2-fold inside dev

``--on dev`` fits the policy on one half of dev and scores the other half, both ways, and
averages: the setting on which the policy's defaults were chosen. ``--on test`` fits on all of dev.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np

from routoo_shared.evaluation.cascades import replay_cascades
from routoo_shared.data.formats import bundled, load_questions
from routoo_shared.routing.models_file import pool_names
from routoo_shared.evaluation.harness import Evaluation, Point, accuracy_at_cost, aiq, cost_to_match
from routoo_shared.routing.pool import ModelPool
from routoo_shared.routing.router import Router


def rows(evaluation: Evaluation, predictor, reference: str) -> dict[str, dict[str, float | None]]:
    names = evaluation.pool.names
    singles = evaluation.real_cost.mean(0)
    cheapest = int(evaluation.expected_cost.mean(0).argmin())
    start = Point(cost_per_query=float(singles[cheapest]), accuracy=float(evaluation.correct[:, cheapest].mean()))
    ref = names.index(reference)
    ref_cost, ref_accuracy = float(singles[ref]), float(evaluation.correct[:, ref].mean())
    quality = predictor.predict([q.prompt for q in evaluation.test], names)
    cascades = replay_cascades(evaluation, predictor)
    curves = {
        "planner (routoo)": [p for p, _ in evaluation.budget_curve(quality)],
        "sweep, no cascade": [r.point for r in replay_cascades(evaluation, predictor, min_gain=10.0)],
        "sweep + cascade": [r.point for r in cascades],
    }
    out = {}
    for name, points in curves.items():
        accuracy, match = accuracy_at_cost(points, ref_cost), cost_to_match(points, ref_accuracy)
        out[name] = {
            "aiq": aiq(points + [start], float(singles.min()), float(singles.max())),
            "accuracy_at_reference_cost": accuracy,
            "cost_to_match_share": None if match is None else match / ref_cost,
        }
    # how the cascade router spends at its most accurate operating point within the reference's cost
    affordable = [r for r in cascades if r.point.cost_per_query <= ref_cost * (1 + 1e-9)]
    if affordable:
        best = max(affordable, key=lambda r: r.point.accuracy)
        out["sweep + cascade"].update(
            share_cascaded_at_reference_cost=float(best.cascaded.mean()),
            escalation_rate_at_reference_cost=float(best.escalated[best.cascaded].mean()) if best.cascaded.any() else 0.0,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="open")
    parser.add_argument("--on", choices=("dev", "test"), default="test")
    parser.add_argument("--reference", default="Meta-Llama-3_1-70B-Instruct")
    parser.add_argument("--json")
    args = parser.parse_args()
    router = Router.from_directory()
    questions = load_questions(bundled("mmlu_pro"))
    names = pool_names(args.pool, router.pool.names)
    pool = ModelPool.from_models_json(bundled("mmlu_pro", "models.json"), names)
    train = load_questions(bundled("mmlu_pro"), split="train")
    dev = load_questions(bundled("mmlu_pro"), split="dev")
    if args.on == "test":
        test = load_questions(bundled("mmlu_pro"), split="test")
        folds = [Evaluation(pool, train, dev, test, predictor=router.predictor)]
    else:
        half = {q.id: int(hashlib.sha256(f"fold:{q.id}".encode()).hexdigest()[:8], 16) % 2 for q in questions}
        folds = [
            Evaluation(pool, train, [q for q in dev if half[q.id] != k], [q for q in dev if half[q.id] == k],
                       predictor=router.predictor)
            for k in (0, 1)
        ]
    results = [rows(evaluation, router.predictor, args.reference) for evaluation in folds]
    print(f"mmlu_pro, pool {args.pool} ({len(names)} models), on {args.on}"
          + (" (mean of 2 folds)" if len(folds) > 1 else "") + f"; reference {args.reference}")
    print(f"{'router':20s} {'AIQ':>7s} {'acc@ref cost':>12s} {'cost to match':>13s}")
    summary = {}
    for name in results[0]:
        mean = {key: (None if any(r[name].get(key) is None for r in results) else float(np.mean([r[name][key] for r in results])))
                for key in results[0][name]}
        summary[name] = mean
        match = mean["cost_to_match_share"]
        print(f"{name:20s} {mean['aiq']:7.4f} {mean['accuracy_at_reference_cost'] or float('nan'):12.3f} "
              f"{'never' if match is None else f'{match:.0%}':>13s}")
    use = summary["sweep + cascade"]
    print(f"at the reference's cost: {use.get('share_cascaded_at_reference_cost', 0):.1%} of prompts cascaded, "
          f"{use.get('escalation_rate_at_reference_cost', 0):.1%} of those escalated")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"pool": args.pool, "on": args.on, "reference": args.reference, "rows": summary}, handle, indent=1)


if __name__ == "__main__":
    main()
