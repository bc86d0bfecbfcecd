"""One worker process of the shared-budget property test: concurrent calls on one Redis budget.

``python budget_worker.py URL NAME LEASE_S SEED CALLS [hang]``. Each call holds its worst case (or its
expected cost when it runs alone), waits, then at random succeeds (billed up to its worst case), fails
(released), times out (its prompt billed) or is cancelled midway (its prompt billed). Every billed
amount is printed as ``billed <USD>`` before it is settled; ``hang`` calls print ``holding`` and never
end (the test kills the process with SIGKILL).
"""

from __future__ import annotations

import asyncio
import random
import sys

from routoo_shared.routing.budget import BudgetExhaustedError, RoutooBudget
from routoo_shared.stores.redis_store import RedisBudgetStore

WORST_USD = 0.05  # the most one call can cost


def bill(budget: RoutooBudget, hold, usd: float) -> None:
    print(f"billed {usd!r}", flush=True)
    budget.settle(hold, usd)


async def call(budget: RoutooBudget, rng: random.Random, hang: bool) -> str:
    expected = rng.uniform(0.001, 0.01)
    worst = rng.uniform(expected, WORST_USD)
    prompt = expected / 10
    await asyncio.sleep(0 if hang else rng.uniform(0, 1.0))  # calls arrive over a second
    try:
        hold = budget.reserve("m", expected, worst)
    except BudgetExhaustedError:
        return "refused"
    outcome = rng.choice(["answer", "answer", "error", "timeout"])
    try:
        if hang:
            print("holding", flush=True)
            await asyncio.Event().wait()
        await asyncio.sleep(rng.uniform(0, 0.05))
        if outcome == "error":
            raise ConnectionError("provider down")
        if outcome == "timeout":
            raise TimeoutError
        bill(budget, hold, rng.choice([worst, rng.uniform(0, worst)]))  # often the whole worst case
    except ConnectionError:
        budget.release(hold)
    except (TimeoutError, asyncio.CancelledError):
        bill(budget, hold, prompt)
        raise
    return outcome


async def main(url: str, name: str, lease_s: float, seed: int, calls: int, hang: bool) -> None:
    rng = random.Random(seed)
    budget = RoutooBudget(1.0, store=RedisBudgetStore(url, name, lease_s=lease_s))
    tasks = [asyncio.create_task(call(budget, rng, hang)) for _ in range(calls)]
    await asyncio.sleep(0.3)
    for task in rng.sample(tasks, calls // 5):  # cancelled mid-call, as a closed client connection does
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print("done", flush=True)


if __name__ == "__main__":
    url, name, lease, seed, count = sys.argv[1:6]
    asyncio.run(main(url, name, float(lease), int(seed), int(count), sys.argv[6:] == ["hang"]))
