"""Budgets and cooldowns in Redis, through RoutooChatModel: what one worker does, every worker sees."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from pydantic import ValidationError

from langchain_routoo import RoutooBudget, RoutooChatModel
from tests.conftest import TRIO, trio_router
from tests.exit_paths import assert_burst_overshoots_by_at_most_one_call, run_exit_paths
from tests.fake_openai import FakeOpenAI
from tests.test_reliability import routoo


@pytest.mark.parametrize("asynchronous", [False, True])
def test_every_exit_path_returns_its_hold_to_a_redis_budget(redis_server, asynchronous):
    budget = RoutooBudget(total_usd=1.0, store=redis_server.url, name=f"exits-{asynchronous}")
    plan = ["answer", "fail", "empty_billed", "hang", "cancel" if asynchronous else "interrupt"]
    chat = routoo({name: plan for name in TRIO}, budget=budget, timeout_s=0.05, max_fallbacks=1)
    run_exit_paths(plan + ["abandon", "unstarted"], asynchronous, chat.invoke, chat.ainvoke, chat.stream, chat.astream)
    assert budget.reserved_usd == 0 and budget.calls >= 1
    assert budget.remaining_usd == pytest.approx(1.0 - budget.spent_usd)


def test_a_burst_over_a_redis_budget_overshoots_by_at_most_one_call(redis_server):
    budget = RoutooBudget(total_usd=0.02, store=redis_server.url, name="burst")
    chat = routoo(budget=budget)
    for model in chat.models.values():
        model.output_tokens = 3000
        model.delay_s = 0.05
    assert_burst_overshoots_by_at_most_one_call(budget, chat.ainvoke, AIMessage, chat.router.pool, TRIO, (10, 3000),
                                                calls=300)


def test_a_model_rate_limited_in_one_worker_rests_in_the_others(redis_server):
    router = trio_router()
    first = router.route("hello").model
    limited, healthy = FakeOpenAI(status=429, retry_after=20), FakeOpenAI()

    def worker() -> RoutooChatModel:  # its own models, health and connection: only Redis is shared
        models = {name: ChatOpenAI(model=name, api_key="sk-test", base_url="http://fake.invalid/v1", max_retries=0,
                                   **(limited if name == first else healthy).clients()) for name in TRIO}
        return RoutooChatModel(models=models, router=router, store=redis_server.url)

    one, other = worker(), worker()
    one.invoke("hello")
    answer = other.invoke("hello")
    assert len(limited.requests) == 1  # the other worker never called the resting model
    assert "cooling down" in answer.response_metadata["routoo"]["reason"]
    assert 10 < other.health.cooling_s(first) <= 20
    other.health.succeeded(first)
    assert one.health.cooling_s(first) == 0


def test_a_store_is_named_by_a_redis_url():
    with pytest.raises(ValidationError, match="redis"):
        routoo(store="localhost:6379")
