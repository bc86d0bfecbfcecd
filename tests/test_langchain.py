"""RoutooChatModel behaviour: real local LLMs for integration, a scripted model for Routoo's own logic."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField
from pydantic import BaseModel

from langchain_routoo import BudgetExhaustedError, LocalChatModel, RoutooBudget, RoutooChatModel
from routoo_shared.fallback import AllModelsFailedError
from routoo_shared.selector import InfeasibleRoutingError
from tests.conftest import TRIO, ScriptedChatModel, trio_router


def scripted_routoo(**settings) -> RoutooChatModel:
    return RoutooChatModel(models={name: ScriptedChatModel(name=name, reply=f"answer from {name}") for name in TRIO},
                           router=trio_router(), **settings)


@pytest.fixture(scope="module")
def local_routoo(local_router_fixture) -> RoutooChatModel:
    models = {name: LocalChatModel(model=name, max_tokens=12) for name in local_router_fixture.pool.names}
    return RoutooChatModel(models=models, router=local_router_fixture)


# ----- real local models
@pytest.mark.slow
def test_chain_with_real_local_models(local_routoo):
    chain = ChatPromptTemplate.from_messages([("user", "Answer in one word: {question}")]) | local_routoo | StrOutputParser()
    answer = chain.invoke({"question": "What colour is the sky on a clear day?"})
    assert isinstance(answer, str) and answer.strip()


@pytest.mark.slow
def test_invoke_records_the_decision_and_usage(local_routoo):
    message = local_routoo.invoke("What is 2 + 2?")
    routoo = message.response_metadata["routoo"]
    assert message.response_metadata["model_name"] == routoo["answered_by"] == routoo["model"]
    assert routoo["model"] in local_routoo.router.pool.names
    assert [c["model"] for c in routoo["candidates"]][0] == routoo["model"]
    assert routoo["attempts"] == [{"model": routoo["model"], "error": None}]
    assert message.usage_metadata["input_tokens"] > 0 and message.usage_metadata["output_tokens"] > 0


@pytest.mark.slow
def test_stream_puts_the_decision_in_the_first_chunk_only(local_routoo):
    chunks = list(local_routoo.stream("Name a fruit."))
    assert "routoo" in chunks[0].response_metadata
    assert all("routoo" not in c.response_metadata for c in chunks[1:])
    assert "".join(c.text for c in chunks).strip()


@pytest.mark.slow
def test_batch_of_50_prompts(local_routoo):
    small = local_routoo.bind(max_tokens=2)
    answers = small.batch([f"Say the number {i}." for i in range(50)], config={"max_concurrency": 2})
    assert len(answers) == 50
    assert all(a.response_metadata["routoo"]["model"] in local_routoo.router.pool.names for a in answers)


@pytest.mark.slow
def test_fallback_after_a_raising_model_reaches_a_real_model(local_router_fixture):
    names = local_router_fixture.pool.names
    decision = local_router_fixture.route("What is the capital of France?")
    models = {name: LocalChatModel(model=name, max_tokens=8) for name in names}
    models[decision.model] = ScriptedChatModel(error="rate limited (429)")
    message = RoutooChatModel(models=models, router=local_router_fixture).invoke("What is the capital of France?")
    attempts = message.response_metadata["routoo"]["attempts"]
    assert attempts[0]["model"] == decision.model and "rate limited" in attempts[0]["error"]
    assert message.response_metadata["model_name"] == attempts[1]["model"] != decision.model
    assert message.content


def test_token_ids_are_real_offline(local_routoo):
    assert local_routoo.get_num_tokens("Routing picks the right model for each prompt.") > 5


# ----- Routoo's own logic, on scripted provider models
def test_callbacks_see_the_router_run_and_the_chosen_model_run():
    class Recorder(BaseCallbackHandler):
        def __init__(self):
            self.runs = []

        def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kwargs):
            self.runs.append((run_id, parent_run_id, kwargs.get("name") or serialized.get("name")))

    recorder = Recorder()
    scripted_routoo().invoke("hello", config={"callbacks": [recorder]})
    assert len(recorder.runs) == 2
    (router_run, _, _), (_, parent, _) = recorder.runs
    assert parent == router_run


def test_tools_only_go_to_tool_capable_models():
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    routoo = scripted_routoo(quality_cost_tradeoff=50.0)  # would pick the cheapest model without tools
    assert routoo.invoke("hi").response_metadata["model_name"] == TRIO[0]
    message = routoo.bind_tools([add]).invoke("What is 1 + 2?")
    assert message.response_metadata["model_name"] == TRIO[-1]
    assert message.tool_calls[0]["name"] == "add"
    routoo.models[TRIO[-1]].error = "down"
    with pytest.raises(AllModelsFailedError, match="down"):  # no other tool-capable model to fall back to
        routoo.bind_tools([add]).invoke("What is 1 + 2?")


def test_structured_output_routes_to_capable_models():
    class Answer(BaseModel):
        value: int

    class StructuredScripted(ScriptedChatModel):
        def with_structured_output(self, schema, *, include_raw=False, **kwargs):
            from langchain_core.runnables import RunnableLambda

            return RunnableLambda(lambda _: schema(value=3))

    router = trio_router(quality_cost_tradeoff=50.0)
    routoo = RoutooChatModel(models={n: StructuredScripted(name=n) for n in TRIO}, router=router)
    assert routoo.with_structured_output(Answer).invoke("1 + 2?") == Answer(value=3)


def test_per_call_overrides_with_bind_and_model():
    routoo = scripted_routoo()
    strong = routoo.invoke("Explain the proof of Fermat's last theorem.").response_metadata["model_name"]
    cheap = routoo.bind(quality_cost_tradeoff=50.0).invoke("Explain the proof of Fermat's last theorem.").response_metadata
    assert cheap["model_name"] == TRIO[0] and cheap["routoo"]["binding_constraint"] == "quality_cost_tradeoff"
    assert strong == TRIO[-1]
    assert routoo.invoke("hi", model=TRIO[1]).response_metadata["model_name"] == TRIO[1]
    with pytest.raises(KeyError, match="unknown model"):
        routoo.invoke("hi", model="gpt-17")
    configurable = routoo.configurable_fields(quality_cost_tradeoff=ConfigurableField(id="tradeoff"))
    by_config = configurable.invoke("Explain the proof of Fermat's last theorem.", config={"configurable": {"tradeoff": 50.0}})
    assert by_config.response_metadata["model_name"] == TRIO[0]


def test_fallback_records_every_attempt_and_refuses_empty_answers():
    routoo = scripted_routoo(max_fallbacks=2)
    order = [routoo.router.route("hello").model] + routoo.router.route("hello").fallbacks
    routoo.models[order[0]].error = "connection reset"
    routoo.models[order[1]].reply = ""  # empty answer counts as a failure
    message = routoo.invoke("hello")
    attempts = message.response_metadata["routoo"]["attempts"]
    assert [a["model"] for a in attempts] == order
    assert "connection reset" in attempts[0]["error"] and "empty" in attempts[1]["error"]
    assert message.response_metadata["model_name"] == order[2]
    for model in routoo.models.values():
        model.error = "down"
    with pytest.raises(AllModelsFailedError, match="all 3 routed model"):
        routoo.invoke("hello")


def test_stream_falls_back_before_the_first_chunk():
    routoo = scripted_routoo()
    order = [routoo.router.route("hello").model] + routoo.router.route("hello").fallbacks
    routoo.models[order[0]].error = "overloaded"
    chunks = list(routoo.stream("hello"))
    assert chunks[0].response_metadata["model_name"] == order[1]
    assert "".join(c.text for c in chunks) == f"answer from {order[1]}"


def test_bad_input_is_a_clear_error():
    routoo = scripted_routoo()
    with pytest.raises(ValueError, match="empty prompt"):
        routoo.invoke([HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:,"}}])])
    with pytest.raises(InfeasibleRoutingError, match="max_cost_per_query"):
        routoo.invoke("hi", max_cost_per_query=1e-12)
    with pytest.raises(ValueError, match="no chat model for"):
        RoutooChatModel(models={TRIO[0]: ScriptedChatModel()}, router=trio_router())


def test_multi_turn_and_content_blocks_are_routed_on_the_conversation():
    routoo = scripted_routoo()
    conversation = [
        HumanMessage(content=[{"type": "text", "text": "Let's talk about integrals."}, {"type": "image_url", "image_url": {"url": "data:,"}}]),
        AIMessage(content="Sure."),
        HumanMessage(content="What is the integral of x^2?"),
    ]
    message = routoo.invoke(conversation)
    assert message.response_metadata["routoo"]["input_tokens"] > 10


async def test_100_concurrent_calls_share_a_budget():
    budget = RoutooBudget(total_usd=20 * 30e-6)  # room for about 20 calls of the strong model
    routoo = scripted_routoo(budget=budget)
    results = await asyncio.gather(*(routoo.ainvoke(f"question {i}") for i in range(100)), return_exceptions=True)
    answered = [r for r in results if isinstance(r, AIMessage)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert answered and refused and len(answered) + len(refused) == 100
    assert all(isinstance(r, BudgetExhaustedError) for r in refused)
    largest_call = max(c["estimated_cost_usd"] for a in answered for c in a.response_metadata["routoo"]["candidates"])
    assert budget.spent_usd <= budget.total_usd + largest_call
    assert budget.calls == len(answered)
