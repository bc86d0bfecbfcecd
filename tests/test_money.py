"""What the budget charges against what providers bill, through the real provider classes.

LangChain's ``ChatOpenAI`` and LlamaIndex's ``OpenAI``, ``OpenAIResponses``, ``Anthropic`` and ``GoogleGenAI``
talk to the in-process endpoints of ``tests/fake_providers.py``, which bill as those providers do. Kinds:
the prompt as the provider counts it (tool schemas, images, history), usage read in full and priced by
genai-prices (cache reads and writes, reasoning), no usage keeps the worst case, holds bounded by what the
class really asks for, and abandoned attempts that still pay; sync and async, streaming and not.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from genai_prices import extract_usage
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai import OpenAI

from langchain_routoo import RoutooBudget, RoutooChatModel
from llama_index_routoo import RoutooLLM
from llama_index_routoo.llm import provider_call
from routoo_shared.routing.fallback import AllModelsFailedError, InvalidUsageError
from routoo_shared.routing.messages import IMAGE_TOKENS_BOUND, prompt_tokens
from routoo_shared.routing.pool import ModelPool, ModelSpec
from routoo_shared.routing.router import Router
from routoo_shared.routing.tokens import tokenizer_for
from routoo_shared.routing.usage import Usage, read_usage
from tests.conftest import trio_router
from tests.exit_paths import join_abandoned_attempts
from tests.fake_providers import (
    AnthropicMessages, Gemini, OpenAIChat, OpenAIResponses, chat_openai, llama_openai, openai_prompt_tokens, png,
)

PRIOR = "Meta-Llama-3_1-70B-Instruct"
MODES = ["sync", "async", "stream", "astream"]


def router_for(*specs: ModelSpec) -> Router:
    return Router(ModelPool(models=list(specs)), trio_router().predictor)


def spec(name: str, provider: str, **fields) -> ModelSpec:
    return ModelSpec(name=name, provider=provider, prior_like=PRIOR, supports_tools=True, **fields)


def schema(i: int) -> dict:
    properties = {f"arg_{j}": {"type": "string", "description": "a filter value for the inventory query."} for j in range(5)}
    properties["region"] = {"type": "string", "enum": ["eu", "us", "apac"], "description": "where to look"}
    return {"type": "function", "function": {"name": f"lookup_{i}", "description": "Look up inventory rows. " * 10,
                                             "parameters": {"type": "object", "properties": properties}}}


def run_langchain(chat, mode: str, prompt) -> None:
    if mode == "sync":
        chat.invoke(prompt)
    elif mode == "async":
        asyncio.run(chat.ainvoke(prompt))
    elif mode == "stream":
        list(chat.stream(prompt))
    else:
        async def consume():
            return [chunk async for chunk in chat.astream(prompt)]
        asyncio.run(consume())


def run_llama(llm: RoutooLLM, mode: str, messages: list[ChatMessage], **kwargs):
    if mode == "sync":
        return llm.chat(messages, **kwargs)
    if mode == "async":
        return asyncio.run(llm.achat(messages, **kwargs))
    if mode == "stream":
        return list(llm.stream_chat(messages, **kwargs))[-1]

    async def consume():
        return [chunk async for chunk in await llm.astream_chat(messages, **kwargs)][-1]
    return asyncio.run(consume())


# ----- kind 1: the prompt as the provider counts it
def test_openai_prompts_are_measured_within_2_percent_of_the_billed_tokens():
    gpt = tokenizer_for("openai", "gpt-4o")
    history = [{"role": "system", "content": "You are an inventory agent."}, {"role": "user", "content": "Find SKU A1 in eu."},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "lookup_0", "arguments": '{"arg_0": "A1"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "A1: 3 in stock in the eu warehouse."},
               {"role": "user", "content": [{"type": "text", "text": "And this one?"},
                                            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png(1024, 768)}"}}]}]
    tools = [schema(i) for i in range(12)]
    billed = openai_prompt_tokens({"messages": history, "tools": tools})
    measured = prompt_tokens(history, gpt, tools)
    assert abs(measured - billed) <= 0.02 * billed
    assert prompt_tokens("hi", gpt, tools) > 12 * 100  # the schemas are most of a short call's prompt


def test_other_providers_count_with_a_margin_the_tool_prompt_and_a_bound_for_unknown_images():
    text = "Summarise the attached contract in three bullet points. " * 20
    plain = prompt_tokens(text, tokenizer_for("openai", "gpt-4"))
    claude = tokenizer_for("anthropic", "claude-sonnet-4-5")
    assert prompt_tokens(text, claude) >= 1.2 * (plain - 3)
    assert prompt_tokens(text, claude, [schema(0)]) - prompt_tokens(text, claude) > 346  # Anthropic's tool system prompt
    unknown = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]
    assert prompt_tokens(unknown, claude) >= IMAGE_TOKENS_BOUND
    small = [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": png(300, 300)}}]}]
    assert prompt_tokens(small, tokenizer_for("google", "gemini-2.5-flash")) >= 258


def test_langchain_tool_schemas_are_measured_and_held(caplog):
    endpoint = OpenAIChat()
    budget = RoutooBudget(total_usd=1.0)
    chat = RoutooChatModel(models={"gpt-4o": chat_openai("gpt-4o", endpoint)}, router=router_for(spec("gpt-4o", "openai")),
                           budget=budget, max_tokens=16)
    answer = chat.bind_tools([schema(i) for i in range(20)]).invoke([HumanMessage("Find SKU A1."), AIMessage("Which region?"),
                                                                     HumanMessage("eu")])
    billed = endpoint.billed[-1]["prompt_tokens"]
    assert abs(answer.response_metadata["routoo"]["input_tokens"] - billed) <= 0.02 * billed


def test_llama_index_tool_schemas_are_measured_and_held():
    endpoint = OpenAIChat(tool_call=True)
    tools = [FunctionTool.from_defaults(lambda sku: sku, name=f"lookup_{i}", description="Look up inventory rows. " * 10)
             for i in range(20)]
    routoo = RoutooLLM(llms={"gpt-4o": llama_openai("gpt-4o", endpoint)}, router=router_for(spec("gpt-4o", "openai")),
                       budget=RoutooBudget(total_usd=1.0))
    answer = routoo.chat_with_tools(tools, user_msg="Find SKU A1.", max_tokens=16)
    billed = endpoint.billed[-1]["prompt_tokens"]
    assert abs(answer.additional_kwargs["routoo"]["input_tokens"] - billed) <= 0.02 * billed


# ----- kind 2: usage read in full, priced by genai-prices
@pytest.mark.parametrize("mode", MODES)
def test_langchain_cached_and_reasoning_tokens_are_priced_as_billed(mode):
    endpoint = OpenAIChat(cached_tokens=900, reasoning_tokens=15)
    budget = RoutooBudget(total_usd=1.0)
    chat = RoutooChatModel(models={"o4-mini": chat_openai("o4-mini", endpoint)}, router=router_for(spec("o4-mini", "openai")),
                           budget=budget)
    run_langchain(chat, mode, "Summarise the cached contract. " * 200)
    usage = endpoint.billed[-1]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 900
    billed = float(extract_usage({"model": "o4-mini", "usage": usage}, provider_id="openai", api_flavor="chat").calc_price().total_price)
    assert budget.spent_usd == pytest.approx(billed, rel=1e-9) and budget.reserved_usd == 0
    if mode in ("stream", "astream"):
        assert endpoint.requests[-1]["stream_options"] == {"include_usage": True}  # asked for, as the budget needs it


def _llama_index_llm(kind: str):
    """(model, provider, the pool LLM, its endpoint, genai-prices' price of one billed usage)."""
    import anthropic
    import httpx2
    from llama_index.llms.anthropic import Anthropic
    from llama_index.llms.google_genai import GoogleGenAI
    from llama_index.llms.openai import OpenAIResponses as Responses

    if kind == "openai":
        endpoint = OpenAIChat(cached_tokens=10, reasoning_tokens=12)
        return "o4-mini", "openai", llama_openai("o4-mini", endpoint), endpoint, \
            lambda usage: extract_usage({"model": "o4-mini", "usage": usage}, provider_id="openai", api_flavor="chat")
    if kind == "responses":
        endpoint = OpenAIResponses(prompt_tokens=5000, cached_tokens=4000, reasoning_tokens=12)
        llm = Responses(model="o4-mini", api_key="sk-test", max_retries=0, http_client=httpx.Client(transport=endpoint.transport()),
                        async_http_client=httpx.AsyncClient(transport=endpoint.async_transport()))
        return "o4-mini", "openai", llm, endpoint, \
            lambda usage: extract_usage({"model": "o4-mini", "usage": usage}, provider_id="openai", api_flavor="responses")
    if kind == "anthropic":
        endpoint = AnthropicMessages(cache_read=30_000, cache_write=2_000)
        llm = Anthropic(model="claude-sonnet-4-5", api_key="sk-ant-test", max_retries=0)
        llm._client = anthropic.Anthropic(api_key="sk-ant-test", max_retries=0, http_client=httpx.Client(transport=endpoint.transport()))
        llm._aclient = anthropic.AsyncAnthropic(api_key="sk-ant-test", max_retries=0,
                                                http_client=httpx.AsyncClient(transport=endpoint.async_transport()))
        return "claude-sonnet-4-5", "anthropic", llm, endpoint, \
            lambda usage: extract_usage({"model": "claude-sonnet-4-5", "usage": usage}, provider_id="anthropic")
    endpoint = Gemini(thoughts_tokens=2000)
    llm = GoogleGenAI(model="gemini-2.5-flash", api_key="test-key", max_tokens=4096, context_window=1_000_000, http_options={
        "httpx_client": httpx2.Client(transport=endpoint.transport()),
        "httpx_async_client": httpx2.AsyncClient(transport=endpoint.async_transport())})
    return "gemini-2.5-flash", "google", llm, endpoint, \
        lambda usage: extract_usage({"modelVersion": "gemini-2.5-flash", "usageMetadata": usage}, provider_id="google")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["openai", "responses", "anthropic", "google"])
def test_llama_index_usage_is_read_in_full_and_priced_by_genai_prices(kind, mode):
    pytest.importorskip("llama_index.llms.anthropic")
    pytest.importorskip("llama_index.llms.google_genai")
    model, provider, llm, endpoint, extracted = _llama_index_llm(kind)
    budget = RoutooBudget(total_usd=5.0)
    routoo = RoutooLLM(llms={model: llm}, router=router_for(spec(model, provider)), budget=budget)
    run_llama(routoo, mode, [ChatMessage(role="user", content="What is six times seven?")])
    billed = float(extracted(endpoint.billed[-1]).calc_price().total_price)
    assert budget.spent_usd == pytest.approx(billed, rel=1e-9) and budget.reserved_usd == 0


def test_usage_records_are_checked_where_they_enter():
    assert read_usage({"input_tokens": 10, "output_tokens": 5, "input_token_details": {"cache_read": 8}}).cache_read_tokens == 8
    assert read_usage({"promptTokenCount": 100, "candidatesTokenCount": 5, "thoughtsTokenCount": 50}) == \
        Usage(input_tokens=100, output_tokens=55, reasoning_tokens=50)
    assert read_usage({"input_tokens": 20, "output_tokens": 1, "cache_read_input_tokens": 80}).input_tokens == 100
    assert read_usage({"model": "x"}) is None
    for bad in ({"prompt_tokens": -1, "completion_tokens": 2}, {"prompt_tokens": 10, "completion_tokens": 2.5},
                {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 11}}):
        with pytest.raises(InvalidUsageError):
            read_usage(bad)


def test_explicit_prices_are_kept_for_models_genai_prices_lacks():
    local = ModelSpec(name="my-local-llm", price_in_per_mtok=1.0, price_out_per_mtok=2.0, context_window=8192)
    assert local.priced_by == "spec"
    assert local.price(Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=900)) == pytest.approx(0.0012)
    assert ModelSpec(name="gpt-4o-mini", provider="openai").priced_by == "genai-prices"


# ----- kind 3: no usage reported keeps the worst case
class Silent(BaseChatModel):
    """Answers without reporting usage (as some providers' streams do)."""

    @property
    def _llm_type(self) -> str:
        return "silent"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="an answer"))])


@pytest.mark.parametrize("mode", MODES)
def test_langchain_an_answer_without_usage_is_charged_its_worst_case(mode):
    router = trio_router()
    name = router.route("hello").model
    budget = RoutooBudget(total_usd=1.0)
    chat = RoutooChatModel(models={n: Silent() for n in router.pool.names}, router=router, budget=budget, max_tokens=50,
                           allowed_models=[name])
    run_langchain(chat, mode, "hello")
    spec_ = router.pool[name]
    assert budget.spent_usd == pytest.approx(spec_.worst_cost(spec_.prompt_tokens("hello"), 50))


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_llama_index_a_stream_without_usage_keeps_its_worst_case(mode):
    endpoint = OpenAIChat()
    llm = llama_openai("gpt-4o-mini", endpoint, max_tokens=100, additional_kwargs={"stream_options": {"include_usage": False}})
    budget = RoutooBudget(total_usd=1.0)
    routoo = RoutooLLM(llms={"gpt-4o-mini": llm}, router=router_for(spec("gpt-4o-mini", "openai")), budget=budget)
    messages = [ChatMessage(role="user", content="hello")]
    run_llama(routoo, mode, messages)
    worst = routoo.router.pool["gpt-4o-mini"]
    assert budget.spent_usd == pytest.approx(worst.worst_cost(worst.prompt_tokens(messages), 100))
    assert endpoint.requests[-1]["stream_options"] == {"include_usage": False}  # the caller's choice stands


# ----- kind 4: holds match what is really asked
def test_each_llama_index_class_is_asked_with_its_own_keyword():
    from llama_index.llms.anthropic import Anthropic
    from llama_index.llms.google_genai import GoogleGenAI
    from llama_index.llms.openai import OpenAIResponses as Responses

    assert provider_call(OpenAI(model="gpt-4o", api_key="k", max_tokens=300), {"max_tokens": 10}, False)[1] == 300
    assert provider_call(OpenAI(model="gpt-4o", api_key="k"), {"max_tokens": 10}, True) == (
        {"max_tokens": 10, "stream_options": {"include_usage": True}}, 10)
    assert provider_call(Responses(model="gpt-4o", api_key="k"), {"max_tokens": 10}, False) == ({"max_output_tokens": 10}, 10)
    assert provider_call(Anthropic(model="claude-sonnet-4-5", api_key="k"), {}, False)[1] == Anthropic(
        model="claude-sonnet-4-5", api_key="k").max_tokens
    gemini = GoogleGenAI(model="gemini-2.5-flash", api_key="k", max_tokens=1024, context_window=1_000_000)
    assert provider_call(gemini, {"max_tokens": 64}, False) == ({"generation_config": {"max_output_tokens": 64}}, 64)
    assert provider_call(gemini, {}, False)[1] == 1024


def test_llama_index_gemini_is_sent_the_per_call_bound_it_is_held_for():
    pytest.importorskip("llama_index.llms.google_genai")
    _, _, llm, endpoint, _ = _llama_index_llm("google")
    endpoint.fill, endpoint.thoughts_tokens = True, 0
    budget = RoutooBudget(total_usd=1.0)
    routoo = RoutooLLM(llms={"gemini-2.5-flash": llm}, router=router_for(spec("gemini-2.5-flash", "google")), budget=budget)
    routoo.chat([ChatMessage(role="user", content="Write a note.")], max_tokens=64)
    assert endpoint.requests[-1]["generationConfig"]["maxOutputTokens"] == 64
    assert endpoint.billed[-1]["candidatesTokenCount"] == 64


def test_a_class_that_ignores_a_keyword_is_held_at_the_spec_bound():
    router = trio_router()
    name = router.route("hello").model
    budget = RoutooBudget(total_usd=1.0)
    from llama_index.core.llms.mock import MockLLM

    routoo = RoutooLLM(llms={n: MockLLM() for n in router.pool.names}, router=router, budget=budget, allowed_models=[name])
    routoo.chat([ChatMessage(role="user", content="hello")], max_tokens=5)
    spec_ = router.pool[name]
    assert budget.spent_usd == pytest.approx(spec_.worst_cost(spec_.prompt_tokens([ChatMessage(role="user", content="hello")]),
                                                              spec_.max_output_tokens))


# ----- kind 5: abandoned attempts still pay
def two_slow(make, delay_s: float):
    endpoints = {name: OpenAIChat(output_tokens=4000, delay_s=delay_s) for name in ("gpt-4o", "gpt-4o-mini")}
    return endpoints, {name: make(name, endpoint) for name, endpoint in endpoints.items()}


def billed_usd(router: Router, endpoints: dict[str, OpenAIChat]) -> float:
    return sum(router.pool[name].price(read_usage(usage)) for name, e in endpoints.items() for usage in e.billed)


@pytest.mark.parametrize("integration", ["langchain", "llama_index"])
def test_a_timed_out_sync_attempt_keeps_its_hold_until_its_thread_ends_then_pays_its_usage(integration):
    router = router_for(spec("gpt-4o", "openai"), spec("gpt-4o-mini", "openai"))
    budget = RoutooBudget(total_usd=5.0)
    if integration == "langchain":
        endpoints, models = two_slow(chat_openai, 0.6)
        routed = RoutooChatModel(models=models, router=router, budget=budget, timeout_s=0.2)
        call = lambda: routed.invoke("Write an essay on relativity.")  # noqa: E731
    else:
        endpoints, models = two_slow(llama_openai, 0.6)
        routed = RoutooLLM(llms=models, router=router, budget=budget, timeout_s=0.2)
        call = lambda: routed.complete("Write an essay on relativity.")  # noqa: E731
    with pytest.raises(AllModelsFailedError):
        call()
    assert budget.reserved_usd > 0 and budget.spent_usd == 0  # both requests still run, each holding its worst case
    join_abandoned_attempts()
    assert budget.reserved_usd == 0
    assert budget.spent_usd == pytest.approx(billed_usd(router, endpoints)) and len(endpoints["gpt-4o"].billed) == 1


@pytest.mark.parametrize("integration", ["langchain", "llama_index"])
def test_a_cancelled_async_request_is_charged_its_prompt(integration):
    router = router_for(spec("gpt-4o", "openai"))
    budget = RoutooBudget(total_usd=5.0)
    endpoint = OpenAIChat(delay_s=2.0)
    prompt = "Write an essay on relativity. " * 50
    if integration == "langchain":
        routed = RoutooChatModel(models={"gpt-4o": chat_openai("gpt-4o", endpoint)}, router=router, budget=budget)
        call = routed.ainvoke(prompt)
        measured = [HumanMessage(prompt)]
    else:
        routed = RoutooLLM(llms={"gpt-4o": llama_openai("gpt-4o", endpoint)}, router=router, budget=budget)
        measured = [ChatMessage(role="user", content=prompt)]
        call = routed.achat(measured)

    async def cancel():
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(call, 0.5)

    asyncio.run(cancel())
    gpt = router.pool["gpt-4o"]
    assert budget.reserved_usd == 0 and budget.spent_usd == pytest.approx(gpt.cost(gpt.prompt_tokens(measured), 0))


def test_tool_results_in_the_history_count():
    gpt = tokenizer_for("openai", "gpt-4o")
    result = "row " * 500
    short = [HumanMessage("Find SKU A1."), AIMessage("", tool_calls=[{"name": "lookup", "args": {"sku": "A1"}, "id": "c1"}])]
    longer = short + [ToolMessage(result, tool_call_id="c1")]
    assert prompt_tokens(longer, gpt) - prompt_tokens(short, gpt) >= 500
    assert prompt_tokens(short, gpt) > prompt_tokens(short[:1], gpt) + len(json.dumps({"sku": "A1"})) // 4
