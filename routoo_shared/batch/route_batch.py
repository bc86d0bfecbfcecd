"""``routoo route-batch``: a file of prompts routed in batches, with or without a total budget.

Each line of the input is a JSON object with a ``prompt`` (text) and, optionally, an ``id``, echoed in
the output. Each output line is one decision: ``model``, ``predicted_quality``, ``estimated_cost_usd``,
``input_tokens``, ``binding_constraint``, in the input's order. Without a budget each prompt is routed
as ``Router.route_batch`` routes it; with ``budget_usd`` the whole file is planned together
(``routoo_shared.batch.budget_plan``): its estimated cost stays within the budget, spent where the
predictor expects most quality. Either engine runs it: ``LocalEngine`` in this process, ``RayEngine``
on Ray Data actors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from routoo_shared.batch.budget_plan import ShardedPlan, choose, plan_sharded
from routoo_shared.batch.engines import Batch, read_rows

DECISION_COLUMNS = ("model", "predicted_quality", "estimated_cost_usd", "input_tokens", "binding_constraint")


def count_prompts(path: Path) -> int:
    """How many prompts ``path`` holds; ``ValueError`` naming the first line without a text ``prompt``."""
    count = 0
    for count, row in enumerate(read_rows(path), 1):
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise ValueError(f"{path}: prompt {count} has no 'prompt' text (each line: {{\"prompt\": \"...\"}})")
    if count == 0:
        raise ValueError(f"{path} holds no prompts")
    return count


class Scorer:
    """A worker holding one router: routes a batch of prompts (``planned=False``), or computes what the
    budget plan reads of them: quality, cost, feasible (prompts x models) and the choice without a budget."""

    def __init__(self, directory: str | None, pool_names: list[str] | None, settings: dict[str, Any], planned: bool):
        from routoo_shared.routing.router import Router

        self.router = Router.from_directory(directory, pool_names=pool_names)
        self.settings, self.planned = settings, planned

    def __call__(self, batch: Batch) -> Batch:
        prompts = [str(p) for p in batch["prompt"]]
        kept = {"id": batch["id"]} if "id" in batch else {}
        if self.planned:
            tokens, quality, cost, feasible, base = self.router.plan_inputs(prompts, **self.settings)
            return {**kept, "input_tokens": tokens, "quality": quality, "cost": cost, "feasible": feasible,
                    "base": np.asarray(base.chosen)}
        decisions = self.router.route_batch(prompts, **self.settings)
        return {**kept, **{c: np.array([getattr(d, c) for d in decisions], dtype=object) for c in DECISION_COLUMNS}}


def decided(batch: Batch, plan: ShardedPlan, names: list[str]) -> Batch:
    """A scored batch's decisions under ``plan``."""
    chosen = choose(batch, plan)
    rows = np.arange(len(chosen))
    return {
        **({"id": batch["id"]} if "id" in batch else {}),
        "model": np.array(names, dtype=object)[chosen],
        "predicted_quality": batch["quality"][rows, chosen],
        "estimated_cost_usd": batch["cost"][rows, chosen],
        "input_tokens": batch["input_tokens"],
        "binding_constraint": np.where(chosen != batch["base"], "budget", None),
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def write_decisions(batches, out: Path) -> dict[str, float]:
    """Stream decision batches to ``out`` (JSONL); their count, total estimated cost and mean quality."""
    count, spent, quality = 0, 0.0, 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as lines:
        for batch in batches:
            columns = [c for c in ("id", *DECISION_COLUMNS) if c in batch]
            for row in range(len(batch["model"])):
                record = {c: _plain(batch[c][row]) for c in columns}
                binding = record["binding_constraint"]
                record["binding_constraint"] = binding if isinstance(binding, str) else None  # Ray writes NaN
                lines.write(json.dumps(record) + "\n")
            count += len(batch["model"])
            spent += float(np.sum(batch["estimated_cost_usd"].astype(float)))
            quality += float(np.sum(batch["predicted_quality"].astype(float)))
    return {"prompts": count, "estimated_cost_usd": spent, "mean_predicted_quality": quality / max(count, 1)}


def route_batch(
    prompts: Path, out: Path, engine, budget_usd: float | None = None, directory: str | None = None,
    pool_names: list[str] | None = None, **settings: Any,
) -> dict[str, Any]:
    """Route every prompt of ``prompts`` (JSONL) into ``out`` (JSONL) on ``engine``; a summary: prompts,
    estimated cost (USD), mean predicted quality, and for a plan its multiplier and gap to the LP bound.

    Raises ``ValueError`` for a malformed prompts file, TypeError / ValueError for a budget that is not
    a finite, non-negative number, ``InfeasibleRoutingError`` when the budget cannot pay the cheapest
    eligible models."""
    from routoo_shared.routing.budget import checked_usd
    from routoo_shared.routing.selector import Constraints

    if budget_usd is not None:
        checked_usd(budget_usd, "budget_usd")  # bad values fail here, before any model loads
    Constraints().merged(**settings)
    count_prompts(prompts)
    scored = engine.read(prompts, Scorer, directory, pool_names, settings, budget_usd is not None)
    if budget_usd is None:
        return {"engine": engine.name, **write_decisions(scored, out)}
    from routoo_shared.routing.router import Router

    names = Router.from_directory(directory, pool_names=pool_names).pool.names
    kept = scored.kept()
    plan = plan_sharded(lambda each: list(kept.map(each)), budget_usd)
    summary = write_decisions(kept.map(lambda batch: decided(batch, plan, names)), out)
    return {"engine": engine.name, **summary, "budget_usd": budget_usd, "price_of_dollar": plan.price_of_dollar,
            "gap_to_lp": plan.gap_to_lp}
