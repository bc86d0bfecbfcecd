"""route-batch and the sharded budget plan, in this process and on a local Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from routoo_shared.batch.budget_plan import choose, plan_sharded
from routoo_shared.batch.engines import LocalEngine, RayEngine
from routoo_shared.batch.route_batch import route_batch
from routoo_shared.cli import app
from routoo_shared.routing.selector import InfeasibleRoutingError, plan_budget
from routoo_shared.routing.router import Router

PROMPTS = ["What is 2+2?", "Prove that the square root of 2 is irrational.", "Write a haiku about rain.",
           "Explain TCP congestion control in detail.", "Translate 'good morning' into French."]


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.from_directory()  # the bundled predictor, as route-batch loads it without --predictor


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("batch") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"{PROMPTS[i % 5]} ({i})"}) + "\n" for i in range(30)))
    return path


def decisions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def random_batch(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cost = np.sort(rng.uniform(1e-5, 1e-2, (rows, 6)), axis=1) * rng.uniform(0.5, 2, (rows, 1))
    quality = np.sort(rng.uniform(0, 0.6, (rows, 6)), axis=1) + rng.uniform(0, 0.4, (rows, 6))
    feasible = rng.uniform(size=(rows, 6)) > 0.1
    feasible[:, 0] = True
    return {"quality": quality, "cost": cost, "feasible": feasible}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_sharded_plan_keeps_the_budget_and_its_gap_to_the_lp_bound(seed):
    whole = random_batch(2000, seed)
    shards = [{k: v[i : i + 300] for k, v in whole.items()} for i in range(0, 2000, 300)]
    budget = whole["cost"].min(axis=1).sum() * (1.2 + 4 * seed)
    reference = plan_budget(whole["quality"], whole["cost"], budget, whole["feasible"])
    plan = plan_sharded(lambda each: [each(shard) for shard in shards], budget)
    chosen = np.concatenate([choose(shard, plan) for shard in shards])
    rows = np.arange(2000)
    assert whole["feasible"][rows, chosen].all()
    assert whole["cost"][rows, chosen].sum() == pytest.approx(plan.spent) and plan.spent <= budget
    assert whole["quality"][rows, chosen].sum() == pytest.approx(plan.predicted_quality)
    assert plan.lp_bound == pytest.approx(reference.lp_bound, rel=1e-6)
    assert plan.gap_to_lp <= reference.gap_to_lp + 1e-3


def test_the_sharded_plan_refuses_what_no_plan_can_pay():
    shard = random_batch(50, 3)
    with pytest.raises(InfeasibleRoutingError, match="cheapest eligible"):
        plan_sharded(lambda each: [each(shard)], shard["cost"].min(axis=1).sum() / 2)
    with pytest.raises(ValueError, match="budget_usd"):
        plan_sharded(lambda each: [each(shard)], float("nan"))


def test_route_batch_routes_each_prompt_as_the_router_does(router, prompts, tmp_path):
    summary = route_batch(prompts, tmp_path / "out.jsonl", LocalEngine())
    out = decisions(tmp_path / "out.jsonl")
    expected = router.route_batch(texts(prompts))
    assert [d["id"] for d in out] == [f"p{i}" for i in range(30)] and summary["prompts"] == 30
    assert [d["model"] for d in out] == [d.model for d in expected]


def texts(prompts: Path) -> list[str]:
    return [json.loads(line)["prompt"] for line in prompts.read_text().splitlines()]


def test_a_budgeted_batch_stays_within_it_near_the_in_memory_plan(router, prompts, tmp_path):
    budget = sum(d.estimated_cost_usd for d in router.route_batch(texts(prompts))) / 3
    reference = router.plan_batch(texts(prompts), budget)
    summary = route_batch(prompts, tmp_path / "out.jsonl", LocalEngine(), budget)
    out = decisions(tmp_path / "out.jsonl")
    assert sum(d["estimated_cost_usd"] for d in out) <= budget
    assert sum(d["predicted_quality"] for d in out) == pytest.approx(sum(d.predicted_quality for d in reference), rel=1e-2)
    assert "budget" in {d["binding_constraint"] for d in out} and summary["gap_to_lp"] < 0.01


def test_route_batch_names_the_bad_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": \n')
    result = CliRunner().invoke(app, ["route-batch", str(bad), "--out", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2 and "bad.jsonl:2 is not JSON" in result.output
    bad.write_text('{"text": "no prompt"}\n')
    result = CliRunner().invoke(app, ["route-batch", str(bad), "--out", str(tmp_path / "out.jsonl"), "--engine", "spark"])
    assert result.exit_code == 2 and "unknown engine 'spark'" in result.output


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster (1 worker actor, 2 CPUs) for this module's Ray tests."""
    import ray

    yield RayEngine(workers=1)
    ray.shutdown()


def test_the_ray_engine_plans_as_the_local_one(ray_cluster, router, prompts, tmp_path):
    budget = sum(d.estimated_cost_usd for d in router.route_batch(texts(prompts))) / 3
    # the planned path: scoring actors, then the plan's passes as Ray tasks, then the streamed write
    local = route_batch(prompts, tmp_path / "local.jsonl", LocalEngine(), budget)
    on_ray = route_batch(prompts, tmp_path / "ray.jsonl", ray_cluster, budget)
    assert decisions(tmp_path / "ray.jsonl") == decisions(tmp_path / "local.jsonl")
    assert on_ray["estimated_cost_usd"] == pytest.approx(local["estimated_cost_usd"])
    assert on_ray["estimated_cost_usd"] <= budget


def test_encoder_actors_fill_the_embedding_cache(ray_cluster, tmp_path):
    from routoo_shared.batch.encoding import encode_into_cache
    from routoo_shared.predictors.encoder import PromptEncoder

    encoder = PromptEncoder(cache_dir=tmp_path)
    fresh = [f"{prompt} (encoded on Ray)" for prompt in PROMPTS]
    assert encode_into_cache(encoder, fresh + fresh[:2], ray_cluster) == len(fresh)
    assert encode_into_cache(PromptEncoder(cache_dir=tmp_path), fresh, ray_cluster) == 0  # saved on disk
    cached = encoder.encode(fresh)  # from the cache, which stores float16
    np.testing.assert_allclose(cached, PromptEncoder(cache_dir=tmp_path / "other").encode(fresh), atol=5e-4)
