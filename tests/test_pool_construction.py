"""Pool construction: greedy forward selection by dev AIQ, the price ceiling, the CLI command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from routoo_shared.cli import app
from routoo_shared.data.formats import bundled, load_questions, split_of
from routoo_shared.routing.pool import ModelPool
from routoo_shared.evaluation.harness import Evaluation
from routoo_shared.evaluation.pool_construction import _Scorer, build_pool
from routoo_shared.routing.router import BUNDLED_PREDICTOR, Router

UNIVERSE = [
    "Llama-2-7b-hf", "Phi-3-mini-4k-instruct", "Meta-Llama-3_1-8B-Instruct", "Qwen1.5-72B-Chat",
    "Meta-Llama-3_1-70B-Instruct",
]


@pytest.fixture(scope="module")
def setting():
    questions = load_questions(bundled("mmlu_pro"))
    train = [q for q in questions if split_of(q.id) == "train"][:500]
    dev = [q for q in questions if split_of(q.id) == "dev"][:500]
    universe = ModelPool.from_models_json(bundled("mmlu_pro", "models.json"), UNIVERSE)
    return universe, train, dev, Router.from_directory().predictor


def test_greedy_path_starts_from_the_best_single_model_and_only_adds_gains(setting):
    universe, train, dev, predictor = setting
    construction = build_pool(universe, train, dev, predictor, k=3)
    assert 1 <= len(construction.steps) <= 3
    assert len(set(construction.pool)) == len(construction.pool) and set(construction.pool) <= set(UNIVERSE)
    assert all(step.gain > 0 for step in construction.steps)
    assert [s.aiq for s in construction.steps] == sorted(s.aiq for s in construction.steps)

    evaluation = Evaluation(universe, train, dev, dev, predictor=predictor)
    scorer = _Scorer(evaluation, predictor.predict([q.prompt for q in evaluation.test], universe.names))
    singles = {name: scorer.aiq([j]) for j, name in enumerate(universe.names)}
    assert construction.steps[0].added == max(singles, key=singles.get)
    first = universe.names.index(construction.pool[0])
    pairs = {name: scorer.aiq([first, j]) for j, name in enumerate(universe.names) if j != first}
    assert construction.steps[1].added == max(pairs, key=pairs.get)
    assert build_pool(universe, train, dev, predictor, k=1).pool == construction.pool[:1]


def test_price_ceiling_leaves_out_pricey_models(setting):
    universe, train, dev, predictor = setting
    cheap = build_pool(universe, train, dev, predictor, k=5, max_price_per_mtok=0.25)
    assert set(cheap.priced_out) == {"Qwen1.5-72B-Chat", "Meta-Llama-3_1-70B-Instruct"}
    assert not set(cheap.pool) & set(cheap.priced_out)
    with pytest.raises(ValueError, match="priced at or under"):
        build_pool(universe, train, dev, predictor, k=2, max_price_per_mtok=0.01)
    with pytest.raises(ValueError, match="at least 1"):
        build_pool(universe, train, dev, predictor, k=0)


def test_cli_build_pool_prints_the_table_and_writes_json(tmp_path):
    result = CliRunner().invoke(
        app,
        ["build-pool", "--universe", ",".join(UNIVERSE[:4]), "--k", "2", "--predictor", str(BUNDLED_PREDICTOR),
         "--json", str(tmp_path / "pool.json")],
    )
    assert result.exit_code == 0, result.output
    assert "added model" in result.output and "pool: " in result.output
    saved = json.loads((tmp_path / "pool.json").read_text())
    assert 1 <= len(saved["steps"]) <= 2 and saved["steps"][0]["added"] in UNIVERSE
