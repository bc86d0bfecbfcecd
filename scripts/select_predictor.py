"""Choose the predictor's architecture by routing quality, with k-fold cross-validation on train+dev.

Never reads the test split. Each fold trains every candidate on the other folds (an eighth of them
held out for early stopping and the temperature) and scores the AIQ of its predictions on the fold;
the table gives the mean, the spread over folds, and the paired difference to the first row.

    python scripts/select_predictor.py --dataset mmlu_pro --pool open --folds 5 \
        [--representation minilm|reader:L16|reader:L8-L16] [--raw-dir RAW] [--only NAME,...]

``reader:`` representations read the raw LM reads written by ``scripts/read_bundled_prompts.py read``
and project them with a PCA fitted on the training split (no labels). With --raw-dir, every
representation is compared on the questions read so far. Results go to --json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from routoo_shared.evaluation.baselines import ROUTERS, predicted_quality
from routoo_shared.data.formats import Outcomes, Question, bundled, carve_dev, load_questions, split_of
from routoo_shared.routing.models_file import pool_names
from routoo_shared.predictors.lm_reader import UNCERTAINTY, fit_projection
from routoo_shared.routing.pool import ModelPool
from routoo_shared.predictors.predictor import Predictor, TrainConfig
from routoo_shared.evaluation.routing_quality import RoutingTask, with_expected_output

# Candidate heads: name -> TrainConfig overrides (ensemble of 1 during selection). No commas in names (--only).
HEADS = {
    "head: difficulty+embedding (old)": dict(categories=False, model_embedding=True, start_from_rates=False),
    "head: difficulty+categories": dict(categories=True, model_embedding=False, start_from_rates=False),
    "head: difficulty+categories+embedding": dict(categories=True, model_embedding=True, start_from_rates=False),
    "head: difficulty+categories with AIQ early stopping": dict(
        categories=True, model_embedding=False, start_from_rates=False, early_stopping="aiq"
    ),
    "head: difficulty+categories from rates": dict(categories=True, model_embedding=False, start_from_rates=True),
    "head: difficulty+categories+embedding from rates": dict(categories=True, model_embedding=True, start_from_rates=True),
}


class FixedVectors:
    """Stands in for an encoder with precomputed vectors (selection runs never encode)."""

    kind = "fixed"
    max_length = 0

    def __init__(self, name: str, vectors: dict[str, np.ndarray]):
        self.name, self.vectors = name, vectors
        self.dim = len(next(iter(vectors.values())))

    def encode(self, texts: list[str], progress: bool = False, persist: bool = False) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


def minilm_vectors(questions: list[Question]) -> FixedVectors:
    from routoo_shared.predictors.encoder import PromptEncoder

    texts = [q.prompt for q in questions]
    return FixedVectors("minilm", dict(zip(texts, PromptEncoder().encode(texts))))


def reader_vectors(questions: list[Question], dataset: str, raw_dir: Path, layers: tuple[int, ...], dim: int) -> FixedVectors:
    import importlib.util

    spec = importlib.util.spec_from_file_location("read_bundled", Path(__file__).parent / "read_bundled_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reads = module.raw_reads(raw_dir, dataset, layers, hidden=576)
    train = np.stack([reads[q.id] for q in questions if split_of(q.id) == "train"])
    projection = fit_projection(train, dim)
    return FixedVectors(f"reader-L{'-'.join(map(str, layers))}", {q.prompt: projection(reads[q.id][None])[0] for q in questions})


def _read_ids(folder: Path) -> list[str]:
    ids = []
    for path in sorted(folder.glob("*_[0-9][0-9][0-9][0-9].npz")):
        with np.load(path) as archive:
            ids += archive["ids"].tolist()
    return ids


def fold_of(question_id: str, folds: int) -> int:
    return int(hashlib.sha256(f"fold:{question_id}".encode()).hexdigest()[:8], 16) % folds


def evaluate_fold(pool, fit, dev, held, vectors, only, points) -> dict[str, float]:
    names = pool.names
    pool = with_expected_output(pool, fit)
    held = [q for q in held if all(m in q.results for m in names)]
    task = RoutingTask.from_questions(pool, held, points)
    dev_complete = np.array([i for i, q in enumerate(dev) if all(m in q.results for m in names)])
    dev_task = RoutingTask.from_questions(pool, [dev[i] for i in dev_complete], points)
    fit_y, dev_y = (Outcomes.from_questions(qs, names).correct for qs in (fit, dev))
    prompts = [q.prompt for q in held]
    scores = {}
    for name, overrides in HEADS.items():
        if only and name not in only:
            continue
        start = time.time()
        predictor = Predictor.train(
            [q.prompt for q in fit], fit_y, names, [q.prompt for q in dev], dev_y,
            TrainConfig(ensemble=1, **overrides), encoder=vectors, categories=[q.category for q in fit],
            dev_task=dev_task, dev_rows=dev_complete,
        )
        scores[name] = task.aiq(predictor.predict(prompts, names))
        print(f"  {name:55s} {scores[name]:.4f}  ({time.time() - start:.0f} s)", flush=True)
    x = {split: vectors.encode([q.prompt for q in qs]) for split, qs in (("fit", fit), ("dev", dev), ("held", held))}
    for router in ROUTERS:
        if only and router not in only:
            continue
        quality = predicted_quality(router, x["fit"], fit_y, x["dev"], dev_y, x["held"],
                                    [q.category for q in fit], [q.category for q in dev])
        scores[router] = task.aiq(quality)
        print(f"  {router:55s} {scores[router]:.4f}", flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mmlu_pro")
    parser.add_argument("--pool", default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--representation", default="minilm")
    parser.add_argument("--raw-dir", type=Path, default=None)
    parser.add_argument("--reader-dim", type=int, default=128)
    parser.add_argument("--only", default="")
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    questions = [q for q in load_questions(bundled(args.dataset)) if split_of(q.id) != "test"]
    if args.raw_dir:  # compare representations on the questions the LM reader has read
        read = set(_read_ids(args.raw_dir / args.dataset))
        questions = [q for q in questions if q.id in read]
        print(f"{len(questions)} train+dev questions read by the LM reader")
    available = [m["name"] for m in json.loads(bundled(args.dataset, "models.json").read_text())["models"]]
    pool = ModelPool.from_models_json(bundled(args.dataset, "models.json"), pool_names(args.pool, available))
    if args.representation == "minilm":
        vectors = minilm_vectors(questions)
    else:
        layers = tuple(int(part.removeprefix("L")) for part in args.representation.removeprefix("reader:").split("-"))
        vectors = reader_vectors(questions, args.dataset, args.raw_dir, layers, args.reader_dim)
    only = set(filter(None, args.only.split(",")))
    results: dict[str, list[float]] = {}
    for fold in range(args.folds):
        print(f"fold {fold + 1}/{args.folds}", flush=True)
        held = [q for q in questions if fold_of(q.id, args.folds) == fold]
        fit, dev = carve_dev([q for q in questions if fold_of(q.id, args.folds) != fold and split_of(q.id) == "train"]
                             + [q for q in questions if fold_of(q.id, args.folds) != fold and split_of(q.id) == "dev"])
        for name, score in evaluate_fold(pool, fit, dev, held, vectors, only, args.points).items():
            results.setdefault(name, []).append(score)
    first = next(iter(results))
    print(f"\n{args.dataset} {args.pool or 'all'} {args.representation}: AIQ over {args.folds} folds "
          f"(mean, sd over folds, paired difference to '{first}', folds it wins)")
    for name, scores in sorted(results.items(), key=lambda kv: -np.mean(kv[1])):
        diff = np.array(scores) - np.array(results[first])
        print(f"{name:55s} {np.mean(scores):.4f} {np.std(scores):.4f} {diff.mean():+.4f} {int((diff > 0).sum())}/{len(diff)}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "aiq": results}, indent=1))


if __name__ == "__main__":
    main()
