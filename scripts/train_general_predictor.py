"""Train the bundled general predictor on every bundled dataset's train split (about 5 minutes on 2 cores).

    python scripts/train_general_predictor.py [--out routoo_shared/datasets/predictors/general]

Writes ``predictor.json`` / ``predictor.safetensors`` (the static encoder, one column a (model,
dataset), ``routoo_shared.predictors.general``), ``pool.json`` (every known model's spec: mmlu_pro's
as the previous bundled predictor shipped them, the others from their dataset's ``models.json``),
``pools.json`` (named groups: ``default`` and ``open`` = mmlu_pro's 29 and 24 models, and each
dataset's models) and ``known_models.json`` (each model's datasets, label counts and other names),
which ``routoo models`` prints. Early stopping and the temperature use the dev splits; prompts that
appear in any dataset's test split are never trained on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from routoo_shared.data import load_pool, read_models, split_of
from routoo_shared.datasets import BUNDLED_DATASETS, BUNDLED_DIR
from routoo_shared.predictors.general import bundled_questions, test_texts, train_general, without_test_texts
from routoo_shared.predictors.predictor import TrainConfig
from routoo_shared.routing.known_models import aliases_of, canonical
from routoo_shared.routing.models_file import pool_names
from routoo_shared.routing.pool import ModelPool

OUT = BUNDLED_DIR / "predictors" / "general"
MMLU_PRO_POOL = BUNDLED_DIR / "predictors" / "mmlu_pro" / "pool.json"  # its specs, as shipped before


def pool_of(models: list[str], by_dataset, fit) -> ModelPool:
    """One spec a known model: the first bundled dataset that lists it gives its prices."""
    shipped = {m.name: m for m in ModelPool.model_validate_json(MMLU_PRO_POOL.read_text()).models}
    specs = {}
    for dataset in BUNDLED_DATASETS:
        sheet = BUNDLED_DIR / dataset / "models.json"
        for name in read_models(sheet).names:
            model = canonical(name)
            if model in specs or model not in models:
                continue
            spec = shipped.get(model) or load_pool(sheet, [name]).models[0].model_copy(update={"name": model})
            if model not in shipped:
                tokens = [r.output_tokens for rows in fit.values() for q in rows for m, r in q.results.items()
                          if m == model and r.output_tokens]
                spec = spec.model_copy(update={"expected_output_tokens": float(np.mean(tokens)) if tokens else 256.0})
            specs[model] = spec
    return ModelPool(models=[specs[m] for m in models])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--ensemble", type=int, default=3)
    args = parser.parse_args()
    by_dataset = bundled_questions()
    clean = without_test_texts(by_dataset, test_texts(by_dataset))
    fit = {name: [q for q in rows if split_of(q.id) == "train"] for name, rows in clean.items()}
    dev = {name: [q for q in rows if split_of(q.id) == "dev"] for name, rows in clean.items()}
    predictor, rows = train_general(fit, dev, TrainConfig(ensemble=args.ensemble))
    predictor.save(args.out)
    pool = pool_of(predictor.models, by_dataset, fit)
    (args.out / "pool.json").write_text(pool.model_dump_json(indent=1))
    mmlu_pro = read_models(BUNDLED_DIR / "mmlu_pro" / "models.json").names
    groups = {"default": mmlu_pro, "open": pool_names("open", mmlu_pro)}
    groups |= {name: list(dict.fromkeys(canonical(m) for m in read_models(BUNDLED_DIR / name / "models.json").names))
               for name in BUNDLED_DATASETS}
    (args.out / "pools.json").write_text(json.dumps(groups, indent=1))
    spellings = {}
    for name in BUNDLED_DATASETS:
        for model in read_models(BUNDLED_DIR / name / "models.json").names:
            spellings.setdefault(canonical(model), set()).add(model)
    counts = rows.label_counts()
    known = {model: {"datasets": counts[model], "aliases": aliases_of(model, spellings.get(model, ()))} for model in predictor.models}
    (args.out / "known_models.json").write_text(json.dumps(known, indent=1))
    print(f"saved to {args.out}: {len(predictor.models)} models, {len(predictor.column_models)} (model, dataset) columns, "
          f"{len(rows.prompts)} training prompts, temperature {predictor.temperature:.2f}")


if __name__ == "__main__":
    main()
