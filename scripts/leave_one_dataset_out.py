"""Traffic the router has never seen: train the general predictor on all bundled datasets but one, test on
the held-out one's test split (about 2 minutes a dataset on 2 cores).

    python scripts/leave_one_dataset_out.py [--datasets task_mix,routellm_gsm8k] [--json benchmarks/results/lodo.json]

For each dataset whose models (at least two) appear in the other datasets, the pool is those models;
the in-domain predictor is the bundled general one (trained on every dataset's train split, this
one's included); both trace the same budget grid on the same test questions. The in-domain gain is
AIQ minus the random mix's; "kept" is the share of it the held-out predictor keeps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from routoo_shared.data import split_of
from routoo_shared.datasets import BUNDLED_DATASETS
from routoo_shared.evaluation.harness import bootstrap_aiq, complete_rows
from routoo_shared.evaluation.routing_quality import RoutingTask, with_expected_output
from routoo_shared.predictors.general import bundled_questions, test_texts, train_general, without_test_texts
from routoo_shared.predictors.predictor import Predictor, TrainConfig
from routoo_shared.routing.router import BUNDLED_PREDICTOR, Router


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(BUNDLED_DATASETS))
    parser.add_argument("--ensemble", type=int, default=1)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    by_dataset = bundled_questions()
    clean = without_test_texts(by_dataset, test_texts(by_dataset))
    bundled = Router.from_directory(BUNDLED_PREDICTOR, pool_names=",".join(BUNDLED_DATASETS))
    in_domain = bundled.predictor
    results = {}
    for held in args.datasets.split(","):
        others = {name: rows for name, rows in clean.items() if name != held}
        elsewhere = {m for rows in others.values() for q in rows for m in q.results}
        names = [m for m in Router.from_directory(BUNDLED_PREDICTOR, pool_names=held).pool.names if m in elsewhere]
        if len(names) < 2:
            print(f"{held}: {len(names)} of its models appear elsewhere; skipped")
            continue
        fit = {name: [q for q in rows if split_of(q.id) == "train"] for name, rows in others.items()}
        dev = {name: [q for q in rows if split_of(q.id) == "dev"] for name, rows in others.items()}
        unseen, _ = train_general(fit, dev, TrainConfig(ensemble=args.ensemble))
        test = complete_rows([q for q in by_dataset[held] if split_of(q.id) == "test"], names)
        pool = with_expected_output(bundled.pool.subset(names), [q for q in by_dataset[held] if split_of(q.id) == "train"])
        task = RoutingTask.from_questions(pool, test)
        prompts = [q.prompt for q in test]
        curves = {"routoo": task.curve(in_domain.predict(prompts, names)), "held out": task.curve(unseen.predict(prompts, names))}
        draws = np.random.default_rng(0).random(len(test))
        cheap, best = task.cheapest, int(task.correct.mean(0).argmax())
        curves["random"] = [(task.point(c), c) for c in (np.where(draws < s, best, cheap) for s in np.linspace(0, 1, 40))]
        intervals, paired = bootstrap_aiq(task, curves, args.bootstrap, 0)
        aiq = {name: task.aiq_of([p for p, _ in curve]) for name, curve in curves.items()}
        gain = aiq["routoo"] - aiq["random"]
        kept = (aiq["held out"] - aiq["random"]) / gain if gain > 0 else None
        results[held] = {"pool": names, "test_questions": len(test), "aiq": aiq,
                         "aiq_ci": {k: v.model_dump() for k, v in intervals.items()},
                         "held_out_minus_in_domain_ci": paired["held out"].model_dump(), "gain_kept": kept}
        print(f"{held:15s} {len(names):2d} models, {len(test):5d} test questions: in-domain {aiq['routoo']:.3f}, "
              f"held out {aiq['held out']:.3f} [{intervals['held out'].low:.3f}, {intervals['held out'].high:.3f}], "
              f"random {aiq['random']:.3f}; gain kept {'-' if kept is None else f'{kept:.0%}'}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
