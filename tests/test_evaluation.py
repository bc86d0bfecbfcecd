"""`routoo evaluate` on small slices with the shipped predictor: the table's rows, intervals and JSON keys."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from routoo_shared.cli import app
from routoo_shared.data.formats import bundled, load_questions, split_of, write_questions
from routoo_shared.evaluation.harness import Evaluation, format_table
from routoo_shared.routing.pool import ModelPool
from routoo_shared.predictors.predictor import Predictor
from routoo_shared.routing.router import BUNDLED_PREDICTOR

STABLE_KEYS = {"single_models", "oracle", "routers", "aiq", "accuracy_at_cost_of", "cost_to_match"}
ADDED_KEYS = {"aiq_ci", "aiq_minus_routoo_ci", "rows", "best_model", "priciest_share_to_95", "predictor"}


def _slices(tmp_path):
    questions = load_questions(bundled("mmlu_pro"))
    parts = {
        "train": [q for q in questions if split_of(q.id) == "train"][:700],
        "dev": [q for q in questions if split_of(q.id) == "dev"][:200],
        "test": [q for q in questions if split_of(q.id) == "test"][:300],
    }
    for name, rows in parts.items():
        write_questions(rows, tmp_path / f"{name}.jsonl.gz")
    return parts


def test_evaluate_json_has_every_row_with_intervals(tmp_path):
    _slices(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "evaluate", "--train", str(tmp_path / "train.jsonl.gz"), "--dev", str(tmp_path / "dev.jsonl.gz"),
            "--test", str(tmp_path / "test.jsonl.gz"), "--pool", "open", "--predictor", str(BUNDLED_PREDICTOR),
            "--points", "20", "--bootstrap", "200", "--json", str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert STABLE_KEYS | ADDED_KEYS <= set(report)
    methods = {"routoo", "logistic", "matrix_factorisation", "category_lookup", "random", "best_single"}
    assert methods <= set(report["routers"]) and any(name.startswith("knn (k=") for name in report["routers"])
    assert set(report["aiq_ci"]) == set(report["routers"]) and "routoo" not in report["aiq_minus_routoo_ci"]
    for name, ci in report["aiq_ci"].items():
        assert ci["low"] <= ci["high"] and ci["low"] - 0.03 <= report["aiq"][name] <= ci["high"] + 0.03
    assert report["rows"]["routoo"] == {"representation": "static", "method": "routoo head"}
    assert report["best_model"] == "Meta-Llama-3_1-70B-Instruct"
    assert report["predictor"] == Predictor.load(BUNDLED_PREDICTOR).name
    assert "category_lookup" in result.output and "95% CI" in result.output


def test_a_curve_hook_adds_a_row(tmp_path):
    parts = _slices(tmp_path)
    pool = ModelPool.from_models_json(bundled("mmlu_pro", "models.json"), ["Phi-3-mini-4k-instruct", "Meta-Llama-3_1-70B-Instruct"])

    def always_the_strong_model(evaluation, predictor):
        chosen = np.full(len(evaluation.test), 1)
        return [(evaluation.task.point(chosen), chosen)]

    evaluation = Evaluation(
        pool, parts["train"], parts["dev"], parts["test"], predictor=Predictor.load(BUNDLED_PREDICTOR), points=20,
        curve_hooks={"strong only": always_the_strong_model}, bootstrap=100,
    )
    report = evaluation.run()
    assert report.routers["strong only"][0] == report.single_models["Meta-Llama-3_1-70B-Instruct"]
    assert "strong only" in format_table(report, evaluation.extras, [])
