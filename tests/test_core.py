"""The routing core on real data, the real encoder and real tokenizers."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from routoo_shared.cli import app
from routoo_shared.data.formats import Outcomes, bundled, load_questions, split_of
from routoo_shared.routing.models_file import pool_names
from routoo_shared.evaluation.harness import Point, accuracy_at_cost, aiq, cost_to_match
from routoo_shared.routing.messages import routing_text
from routoo_shared.evaluation.metrics import log_loss
from routoo_shared.routing.pool import ModelPool, ModelSpec
from routoo_shared.predictors.predictor import Predictor, PredictorFileError, TrainConfig
from routoo_shared.routing.router import Router
from routoo_shared.routing.tokens import count_tokens

MODELS = ["Phi-3-mini-4k-instruct", "Meta-Llama-3_1-8B-Instruct", "Meta-Llama-3_1-70B-Instruct", "Llama-2-7b-hf"]


@pytest.fixture(scope="module")
def questions():
    return load_questions(bundled("mmlu_pro"))


@pytest.fixture(scope="module")
def small_predictor(questions):
    train = [q for q in questions if split_of(q.id) == "train"][:1500]
    dev = [q for q in questions if split_of(q.id) == "dev"][:400]
    predictor = Predictor.train(
        [q.prompt for q in train],
        Outcomes.from_questions(train, MODELS).correct,
        MODELS,
        [q.prompt for q in dev],
        Outcomes.from_questions(dev, MODELS).correct,
        TrainConfig(ensemble=1, epochs=30),
    )
    return predictor, train, dev


def test_split_is_deterministic_and_disjoint(questions):
    splits = [split_of(q.id) for q in questions]
    assert splits == [split_of(q.id) for q in questions]
    shares = {s: splits.count(s) / len(splits) for s in ("train", "dev", "test")}
    assert 0.65 < shares["train"] < 0.75 and 0.07 < shares["dev"] < 0.13 and 0.17 < shares["test"] < 0.23


def test_training_on_a_slice_beats_a_constant_predictor(small_predictor):
    predictor, train, dev = small_predictor
    dev_y = Outcomes.from_questions(dev, MODELS).correct
    constant = np.broadcast_to(np.nanmean(Outcomes.from_questions(train, MODELS).correct, axis=0), dev_y.shape)
    ours = predictor.predict([q.prompt for q in dev])
    assert log_loss(ours.ravel(), dev_y.ravel()) < log_loss(constant.ravel(), dev_y.ravel()) - 0.01


def test_save_load_round_trip_and_corrupt_files(small_predictor, tmp_path):
    predictor = small_predictor[0]
    prompts = ["What is the derivative of x^3?", "Who wrote Hamlet?"]
    predictor.save(tmp_path / "p")
    loaded = Predictor.load(tmp_path / "p")
    np.testing.assert_allclose(loaded.predict(prompts), predictor.predict(prompts), rtol=1e-5)
    assert loaded.models == MODELS

    (tmp_path / "p" / "predictor.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(PredictorFileError, match="corrupt predictor weights"):
        Predictor.load(tmp_path / "p")
    predictor.save(tmp_path / "q")
    config = json.loads((tmp_path / "q" / "predictor.json").read_text())
    (tmp_path / "q" / "predictor.json").write_text(json.dumps({**config, "models": MODELS[:2]}))
    with pytest.raises(PredictorFileError, match="do not match"):
        Predictor.load(tmp_path / "q")
    (tmp_path / "q" / "predictor.json").write_text("{not json")
    with pytest.raises(PredictorFileError, match="corrupt predictor config"):
        Predictor.load(tmp_path / "q")
    with pytest.raises(PredictorFileError, match="missing"):
        Predictor.load(tmp_path / "nowhere")


def test_adding_a_model_learns_only_its_embedding(small_predictor, questions):
    predictor = Predictor.load(small_predictor[0].save(__import__("tempfile").mkdtemp()))
    before = predictor.predict(["Who wrote Hamlet?"])
    rows = [q for q in questions if split_of(q.id) == "train"][1500:1900]
    labels = np.array([q.results["Qwen1.5-72B-Chat"].score for q in rows])
    predictor.add_model("Qwen1.5-72B-Chat", [q.prompt for q in rows], labels)
    after = predictor.predict(["Who wrote Hamlet?"])
    np.testing.assert_allclose(after[:, :4], before, rtol=1e-5)
    assert predictor.models[-1] == "Qwen1.5-72B-Chat" and 0 < after[0, 4] < 1


def test_prices_explicit_or_from_genai_prices():
    assert ModelSpec(name="gpt-4o", provider="openai").price_in_per_mtok == pytest.approx(2.5)
    with pytest.raises(ValueError, match="no price"):
        ModelSpec(name="my-model")
    with pytest.raises(ValueError, match="genai-prices"):
        ModelSpec(name="not-a-real-model-xyz", provider="openai")
    spec = ModelSpec(name="m", price_in_per_mtok=1.0, price_out_per_mtok=2.0, expected_output_tokens=100)
    assert spec.cost(1000) == pytest.approx((1000 * 1.0 + 100 * 2.0) / 1e6)
    with pytest.raises(ValueError, match="unique"):
        ModelPool(models=[spec, spec])


def test_token_counting_is_real_and_offline():
    assert count_tokens("Hello world") == 2
    assert count_tokens("") == 0


def test_routing_text_handles_conversations_and_content_blocks():
    assert routing_text("plain") == "plain"
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Integrals?"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "What is the integral of x^2?"},
    ]
    text = routing_text(conversation)
    assert text.startswith("What is the integral of x^2?") and "Integrals?" in text and "image" not in text
    assert routing_text([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]) == ""  # images only
    for nothing in ("", [], [{"role": "user", "content": "  "}]):
        with pytest.raises(ValueError, match="empty prompt"):
            routing_text(nothing)


def test_bundled_router_routes_and_batches():
    router = Router.from_directory(pool_names="open")
    decision = router.route("What is the derivative of x^3?")
    assert decision.model in router.pool.names and decision.candidates[0].model == decision.model
    cheap = router.route("What is the derivative of x^3?", quality_cost_tradeoff=10.0)
    assert cheap.estimated_cost_usd <= decision.estimated_cost_usd
    batch = router.route_batch(["Who wrote Hamlet?", "Solve 3x + 5 = 11."] * 32)
    assert len(batch) == 64
    plan = router.plan_batch(["Who wrote Hamlet?", "Solve 3x + 5 = 11."] * 10, budget_usd=20 * 3e-5)
    assert sum(d.estimated_cost_usd for d in plan) <= 20 * 3e-5 + 1e-12
    with pytest.raises(KeyError, match="unknown model"):
        Router.from_directory(pool_names=["gpt-17"])
    with pytest.raises(KeyError, match="no labels"):
        Router(ModelPool(models=[ModelSpec(name="new", price_in_per_mtok=1, price_out_per_mtok=1)]), router.predictor)


def test_online_tradeoff_calibrated_on_dev_holds_its_target_on_test(questions):
    router = Router.from_directory(pool_names="open")
    rng = random.Random(0)  # the files are ordered by category: a slice of each split is not alike
    dev = rng.sample([q.prompt for q in questions if split_of(q.id) == "dev"], 300)
    test = rng.sample([q.prompt for q in questions if split_of(q.id) == "test"], 300)
    cheapest = np.mean([min(c.estimated_cost_usd for c in d.candidates) for d in router.route_batch(test)])
    target = 3 * cheapest
    router.calibrate_tradeoff(dev, target)
    spent = np.mean([d.estimated_cost_usd for d in router.route_batch(test)])
    assert 0.7 * target < spent < 1.3 * target


def test_open_pool_excludes_closed_models():
    available = [m["name"] for m in json.loads(bundled("mmlu_pro", "models.json").read_text())["models"]]
    names = pool_names("open", available)
    assert len(names) == 24 and not any(n.startswith(("gemini", "jamba", "DeepSeek", "c4ai")) for n in names)


def test_aiq_and_summary_numbers():
    points = [Point(cost_per_query=c, accuracy=a) for c, a in [(1, 0.5), (2, 0.7), (3, 0.65), (4, 0.8)]]
    # hull: (1,.5) (2,.7) (4,.8); area over [1,4] = .6 + .75*2 = 2.1, / 3
    assert aiq(points, 1, 4) == pytest.approx(2.1 / 3, abs=1e-3)
    assert accuracy_at_cost(points, 3) == 0.7 and accuracy_at_cost(points, 0.5) is None
    assert cost_to_match(points, 0.66) == 2 and cost_to_match(points, 0.9) is None


@pytest.mark.slow
def test_cli_evaluate_writes_the_report(tmp_path):
    runner = CliRunner()
    split = runner.invoke(app, ["split", "--dataset", "mmlu_routellm", "--out", str(tmp_path / "data")])
    assert split.exit_code == 0, split.output
    result = runner.invoke(
        app,
        [
            "evaluate", "--train", str(tmp_path / "data" / "train.jsonl.gz"), "--test", str(tmp_path / "data" / "test.jsonl.gz"),
            "--models", str(bundled("mmlu_routellm", "models.json")), "--points", "20",
            "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"single_models", "oracle", "routers", "aiq", "accuracy_at_cost_of", "cost_to_match"} <= set(report)
    assert {"aiq_ci", "aiq_minus_routoo_ci", "rows", "best_model", "priciest_share_to_95", "predictor"} <= set(report)
    routers = {"routoo", "random", "best_single", "threshold", "logistic", "matrix_factorisation", "category_lookup"}
    assert routers <= set(report["routers"]) and set(report["aiq_ci"]) == set(report["routers"])
    assert all(ci["low"] <= report["aiq"][name] + 0.02 and report["aiq"][name] - 0.02 <= ci["high"]
               for name, ci in report["aiq_ci"].items())
    assert report["rows"]["category_lookup"] == {"representation": "static", "method": "category_lookup"}
    assert all(len(points) >= 20 for points in report["routers"].values())
    assert (tmp_path / "r.png").stat().st_size > 10_000
    assert "priciest model" in result.output


def test_cli_route_prints_a_decision():
    result = CliRunner().invoke(app, ["route", "What is the derivative of x^3?", "--pool", "open"])
    assert result.exit_code == 0, result.output
    assert "chosen:" in result.output and "Meta-Llama-3_1-70B-Instruct" in result.output
    bad = CliRunner().invoke(app, ["route", "hi", "--min-quality", "1.0"])
    assert bad.exit_code == 2 and "min_quality" in bad.output and "Traceback" not in bad.output
