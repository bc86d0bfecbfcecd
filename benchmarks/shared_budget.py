"""One budget shared by worker processes: Redis against a budget per worker.

4 worker processes each make 250 concurrent async calls through RoutooChatModel (the bundled
predictor's three-model pool, stand-in provider models that answer after 50 ms and report ~10x the
output the routing estimate expects) on one budget of 0.02 USD (~7 calls at their real cost):
- ``redis``: ``RoutooBudget(total_usd=0.02, store=URL, name=...)`` in every worker, on a real
  redis-server started here;
- ``in-process``: each worker its own ``RoutooBudget(total_usd=0.02)``, as workers without a shared
  store do.
It prints and writes JSON: calls admitted, spending against the total, the overshoot in calls (the
priciest call at the real usage; the guarantee: at most one), holds left, and the time the budget
adds to a call (its reserve and settle, Redis round trips included, mean and p99 per call).

    python benchmarks/shared_budget.py [--json benchmarks/results/shared_budget.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

POOL = ["Phi-3-mini-4k-instruct", "Meta-Llama-3_1-8B-Instruct", "Meta-Llama-3_1-70B-Instruct"]
WORKERS, CALLS, TOTAL_USD, OUTPUT_TOKENS = 4, 250, 0.02, 3000


def worker(store: str | None, name: str) -> dict:
    """One worker process: CALLS concurrent calls on its budget; what it saw, as JSON."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    from langchain_routoo import RoutooBudget, RoutooChatModel
    from routoo_shared.routing.budget import BudgetExhaustedError
    from routoo_shared.routing.router import Router

    class Overrunning(BaseChatModel):
        """Answers after 50 ms, reporting OUTPUT_TOKENS of output."""

        @property
        def _llm_type(self) -> str:
            return "overrunning"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            raise NotImplementedError

        async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
            await asyncio.sleep(0.05)
            usage = {"input_tokens": 10, "output_tokens": OUTPUT_TOKENS, "total_tokens": 10 + OUTPUT_TOKENS}
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="an answer", usage_metadata=usage))])

    budget = RoutooBudget(TOTAL_USD) if store is None else RoutooBudget(TOTAL_USD, store=store, name=name)
    timings: list[float] = []
    for method in ("reserve", "settle", "release"):  # time what the budget adds to each call
        original = getattr(budget, method)

        def timed(*args, _original=original, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                timings.append(time.perf_counter() - start)

        setattr(budget, method, timed)
    chat = RoutooChatModel(models={n: Overrunning() for n in POOL}, router=Router.from_directory(pool_names=POOL),
                           budget=budget)

    async def one() -> str:
        try:
            await chat.ainvoke("What is the derivative of x^3?")
            return "answered"
        except BudgetExhaustedError:
            return "refused"

    async def burst() -> list[str]:
        return await asyncio.gather(*(one() for _ in range(CALLS)))

    outcomes = asyncio.run(burst())
    per_call = np.array(timings) * 1000
    return {"answered": outcomes.count("answered"), "refused": outcomes.count("refused"),
            "spent_usd": budget.spent_usd, "reserved_usd": budget.reserved_usd,
            "budget_ms_per_op": per_call.tolist()}


def run(store: str | None, name: str) -> dict:
    processes = [subprocess.Popen([sys.executable, __file__, "--worker", store or "", name], stdout=subprocess.PIPE,
                                  text=True, cwd=ROOT) for _ in range(WORKERS)]
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in processes]
    from routoo_shared.routing.router import Router

    pool = Router.from_directory(pool_names=POOL).pool
    one_call = max(pool[n].cost(10, OUTPUT_TOKENS) for n in POOL)
    if store is None:
        spent, left = sum(r["spent_usd"] for r in reports), sum(r["reserved_usd"] for r in reports)
    else:
        from routoo_shared.routing.budget import RoutooBudget

        shared = RoutooBudget(TOTAL_USD, store=store, name=name)
        spent, left = shared.spent_usd, shared.reserved_usd
    ops = np.concatenate([r["budget_ms_per_op"] for r in reports])
    answered = sum(r["answered"] for r in reports)
    return {
        "store": "redis" if store else "in-process", "workers": WORKERS, "calls": WORKERS * CALLS,
        "answered": answered, "refused": sum(r["refused"] for r in reports), "total_usd": TOTAL_USD,
        "spent_usd": spent, "overshoot_calls": max(spent - TOTAL_USD, 0) / one_call, "holds_left_usd": left,
        "budget_ms_per_call_mean": float(ops.mean() * 2), "budget_ms_per_op_p99": float(np.percentile(ops, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/shared_budget.json")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        store, name = args.worker
        print(json.dumps(worker(store or None, name)))
        return
    from tests.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder))
        try:
            rows = [run(server.url, f"bench-{time.time_ns()}"), run(None, "")]
        finally:
            server.stop()
    print(f"{'store':11s} {'calls':>6s} {'answered':>8s} {'spent/total':>11s} {'overshoot':>9s} {'holds left':>10s} "
          f"{'budget ms/call':>14s} {'p99 ms/op':>9s}")
    for r in rows:
        print(f"{r['store']:11s} {r['calls']:6d} {r['answered']:8d} {r['spent_usd'] / r['total_usd']:11.2f} "
              f"{r['overshoot_calls']:8.1f}c {r['holds_left_usd']:10.2g} {r['budget_ms_per_call_mean']:14.2f} "
              f"{r['budget_ms_per_op_p99']:9.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"workers": WORKERS, "calls_per_worker": CALLS, "output_tokens": OUTPUT_TOKENS,
                                     "rows": rows}, indent=1))
    print(f"JSON: {args.json}")


if __name__ == "__main__":
    main()
