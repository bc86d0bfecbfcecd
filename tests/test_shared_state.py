"""Budgets and cooldowns in Redis, through RoutooChatModel: what one worker does, every worker sees."""

from __future__ import annotations

import pickle
import time

import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from pydantic import ValidationError

from langchain_routoo import RoutooBudget, RoutooChatModel
from tests.conftest import TRIO, trio_router
from tests.exit_paths import assert_burst_overshoots_by_at_most_one_call, join_abandoned_attempts, run_exit_paths
from tests.fake_openai import FakeOpenAI
from tests.test_reliability import routoo


@pytest.mark.parametrize("asynchronous", [False, True])
def test_every_exit_path_returns_its_hold_to_a_redis_budget(redis_server, asynchronous):
    budget = RoutooBudget(total_usd=1.0, store=redis_server.url, name=f"exits-{asynchronous}")
    plan = ["answer", "fail", "empty_billed", "hang", "cancel" if asynchronous else "interrupt"]
    chat = routoo({name: plan for name in TRIO}, hang_s=0.3, budget=budget, timeout_s=0.05, max_fallbacks=1)
    run_exit_paths(plan + ["abandon", "unstarted"], asynchronous, chat.invoke, chat.ainvoke, chat.stream, chat.astream)
    join_abandoned_attempts()  # a timed-out sync attempt holds its worst case until its thread ends
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


def test_conversations_are_kept_in_redis_for_every_worker(redis_server):
    from routoo_shared.stores.redis_store import RedisConversationStore

    one = RedisConversationStore(redis_server.url, "chat")
    other = pickle.loads(pickle.dumps(one))  # as another worker opens it
    one.set("session:abc", TRIO[1], ttl_s=0.3)
    assert other.get("session:abc") == TRIO[1] and other.get("session:unknown") is None
    time.sleep(0.4)
    assert other.get("session:abc") is None  # forgotten ttl_s after its last turn


async def test_server_workers_on_one_store_share_each_keys_budget(redis_server):
    from routoo_shared.server.app import create_app
    from routoo_shared.server.config import ServerConfig
    from tests.test_server import QUESTION, SECRET, capable_router, digest, sdk, upstreams

    total = 2e-5
    config = ServerConfig.from_data({"pool": "local", "keys": [{"name": "team", "sha256": digest(SECRET), "budget_usd": total}]})
    workers = [create_app(config, chat_models=upstreams(), router=capable_router(), store=redis_server.url) for _ in range(2)]
    answered = refused = 0
    for turn in range(200):  # alternately on each worker, as a load balancer sends them, until refused
        if refused:
            break
        try:
            await sdk(workers[turn % 2]).chat.completions.create(model="routoo", messages=QUESTION)
            answered += 1
        except openai.RateLimitError:
            refused += 1
    shared = RoutooBudget(total_usd=total, store=redis_server.url, name="routoo-key:team:all")
    assert answered and refused and shared.calls == answered and shared.reserved_usd == 0
    assert shared.spent_usd <= total + max(spec.cost(20, spec.max_output_tokens) for spec in capable_router().pool.models)


async def test_server_workers_on_one_store_share_each_keys_request_window(redis_server):
    from routoo_shared.server.app import create_app
    from routoo_shared.server.config import ServerConfig
    from tests.test_server import QUESTION, SECRET, capable_router, digest, sdk, upstreams

    config = ServerConfig.from_data({"pool": "local", "keys": [{"name": "limited", "sha256": digest(SECRET),
                                                                "requests_per_minute": 3}]})
    workers = [create_app(config, chat_models=upstreams(), router=capable_router(), store=redis_server.url) for _ in range(2)]
    for turn in range(3):
        await sdk(workers[turn % 2]).chat.completions.create(model="routoo", messages=QUESTION)
    with pytest.raises(openai.RateLimitError) as caught:  # the 4th of the minute, whichever worker takes it
        await sdk(workers[1]).chat.completions.create(model="routoo", messages=QUESTION)
    assert "3 requests per minute" in str(caught.value) and 0 < float(caught.value.response.headers["retry-after"]) <= 60


def test_serve_refuses_several_workers_without_a_shared_store(tmp_path):
    from tests.test_server import cli

    refused = cli("serve", "--pool", "local", "--workers", "4")
    assert refused.returncode == 2 and "--workers 4 needs --store redis://" in refused.stderr
    unreachable = cli("serve", "--pool", "local", "--workers", "2", "--store", "redis://127.0.0.1:1/0")
    assert unreachable.returncode == 2 and "did not answer" in unreachable.stderr


def test_feedback_from_every_worker_lands_in_one_stream(redis_server, tmp_path):
    from routoo_shared.data.formats import load_questions
    from routoo_shared.stores.redis_store import RedisFeedbackLog

    one = RedisFeedbackLog(redis_server.url, "feedback-test")
    other = pickle.loads(pickle.dumps(one))
    one.record("What is 2+2?", TRIO[0], score=1.0, output_tokens=3)
    other.record([{"role": "user", "content": "Name a prime."}], TRIO[1], thumbs_up=False)
    assert one.export(tmp_path / "feedback.jsonl") == 2
    rows = load_questions(tmp_path / "feedback.jsonl")
    assert [next(iter(q.results)) for q in rows] == TRIO[:2] and rows[1].results[TRIO[1]].score == 0.0


async def test_server_workers_on_one_store_keep_a_conversation_on_one_model(redis_server):
    from routoo_shared.server.app import create_app
    from routoo_shared.server.config import ServerConfig
    from tests.test_server import QUESTION, SECRET, capable_router, digest, sdk, upstreams

    config = ServerConfig.from_data({"pool": "local", "sticky": True, "keys": [{"name": "team", "sha256": digest(SECRET)}]})
    workers = [create_app(config, chat_models=upstreams(), router=capable_router(), store=redis_server.url) for _ in range(2)]
    session = {"x-session-id": "thread-7"}
    first = await sdk(workers[0]).chat.completions.create(model="routoo", messages=QUESTION, extra_headers=session)
    later = await sdk(workers[1]).chat.completions.create(model="routoo", messages=QUESTION, extra_headers=session)
    record = later.model_extra["routoo"]
    assert later.model == first.model and record["sticky"], record  # the other worker read the thread from Redis
