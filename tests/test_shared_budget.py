"""The budget shared in Redis: the guarantee across processes, leases, idempotent settling, failing closed."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from budget_worker import WORST_USD
from routoo_shared.routing.budget import BudgetExhaustedError, RoutooBudget
from routoo_shared.stores.redis_store import RedisBudgetStore, StoreUnavailableError

WORKER = Path(__file__).with_name("budget_worker.py")
LEASE_S = 1.0


def worker(url: str, name: str, seed: int, calls: int, *mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(WORKER), url, name, str(LEASE_S), str(seed), str(calls), *mode],
                            stdout=subprocess.PIPE, text=True, env=env)


def billed(output: str) -> float:
    return sum(float(line.split()[1]) for line in output.splitlines() if line.startswith("billed "))


@pytest.mark.parametrize("seed", [1, 2])
def test_processes_spend_at_most_one_call_over_and_holds_of_a_killed_worker_expire(redis_server, seed):
    name = f"property-{seed}"
    killed = worker(redis_server.url, name, seed, 20, "hang")
    assert killed.stdout.readline().strip() == "holding"  # it holds the budget, mid-call
    workers = [worker(redis_server.url, name, seed * 10 + i, 60) for i in range(4)]
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    killed_at = time.monotonic()
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert all(w.returncode == 0 and out.rstrip().endswith("done") for w, out in zip(workers, outputs))
    last_call = time.monotonic()

    budget = RoutooBudget(1.0, store=RedisBudgetStore(redis_server.url, name))
    assert budget.spent_usd == pytest.approx(sum(map(billed, outputs)))  # every settle counted once
    assert budget.spent_usd <= budget.total_usd + WORST_USD
    while budget.reserved_usd > 0 and time.monotonic() < max(killed_at, last_call) + 2 * LEASE_S:
        time.sleep(0.05)
    assert budget.reserved_usd == 0 and budget.store.totals().open_holds == 0
    assert time.monotonic() <= max(killed_at, last_call) + LEASE_S + 0.5  # back within one lease (+ polling)


def test_settling_twice_counts_once_across_processes(redis_server):
    store = RedisBudgetStore(redis_server.url, "twice")
    budget = RoutooBudget(1.0, store=store)
    hold = budget.reserve("m", 0.1, 0.2)
    budget.settle(hold, 0.15)
    pickle.loads(pickle.dumps(budget)).store.finish(hold.id, hold.held, 0.15)  # a retried settle elsewhere
    assert (budget.spent_usd, budget.calls, budget.reserved_usd) == (pytest.approx(0.15), 1, 0)


def test_holds_are_renewed_while_the_call_runs(redis_server):
    budget = RoutooBudget(1.0, store=RedisBudgetStore(redis_server.url, "renewed", lease_s=0.3))
    hold = budget.reserve("m", 0.1, 0.6)
    time.sleep(1.0)  # three leases: the renewal thread keeps the hold
    assert budget.reserved_usd == pytest.approx(0.6)
    with pytest.raises(BudgetExhaustedError, match="1 call"):
        budget.reserve("m", 0.1, 0.6)
    budget.settle(hold, 0.5)
    assert budget.reserved_usd == 0 and budget.spent_usd == pytest.approx(0.5)


def test_every_process_must_agree_on_the_total(redis_server):
    RoutooBudget(1.0, store=redis_server.url, name="agreed")
    with pytest.raises(ValueError, match="total_usd=1.0, not 2.0"):
        RoutooBudget(2.0, store=redis_server.url, name="agreed")
    with pytest.raises(ValueError, match="needs a name"):
        RoutooBudget(1.0, store=redis_server.url)
    with pytest.raises(ValueError, match="braces"):
        RoutooBudget(1.0, store=redis_server.url, name="{a}")


def test_an_unreachable_store_refuses_calls_by_default(own_redis_server):
    budget = RoutooBudget(1.0, store=RedisBudgetStore(own_redis_server.url + "?socket_timeout=0.2", "closed"))
    own_redis_server.pause()
    try:
        with pytest.raises(StoreUnavailableError, match="fail closed"):
            budget.reserve("m", 0.1, 0.2)
    finally:
        own_redis_server.resume()
    assert budget.reserved_usd == 0 and budget.spent_usd == 0


def test_admitted_while_unreachable_is_counted_once_the_store_answers(own_redis_server):
    store = RedisBudgetStore(own_redis_server.url + "?socket_timeout=0.2", "open", lease_s=0.6, on_unavailable="admit")
    budget = RoutooBudget(1.0, store=store)
    own_redis_server.pause()
    try:
        hold = budget.reserve("m", 0.1, 0.2)  # admitted, held in this process
        budget.settle(hold, 0.15)  # queued: Redis is away
    finally:
        own_redis_server.resume()
    deadline = time.monotonic() + 5
    while budget.calls == 0 and time.monotonic() < deadline:  # the renewal thread sends it
        time.sleep(0.05)
    assert (budget.spent_usd, budget.calls, budget.reserved_usd) == (pytest.approx(0.15), 1, 0)


def test_a_shared_budget_pickles_to_the_same_budget(redis_server):
    budget = RoutooBudget(1.0, store=redis_server.url, name="pickled")
    copy = pickle.loads(pickle.dumps(budget))
    hold = copy.reserve("m", 0.1, 0.3)
    assert budget.reserved_usd == pytest.approx(0.3)
    copy.release(hold)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(RoutooBudget(1.0))


def test_a_budget_gone_from_redis_admits_nothing(redis_server):
    store = RedisBudgetStore(redis_server.url, "gone", on_unavailable="admit")
    budget = RoutooBudget(1.0, store=store)
    store.delete()  # as a Redis restarted without persistence would have it
    with pytest.raises(StoreUnavailableError, match="not in Redis"):
        budget.reserve("m", 0.1, 0.2)
