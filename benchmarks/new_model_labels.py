"""A new model's prediction quality (AUC) against the number of its labels (issue 11, item 3).

Each mmlu_pro model is held out in turn, in folds (``--folds``, default 5: models i, i+5, ... form
fold i, so each family is spread over folds): a predictor is trained on the other folds' models
(train split, early stopping on dev), then each held-out model is learned from n of its real
labels, n in 25/50/100/200/400, by

- ``add_model + strata`` / ``+ anchors``: ``Predictor.add_model`` on the calibration prompts that
  ``routoo_shared.calibration.select_prompts`` picks from the bank (the train split) by difficulty
  strata or by k-means anchors;
- ``add_model + random``: ``add_model`` on n random bank prompts (mean over seeds);
- ``scratch``: a logistic regression on the prompt vectors from the same n random labels, learning
  the model alone (no transfer from the other models);
- ``prior``: zero labels, predicted "like" the known model of nearest price (``prior_like``);
- ``full``: the bundled predictor, trained jointly on every model's train-split labels (~7,600
  each, an ensemble of 3), the full-data reference.

AUC (ranking: which prompts the model gets right) and log-loss (also its level: how often) are
measured per held-out model on the dev split (where the default strategy is chosen) and on the
test split (reported), then averaged over held-out models.

    OMP_NUM_THREADS=1 python benchmarks/new_model_labels.py [--models a,b] [--ensemble 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from routoo_shared.predictors.calibration import describe_questions, question_difficulty, select_prompts
from routoo_shared.data.formats import Outcomes, bundled, load_questions, split_of
from routoo_shared.routing.models_file import load_pool
from routoo_shared.evaluation.metrics import auc, log_loss
from routoo_shared.predictors.predictor import Predictor, TrainConfig
from routoo_shared.routing.router import BUNDLED_PREDICTOR

SIZES = (25, 50, 100, 200, 400)
RESULTS = Path(__file__).resolve().parent / "results" / "new_model_labels.json"


def quality(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"auc": auc(probs, labels), "log_loss": log_loss(probs, labels)}


def model_quality(predictor: Predictor, name: str, prompts: list[str], labels: np.ndarray) -> dict[str, float]:
    return quality(predictor.predict(prompts, [name])[:, 0], labels)


def scratch_quality(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> dict[str, float]:
    """A per-model logistic regression on prompt vectors (sklearn, L2, C=1)."""
    from sklearn.linear_model import LogisticRegression

    if len(set(y_train.tolist())) < 2:  # one class seen: its smoothed rate, no ranking
        return quality(np.full(len(y_eval), (y_train.sum() + 0.5) / (len(y_train) + 1)), y_eval)
    classifier = LogisticRegression(C=1.0, max_iter=2000).fit(x_train, y_train)
    return quality(classifier.predict_proba(x_eval)[:, 1], y_eval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated held-out models (default: all 29)")
    parser.add_argument("--folds", type=int, default=5, help="held-out groups; 29 = one model at a time")
    parser.add_argument("--ensemble", type=int, default=1, help="predictor ensemble members (bundled: 3)")
    parser.add_argument("--seeds", type=int, default=2, help="random selections averaged per size")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)

    questions = load_questions(bundled("mmlu_pro"))
    pool = load_pool(bundled("mmlu_pro", "models.json"))
    split = {name: [q for q in questions if split_of(q.id) == name] for name in ("train", "dev", "test")}
    held_out = args.models.split(",") if args.models else pool.names
    prices = {m.name: m.price_in_per_mtok + m.price_out_per_mtok for m in pool.models}
    rows: dict[str, dict] = json.loads(args.out.read_text())["models"] if args.out.exists() else {}
    full = Predictor.load(BUNDLED_PREDICTOR)

    folds = [[m for j, m in enumerate(pool.names) if j % args.folds == k and m in held_out] for k in range(args.folds)]
    for fold in folds:
        todo = [m for m in fold if m not in rows]
        if not todo:
            continue
        started = time.time()
        known = [m for m in pool.names if m not in fold]
        predictor = Predictor.train(
            [q.prompt for q in split["train"]],
            Outcomes.from_questions(split["train"], known).correct,
            known,
            [q.prompt for q in split["dev"]],
            Outcomes.from_questions(split["dev"], known).correct,
            TrainConfig(ensemble=args.ensemble),
            categories=[q.category for q in split["train"]],  # the shipped head: category offsets + difficulty
        )
        saved = predictor.save(tempfile.mkdtemp(prefix="routoo-held-out-"))
        features = describe_questions(split["train"], known, predictor.encoder)
        difficulty = question_difficulty(split["train"], known)
        print(f"fold {fold}: predictor trained on {len(known)} models in {time.time() - started:.0f} s", flush=True)
        for name in todo:
            rows[name] = held_out_curve(name, known, predictor, saved, features, difficulty, split, prices, args.seeds, full)
            _write(args.out, rows)
    print(table(rows))


def held_out_curve(name, known, predictor, saved, features, difficulty, split, prices, seeds, full) -> dict:
    """AUC of one held-out model for every method and label count (see the module docstring)."""
    started = time.time()
    has_label = np.array([name in q.results for q in split["train"]])
    bank = [q for q, kept in zip(split["train"], has_label) if kept]
    features, difficulty = features[has_label], difficulty[has_label]
    bank_labels = np.array([q.results[name].score for q in bank], dtype=np.float32)
    evaluation = {
        part: ([q.prompt for q in split[part] if name in q.results], np.array([q.results[name].score for q in split[part] if name in q.results]))
        for part in ("dev", "test")
    }
    vectors = predictor.encoder.encode([q.prompt for q in bank])
    eval_vectors = {part: predictor.encoder.encode(prompts) for part, (prompts, _) in evaluation.items()}

    def learned(rows_: np.ndarray) -> dict[str, float]:
        copy = Predictor.load(saved)  # a fresh copy for each labelled set
        copy.add_model(name, [bank[i].prompt for i in rows_], bank_labels[rows_])
        return {part: model_quality(copy, name, *evaluation[part]) for part in evaluation}

    like = min(known, key=lambda m: abs(prices[m] - prices[name]))
    result = {
        "prior_like": like,
        "prior": {part: model_quality(predictor, like, *evaluation[part]) for part in evaluation},
        "full": {part: model_quality(full, name, *evaluation[part]) for part in evaluation},
        "labels_in_bank": len(bank),
        "by_size": {},
    }
    for n in SIZES:
        anchors = learned(select_prompts(features, difficulty, n, "anchors"))
        strata = _mean([learned(select_prompts(features, difficulty, n, "strata", seed)) for seed in range(seeds)])
        draws = [select_prompts(features, difficulty, n, "random", seed) for seed in range(seeds)]
        randoms = [learned(rows_) for rows_ in draws]
        scratch = [
            {part: scratch_quality(vectors[rows_], bank_labels[rows_], eval_vectors[part], evaluation[part][1]) for part in evaluation}
            for rows_ in draws
        ]
        result["by_size"][str(n)] = {
            "add_model+strata": strata,
            "add_model+anchors": anchors,
            "add_model+random": _mean(randoms),
            "scratch": _mean(scratch),
        }
    result["seconds"] = round(time.time() - started, 1)
    curve = " ".join(f"{n}:{r['add_model+strata']['test']['auc']:.3f}" for n, r in result["by_size"].items())
    print(f"{name}: test AUC full {result['full']['test']['auc']:.3f}, strata {curve} ({result['seconds']} s)", flush=True)
    return result


def _mean(values: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {part: {k: float(np.mean([v[part][k] for v in values])) for k in values[0][part]} for part in values[0]}


METHODS = ("add_model+strata", "add_model+anchors", "add_model+random", "scratch")


def summary(rows: dict[str, dict], part: str, metric: str) -> dict[str, dict[str, float]]:
    """Mean ``metric`` over held-out models, per method and size."""
    out = {key: {"0": float(np.mean([r[key][part][metric] for r in rows.values()]))} for key in ("full", "prior")}
    for method in METHODS:
        out[method] = {n: float(np.mean([r["by_size"][n][method][part][metric] for r in rows.values()])) for n in map(str, SIZES)}
    return out


def table(rows: dict[str, dict]) -> str:
    lines = []
    for part in ("dev", "test"):
        for metric in ("auc", "log_loss"):
            s = summary(rows, part, metric)
            full = s["full"]["0"]
            share = metric == "auc"
            lines.append(f"\n{part} split, mean {metric} over {len(rows)} held-out models" + (" (share of full-data AUC)" if share else ""))
            lines.append(f"{'method':20s} " + " ".join(f"{n:>13s}" for n in map(str, SIZES)))
            for method in METHODS:
                cells = [f"{s[method][n]:.3f}" + (f" ({s[method][n] / full:4.0%})" if share else "       ") for n in map(str, SIZES)]
                lines.append(f"{method:20s} " + " ".join(cells))
            lines.append(f"{'prior (0 labels)':20s} {s['prior']['0']:.3f}" + (f" ({s['prior']['0'] / full:.0%})" if share else ""))
            lines.append(f"{'full (all labels)':20s} {full:.3f}")
    return "\n".join(lines)


def _write(path: Path, rows: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "sizes": list(SIZES),
        "models": rows,
        "summary": {part: {metric: summary(rows, part, metric) for metric in ("auc", "log_loss")} for part in ("dev", "test")},
    }
    path.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
