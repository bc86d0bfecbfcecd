"""Batch routing and budget plans: this process against Ray Data with 1 and 2 workers.

- route: ``route_batch`` over N synthetic prompts (not in the bundled embedding cache, so each is
  encoded) with the bundled predictor, unbudgeted and planned under a budget of a third of what the
  unbudgeted decisions cost: prompts/s end to end (router loading and Ray start-up included, as a
  ``routoo route-batch`` run pays them), and the plan's gap to the LP bound.
- plan: the sharded budget plan over 1M synthetic prompts x 10 models (quality and cost drawn per
  shard, never all in memory at once) on the local engine: seconds, peak resident memory of the process,
  spend against the budget and the gap to the LP bound; beside it, what the in-memory plan would hold.
Each configuration runs in its own process (its own Ray cluster; peak memory its own).

    python benchmarks/batch.py [--prompts 1000] [--plan-rows 1000000] [--json benchmarks/results/batch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

MODELS, SHARD_ROWS = 10, 20_000
TOPICS = ["a binary search tree", "photosynthesis", "the French revolution", "compound interest", "TCP congestion",
          "the Krebs cycle", "eigenvalues", "supply and demand", "plate tectonics", "recursion"]
ASKS = ["Explain {} to a beginner.", "What is the most common mistake people make about {}?",
        "Write three exam questions about {}.", "Summarise {} in two sentences.", "How would you test knowledge of {}?"]


def synthetic_prompts(path: Path, count: int) -> None:
    with open(path, "w") as lines:
        for i in range(count):
            text = f"{ASKS[i % len(ASKS)].format(TOPICS[(i // len(ASKS)) % len(TOPICS)])} (case {i})"
            lines.write(json.dumps({"id": i, "prompt": text}) + "\n")


def synthetic_shard(batch: dict) -> dict:
    """Quality and cost for a shard of prompt ids, drawn from the shard's first id (reproducible)."""
    ids = np.asarray(batch["id"])
    rng = np.random.default_rng(int(ids[0]))
    rows = len(ids)
    cost = np.sort(rng.uniform(1e-6, 1e-3, (rows, MODELS)), axis=1) * rng.uniform(0.2, 5, (rows, 1))
    quality = np.clip(np.sort(rng.uniform(0, 0.7, (rows, MODELS)), axis=1) + rng.normal(0, 0.1, (rows, MODELS)), 0, 1)
    return {"quality": quality, "cost": cost, "feasible": (rng.uniform(size=(rows, MODELS)) > 0.05) | (np.arange(MODELS) == 0)}


def route_run(engine_name: str, workers: int, prompts: Path, budget: float | None) -> dict:
    from routoo_shared.batch.engines import engine_named
    from routoo_shared.batch.route_batch import route_batch

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        summary = route_batch(prompts, Path(folder) / "out.jsonl", engine_named(engine_name, workers), budget)
        seconds = time.perf_counter() - start
    return {**summary, "workers": workers if engine_name == "ray" else 1, "seconds": seconds,
            "prompts_per_s": summary["prompts"] / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def plan_run(rows: int) -> dict:
    from routoo_shared.batch.budget_plan import choose, plan_sharded
    from routoo_shared.batch.engines import LocalBatches

    starts = range(0, rows, SHARD_ROWS)
    shards = LocalBatches(lambda: (synthetic_shard({"id": np.arange(s, min(s + SHARD_ROWS, rows))}) for s in starts))
    cheapest = sum(float(np.where(b["feasible"], b["cost"], np.inf).min(axis=1).sum()) for b in shards)
    budget = 3 * cheapest
    start = time.perf_counter()
    plan = plan_sharded(lambda each: list(shards.map(each)), budget)
    spent = sum(float(b["cost"][np.arange(len(b["cost"])), choose(b, plan)].sum()) for b in shards)
    return {"rows": rows, "models": MODELS, "shard_rows": SHARD_ROWS, "budget_usd": budget, "spent_usd": spent,
            "seconds": time.perf_counter() - start, "gap_to_lp": plan.gap_to_lp,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "in_memory_arrays_mb": rows * MODELS * (8 + 8 + 1) / 2**20}


def in_subprocess(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--plan-rows", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/batch.json")
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, *rest = args.one
        if kind == "plan":
            print(json.dumps(plan_run(int(rest[0]))))
        else:
            engine, workers, prompts, budget = rest
            print(json.dumps(route_run(engine, int(workers), Path(prompts), float(budget) if budget != "-" else None)))
        return
    with tempfile.TemporaryDirectory() as folder:
        prompts = Path(folder) / "prompts.jsonl"
        synthetic_prompts(prompts, args.prompts)
        routed = []
        for engine, workers in (("local", 1), ("ray", 1), ("ray", 2)):
            free = in_subprocess("route", engine, str(workers), str(prompts), "-")
            planned = in_subprocess("route", engine, str(workers), str(prompts), repr(free["estimated_cost_usd"] / 3))
            routed += [free, planned]
            for row in (free, planned):
                print(f"{row['engine']:5s} x{row['workers']} {'planned' if 'budget_usd' in row else 'routed':7s}: "
                      f"{row['prompts_per_s']:7.1f} prompts/s ({row['seconds']:.1f} s)", flush=True)
    plan = in_subprocess("plan", str(args.plan_rows))
    print(f"\n{'engine':6s} {'workers':>7s} {'mode':8s} {'prompts/s':>9s} {'seconds':>8s} {'gap to LP':>9s}")
    for row in routed:
        gap = f"{row['gap_to_lp']:.2%}" if "gap_to_lp" in row else "-"
        print(f"{row['engine']:6s} {row['workers']:7d} {'planned' if 'budget_usd' in row else 'routed':8s} "
              f"{row['prompts_per_s']:9.1f} {row['seconds']:8.1f} {gap:>9s}")
    print(f"\nplan of {plan['rows']:,} prompts x {plan['models']} models: {plan['seconds']:.0f} s, peak RSS "
          f"{plan['peak_rss_mb']:.0f} MB (the arrays alone, in memory: {plan['in_memory_arrays_mb']:.0f} MB), "
          f"spent {plan['spent_usd'] / plan['budget_usd']:.4f} of the budget, gap to LP {plan['gap_to_lp']:.3%}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"prompts": args.prompts, "route": routed, "plan": plan}, indent=1))
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
