"""The shared budget, timeouts, cooldowns, fallback policy and number checks, through RoutooChatModel.

Provider stand-ins here are about Routoo's own logic (they fail, hang or over-report on purpose);
rate limits also come from a real ChatOpenAI against the in-process fake endpoint.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from pydantic import ValidationError

from langchain_routoo import RoutooBudget, RoutooChatModel
from routoo_shared.routing.fallback import AllModelsFailedError, AttemptTimeoutError, retry_after_s
from routoo_shared.routing.pool import ModelSpec
from routoo_shared.routing.selector import Constraints
from tests.conftest import TRIO, trio_router
from tests.exit_paths import assert_burst_overshoots_by_at_most_one_call, join_abandoned_attempts, run_exit_paths
from tests.fake_openai import FakeOpenAI

OUTCOMES = ("answer", "fail", "empty_billed", "hang", "cancel", "interrupt", "type_error")


class Scripted(BaseChatModel):
    """Does what ``plan`` says on each call (cycling): answers, fails, hangs, is cancelled..."""

    plan: list[str] = ["answer"]
    output_tokens: int = 20
    delay_s: float = 0.0
    hang_s: float = 5.0
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-outcomes"

    def _outcome(self) -> str:
        outcome = self.plan[self.calls % len(self.plan)]
        self.calls += 1
        return outcome

    def _message(self, outcome: str) -> AIMessage:
        usage = {"input_tokens": 10, "output_tokens": self.output_tokens, "total_tokens": 10 + self.output_tokens}
        if outcome == "fail":
            raise ConnectionError("provider down")
        if outcome == "type_error":
            raise TypeError("unexpected keyword argument 'temprature'")
        if outcome == "interrupt":
            raise KeyboardInterrupt
        return AIMessage(content="" if outcome == "empty_billed" else "an answer", usage_metadata=usage)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        outcome = self._outcome()
        if outcome in ("hang", "cancel"):
            time.sleep(self.hang_s)
        return ChatResult(generations=[ChatGeneration(message=self._message(outcome))])

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        outcome = self._outcome()
        await asyncio.sleep(5 if outcome == "hang" else self.delay_s)
        if outcome == "cancel":
            raise asyncio.CancelledError()
        return ChatResult(generations=[ChatGeneration(message=self._message(outcome))])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        outcome = self._outcome()
        if outcome in ("hang", "cancel"):
            time.sleep(5)
        message = self._message(outcome)
        for word in message.content.split():
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=message.usage_metadata))


def routoo(plans: dict[str, list[str]] | None = None, hang_s: float = 5.0, **settings) -> RoutooChatModel:
    plans = plans or {}
    models = {name: Scripted(plan=plans.get(name, ["answer"]), hang_s=hang_s) for name in TRIO}
    return RoutooChatModel(models=models, router=trio_router(), **settings)


# ----- kind 1: a hold is settled or released on every exit path
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(OUTCOMES + ("abandon", "unstarted")), min_size=1, max_size=8), st.booleans())
def test_any_mix_of_exit_paths_leaves_no_hold(steps, asynchronous):
    budget = RoutooBudget(total_usd=1.0)
    # an interrupt reaches async code as a cancellation (asyncio.run cancels the main task on Ctrl-C)
    plan = [("cancel" if asynchronous and s == "interrupt" else s) for s in steps if s not in ("abandon", "unstarted")]
    plan = plan or ["answer"]
    chat = routoo({name: plan for name in TRIO}, hang_s=0.3, budget=budget, timeout_s=0.05, max_fallbacks=1)

    run_exit_paths(steps, asynchronous, chat.invoke, chat.ainvoke, chat.stream, chat.astream)
    join_abandoned_attempts()  # a timed-out sync attempt holds its worst case until its thread ends
    assert budget.reserved_usd == 0
    assert budget.spent_usd >= 0 and budget.remaining_usd == pytest.approx(1.0 - budget.spent_usd)


def test_a_billed_empty_answer_is_charged_before_the_fallback():
    router = trio_router()
    first = router.route("hello").model
    budget = RoutooBudget(total_usd=1.0)
    chat = routoo({first: ["empty_billed"]}, budget=budget)
    message = chat.invoke("hello")
    assert message.response_metadata["routoo"]["attempts"][0]["kind"] == "empty"
    billed = router.pool[first].cost(10, 20) + router.pool[message.response_metadata["model_name"]].cost(10, 20)
    assert budget.spent_usd == pytest.approx(billed) and budget.calls == 2


def test_cancelled_and_interrupted_calls_release_their_holds():
    budget = RoutooBudget(total_usd=1e-3)
    chat = routoo({name: ["hang"] for name in TRIO}, budget=budget)

    async def time_out_many():
        for _ in range(50):
            with pytest.raises((asyncio.TimeoutError, TimeoutError)):
                await asyncio.wait_for(chat.ainvoke("slow"), 0.01)

    asyncio.run(time_out_many())
    interrupted = routoo({name: ["interrupt"] for name in TRIO}, budget=budget)
    with pytest.raises(KeyboardInterrupt):
        interrupted.invoke("hello")
    assert budget.reserved_usd == 0 and budget.remaining_usd > 0


# ----- kind 2: the budget's bound is a guarantee
def test_1000_concurrent_calls_that_overrun_their_estimate_overshoot_by_at_most_one_call():
    budget = RoutooBudget(total_usd=0.02)  # about 7 calls at their real cost
    chat = routoo(budget=budget)
    for model in chat.models.values():
        model.output_tokens = 3000  # the estimate expects ~100-270 output tokens
        model.delay_s = 0.05  # calls overlap
    assert_burst_overshoots_by_at_most_one_call(budget, chat.ainvoke, AIMessage, chat.router.pool, TRIO, (10, 3000))


def test_budget_numbers_are_checked_where_they_enter():
    for bad in (math.nan, math.inf, -1.0, 0.0):
        with pytest.raises(ValueError):
            RoutooBudget(total_usd=bad)
    with pytest.raises(TypeError):
        RoutooBudget(total_usd="5")
    budget = RoutooBudget(total_usd=1.0)
    hold = budget.reserve("m", 0.1, 0.2)
    with pytest.raises(ValueError, match="cost reported"):
        budget.settle(hold, math.nan)
    with pytest.raises(ValueError):
        budget.reserve("m", -0.1)
    router = trio_router()
    for bad, error in ((math.nan, ValueError), (math.inf, ValueError), (-1.0, ValueError), ("0.001", TypeError), (None, TypeError)):
        with pytest.raises(error, match="budget_usd"):
            router.plan_batch(["Who wrote Hamlet?"], budget_usd=bad)


# ----- kind 3: every number that enters is checked
def test_specs_and_settings_refuse_bad_numbers():
    for bad in ({"price_in_per_mtok": math.inf}, {"price_out_per_mtok": math.nan}, {"context_window": 0},
                {"ttft_s": -1.0}, {"tokens_per_s": math.inf}, {"timeout_s": 0}, {"max_output_tokens": -5}):
        with pytest.raises(ValidationError):
            ModelSpec(name="m", **{"price_in_per_mtok": 1.0, "price_out_per_mtok": 1.0, **bad})
    spec = ModelSpec(name="m", price_in_per_mtok=1.0, price_out_per_mtok=1.0)
    with pytest.raises(ValidationError):
        spec.price_in_per_mtok = math.inf
    for bad in ({"quality_cost_tradeoff": math.nan}, {"max_latency_s": math.inf}, {"min_quality": 1.5}):
        with pytest.raises(ValidationError):
            Constraints(**bad)


def test_a_model_reporting_impossible_usage_is_not_trusted():
    router = trio_router()
    first = router.route("hello").model
    chat = routoo(budget=RoutooBudget(total_usd=1.0))
    chat.models[first].output_tokens = -3
    message = chat.invoke("hello")
    assert message.response_metadata["routoo"]["attempts"][0]["error"].startswith("InvalidUsageError")
    assert message.response_metadata["model_name"] != first


def test_a_nan_prediction_is_never_chosen():
    router = trio_router()
    best = router.route("hello").model
    original = router.predictor.predict

    def poisoned(prompts, models=None):
        quality = original(prompts, models)
        quality[:, router.pool.index(best)] = math.nan
        return quality

    router.predictor.predict = poisoned
    try:
        decision = router.route("hello")
    finally:
        router.predictor.predict = original
    assert decision.model != best and math.isfinite(decision.predicted_quality)
    assert decision.candidate(best).excluded_by == "invalid_prediction"


# ----- kind 4: slow and failing models are cut off
@pytest.mark.parametrize("path", ["invoke", "ainvoke", "stream", "astream"])
def test_a_hanging_model_is_abandoned_for_the_next_best(path):
    first = trio_router().route("hello").model
    chat = routoo({first: ["hang"]}, timeout_s=0.3)

    async def run_async():
        start = time.perf_counter()
        message = await chat.ainvoke("hello") if path == "ainvoke" else [c async for c in chat.astream("hello")][0]
        return message, time.perf_counter() - start

    if path in ("ainvoke", "astream"):  # asyncio.run itself then waits for the hung worker thread to end
        message, took = asyncio.run(run_async())
    else:
        start = time.perf_counter()
        message = chat.invoke("hello") if path == "invoke" else next(iter(chat.stream("hello")))
        took = time.perf_counter() - start
    assert took < 4
    attempts = message.response_metadata["routoo"]["attempts"]
    assert attempts[0] == {"model": first, "error": attempts[0]["error"], "kind": "timeout"}
    assert message.response_metadata["model_name"] != first


def test_the_default_timeout_comes_from_the_spec():
    spec = trio_router().pool[TRIO[0]]
    assert spec.attempt_timeout(100) == max(10.0, 2 * spec.latency(100))
    assert spec.model_copy(update={"timeout_s": 3.0}).attempt_timeout(100) == 3.0
    assert spec.attempt_timeout(100, max_tokens=2000) > spec.attempt_timeout(100)


def test_a_rate_limited_real_chatopenai_cools_down_for_its_retry_after():
    router = trio_router()
    first = router.route("hello").model
    limited, healthy = FakeOpenAI(status=429, retry_after=20), FakeOpenAI()
    models = {name: ChatOpenAI(model=name, api_key="sk-test", base_url="http://fake.invalid/v1", max_retries=0,
                               **(limited if name == first else healthy).clients()) for name in TRIO}
    chat = RoutooChatModel(models=models, router=router)
    answers = [chat.invoke("hello") for _ in range(20)]
    assert len(limited.requests) == 1 and all(a.content for a in answers)
    assert "cooling down" in answers[-1].response_metadata["routoo"]["reason"]
    assert 10 < chat.health.cooling_s(first) <= 20


def test_repeated_failures_cool_a_model_down_until_it_recovers():
    first = trio_router().route("hello").model
    chat = routoo({first: ["fail"]}, allowed_fails=2, cooldown_s=30)
    clock = [0.0]
    chat.health.clock = lambda: clock[0]
    for _ in range(5):
        chat.invoke("hello")
    assert chat.models[first].calls == 2  # then it rests
    clock[0] = 31.0
    chat.models[first].plan = ["answer"]
    assert chat.invoke("hello").response_metadata["model_name"] == first


def test_programming_errors_fail_at_once_and_the_policy_is_configurable():
    first = trio_router().route("hello").model
    chat = routoo({first: ["type_error"]})
    with pytest.raises(TypeError, match="temprature"):
        chat.invoke("hello")
    assert sum(m.calls for m in chat.models.values()) == 1
    only_connections = routoo({first: ["type_error"]}, fallback_on=(ConnectionError,))
    with pytest.raises(TypeError):
        only_connections.invoke("hello")
    lenient = routoo({first: ["type_error"]}, fallback_on=lambda error: True)
    assert lenient.invoke("hello").response_metadata["model_name"] != first


def test_an_empty_stream_falls_back_like_an_empty_answer():
    first = trio_router().route("hello").model
    chunks = list(routoo({first: ["empty_billed"]}).stream("hello"))
    assert chunks[0].response_metadata["routoo"]["attempts"][0]["kind"] == "empty"
    assert "".join(c.text for c in chunks).strip() == "an answer"


def test_cancellation_is_never_swallowed():
    first = trio_router().route("hello").model
    chat = routoo({first: ["cancel"]})
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(chat.ainvoke("hello"))
    assert sum(m.calls for name, m in chat.models.items() if name != first) == 0


# ----- kind 5: failures keep their evidence
def test_when_every_model_fails_each_exception_is_kept():
    chat = routoo({name: ["fail"] for name in TRIO})
    with pytest.raises(AllModelsFailedError) as caught:
        chat.invoke("hello")
    assert len(caught.value.errors) == 3 and all(isinstance(e, ConnectionError) for e in caught.value.errors)
    assert caught.value.__cause__ is caught.value.errors[-1]


def test_retry_after_is_read_from_headers_and_attributes():
    class Limited(Exception):
        status_code = 429
        retry_after = 12.5

    assert retry_after_s(Limited()) == 12.5
    limited = FakeOpenAI(status=429, retry_after=7)
    model = ChatOpenAI(model="m", api_key="sk-test", base_url="http://fake.invalid/v1", max_retries=0, **limited.clients())
    with pytest.raises(Exception) as caught:
        model.invoke("hi")
    assert retry_after_s(caught.value) == 7.0


# ----- kind 6: the event loop stays free
def test_async_routing_runs_off_the_event_loop():
    chat = routoo()
    threads = []
    original = chat.router.route

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    chat.router.route = spy
    asyncio.run(chat.ainvoke("hello"))
    assert threads and threads[0].startswith("routoo-route")


def test_attempt_timeouts_are_named_errors():
    assert issubclass(AttemptTimeoutError, TimeoutError)
