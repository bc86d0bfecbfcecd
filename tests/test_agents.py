"""Routoo inside agent frameworks: LangChain v1 ``create_agent`` and its middleware, LangGraph threads,
checkpoints and message streams; LlamaIndex agents with truncating memory, ingestion pipelines and
async synthesizers. Real provider classes (``ChatOpenAI``, LlamaIndex ``OpenAI``) over the in-process
fake endpoint; scripted models where a test is about Routoo's own logic.
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import subprocess
import sys
from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware, SummarizationMiddleware, wrap_model_call
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import BaseModel

from langchain_routoo import RoutooChatModel
from routoo_shared.routing.budget import BudgetExhaustedError
from routoo_shared.routing.conversations import InMemoryConversationStore
from routoo_shared.routing.fallback import AllModelsFailedError, EmptyResponseError
from tests.conftest import TRIO, ScriptedChatModel, trio_router
from tests.fake_openai import FakeOpenAI

QUESTION = "What is 1 + 2?"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Weather(BaseModel):
    city: str
    temp_c: float


def tool_router():
    router = trio_router()
    for spec in router.pool.models:
        spec.supports_tools = spec.supports_structured_output = True
    return router


def chat_openai(fake: FakeOpenAI, name: str, **settings) -> ChatOpenAI:
    return ChatOpenAI(model=name, api_key="sk-test", base_url="http://fake.invalid/v1", max_retries=0,
                      stream_usage=True, **fake.clients(), **settings)


def openai_routoo(fake: FakeOpenAI, **settings) -> RoutooChatModel:
    return RoutooChatModel(models={name: chat_openai(fake, name) for name in TRIO}, router=tool_router(), **settings)


def scripted_routoo(**settings) -> RoutooChatModel:
    return RoutooChatModel(models={name: ScriptedChatModel(name=name, reply=f"answer from {name}") for name in TRIO},
                           router=tool_router(), **settings)


def answered_by(messages) -> list[str]:
    return [m.response_metadata["routoo"]["answered_by"] for m in messages if isinstance(m, AIMessage)]


# ----- kind 2: create_agent works as with any chat model
@pytest.mark.parametrize("tools", [[], [add]], ids=["no tools", "a tool"])
def test_provider_strategy_reaches_the_chosen_model_with_and_without_tools(tools):
    fake = FakeOpenAI(structured={"city": "Paris", "temp_c": 21.0})
    agent = create_agent(openai_routoo(fake), tools=tools, response_format=ProviderStrategy(Weather))
    result = agent.invoke({"messages": [("user", "Weather in Paris? No tools needed.")]}, {"recursion_limit": 6})
    if tools:  # the fake calls the tool first, then answers the tool result with the schema's JSON
        assert all(t["function"]["strict"] for body in fake.requests for t in body.get("tools", []))
    assert result["structured_response"] == Weather(city="Paris", temp_c=21.0)
    assert fake.requests[-1]["response_format"]["type"] == "json_schema"


def test_auto_and_tool_strategies_follow_the_pool_profile():
    fake = FakeOpenAI(structured={"city": "Paris", "temp_c": 21.0}, tool_args={"city": "Paris", "temp_c": 21.0})
    routoo = openai_routoo(fake)
    assert routoo.profile["structured_output"] and routoo.profile["tool_calling"]
    result = create_agent(routoo, tools=[], response_format=Weather).invoke({"messages": [("user", "Weather?")]})
    assert result["structured_response"].city == "Paris" and "response_format" in fake.requests[-1]  # provider strategy
    fake.requests.clear()
    result = create_agent(routoo, tools=[], response_format=ToolStrategy(Weather)).invoke({"messages": [("user", "Weather?")]})
    assert result["structured_response"] == Weather(city="Paris", temp_c=21.0)
    assert fake.requests[0]["tool_choice"] == "required" and fake.requests[0]["tools"][0]["function"]["name"] == "Weather"


def test_model_settings_from_middleware_are_routed_and_never_sent():
    fake = FakeOpenAI(reply="3")

    @wrap_model_call
    def cheap(request, handler):
        return handler(request.override(model_settings={"allowed_models": [TRIO[0]], "max_tokens": 64}))

    for tools in ([add], []):
        fake.requests.clear()
        result = create_agent(openai_routoo(fake), tools=tools, middleware=[cheap]).invoke(
            {"messages": [("user", QUESTION)]}, {"recursion_limit": 8})
        assert set(answered_by(result["messages"])) == {TRIO[0]}
        assert all(body["model"] == TRIO[0] and body.get("max_completion_tokens", body.get("max_tokens")) == 64
                   and "allowed_models" not in body
                   for body in fake.requests)


def test_profile_is_what_every_eligible_model_can_take():
    models = {name: ChatOpenAI(model=model, api_key="sk-test") for name, model in zip(TRIO, ["gpt-4o-mini", "gpt-4o", "gpt-4.1"])}
    routoo = RoutooChatModel(models=models, router=tool_router())
    specs = routoo.router.pool.models  # their windows and output limits (the bundled specs set the windows)
    assert routoo.profile["max_input_tokens"] == min(spec.context_window for spec in specs)
    assert routoo.profile["max_output_tokens"] == min(spec.max_output_tokens for spec in specs)
    assert routoo.profile["tool_calling"] and routoo.profile["tool_choice"]  # every model's own profile says so
    narrow = RoutooChatModel(models=models, router=tool_router(), allowed_models=TRIO[2:])
    assert narrow.profile["max_input_tokens"] == specs[2].context_window > routoo.profile["max_input_tokens"]
    SummarizationMiddleware(model=routoo, trigger=("fraction", 0.8))  # sized by the profile: builds


# ----- kind 1: sticky threads
def test_a_sticky_thread_keeps_its_model_first_and_falls_back_when_it_is_down():
    routoo = scripted_routoo(sticky=True, max_fallbacks=2)
    config = {"configurable": {"thread_id": "thread-1"}}
    kept = routoo.invoke(QUESTION, config).response_metadata["routoo"]["answered_by"]
    other = next(name for name in TRIO if name != kept)
    second = routoo.invoke("Something else entirely, about poetry.", config, allowed_models=None)
    assert second.response_metadata["routoo"]["answered_by"] == kept
    assert second.response_metadata["routoo"]["sticky_reason"] == "kept for thread_id 'thread-1' (sticky)"
    assert len(second.response_metadata["routoo"]["candidates"]) == 3  # never pinned: the others stay
    routoo.models[kept].error = "503 upstream overloaded"
    moved = routoo.invoke(QUESTION, config).response_metadata["routoo"]
    assert moved["answered_by"] != kept and moved["attempts"][0]["model"] == kept
    assert f"{kept} was kept for thread_id 'thread-1'" in moved["reason"]
    routoo.models[kept].error = None
    assert routoo.invoke(QUESTION, config).response_metadata["routoo"]["answered_by"] == moved["answered_by"]
    fresh = routoo.invoke(QUESTION, {"configurable": {"thread_id": "thread-2"}}, model=other)
    assert fresh.response_metadata["routoo"]["answered_by"] == other  # another thread opening alike is not pinned


def test_sessions_and_histories_name_conversations_and_a_shared_store_serves_every_instance():
    store = InMemoryConversationStore()
    one, two = scripted_routoo(conversations=store), scripted_routoo(conversations=store)
    first = one.invoke(QUESTION, session_id="user-7", model=TRIO[0])
    assert not first.response_metadata["routoo"]["sticky"]
    later = two.invoke("A much harder question about topology.", session_id="user-7")  # another worker
    assert later.response_metadata["routoo"]["answered_by"] == TRIO[0] and later.response_metadata["routoo"]["sticky"]
    history = [HumanMessage(QUESTION), first, HumanMessage("And a hard follow-up about topology?")]
    assert scripted_routoo(sticky=True).invoke(history).response_metadata["model_name"] == TRIO[0]
    assert scripted_routoo().invoke(history).response_metadata["routoo"]["sticky"] is False  # not sticky: routed afresh
    excluded = scripted_routoo(sticky=True, denied_models=[TRIO[0]]).invoke(history).response_metadata["routoo"]
    assert excluded["answered_by"] != TRIO[0] and "routed afresh" in excluded["sticky_reason"]


def test_a_summarized_thread_stays_on_its_model():
    routoo = scripted_routoo(sticky=True)
    routoo.models[TRIO[2]].error = "503"  # the thread starts during an outage of the best model
    agent = create_agent(routoo, tools=[add], checkpointer=InMemorySaver(), middleware=[
        SummarizationMiddleware(model=ScriptedChatModel(name="summarizer"), trigger=("messages", 6), keep=("messages", 2))])
    config = {"configurable": {"thread_id": "thread-1"}, "recursion_limit": 20}
    used = set()
    for turn, question in enumerate(["Add 1 and 2.", "Now add 3 and 4.", "Now add 5 and 6."]):
        routoo.models[TRIO[2]].error = "503" if turn == 0 else None
        used |= set(answered_by(agent.invoke({"messages": [("user", question)]}, config)["messages"][-3:]))
    assert len(used) == 1 and TRIO[2] not in used


def test_a_human_in_the_loop_thread_resumed_in_another_process_finishes_on_its_model(tmp_path):
    database = tmp_path / "checkpoints.sqlite"
    worker = Path(__file__).with_name("agent_worker.py")
    run = lambda phase: json.loads(subprocess.run(  # noqa: E731
        [sys.executable, str(worker), phase, str(database)], check=True, capture_output=True, text=True,
        cwd=Path(__file__).parent.parent).stdout.strip().splitlines()[-1])
    first = run("first")  # the best model is down; the agent stops before its tool runs
    resumed = run("resume")  # a fresh process, every model up
    assert first["interrupted"] and TRIO[2] not in first["models"]
    assert set(resumed["models"]) == set(first["models"])


# ----- kind 3: watchers see one call
class Tokens(BaseCallbackHandler):
    def __init__(self):
        self.tokens: list[str] = []

    def on_llm_new_token(self, token, **kwargs):
        self.tokens.append(token)


class AsyncTokens(AsyncCallbackHandler):
    def __init__(self):
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token, **kwargs):
        self.tokens.append(token)


def _run(model, path: str, config: dict):
    if path == "invoke":
        return model.invoke(QUESTION, config)
    if path == "stream":
        return functools.reduce(operator.add, model.stream(QUESTION, config))

    async def consume():
        if path == "ainvoke":
            return await model.ainvoke(QUESTION, config)
        return functools.reduce(operator.add, [chunk async for chunk in model.astream(QUESTION, config)])

    return asyncio.run(consume())


@pytest.mark.parametrize("path", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "streaming provider"])
def test_a_token_handler_hears_each_token_once(path, streaming):
    fake = FakeOpenAI()
    routoo = RoutooChatModel(models={name: chat_openai(fake, name, streaming=streaming) for name in TRIO},
                             router=tool_router())
    for handler_class in (Tokens, AsyncTokens):
        heard = handler_class()
        with get_usage_metadata_callback() as tracked:
            message = _run(routoo, path, {"callbacks": [heard]})
        assert "".join(heard.tokens) == (fake.reply if streaming or "stream" in path else "")  # as from ChatOpenAI
        assert sum(u["total_tokens"] for u in tracked.usage_metadata.values()) == message.usage_metadata["total_tokens"] == 18


@pytest.mark.parametrize("node_call", ["invoke", "stream"])
def test_langgraph_message_chunks_carry_usage_counted_once(node_call):
    fake = FakeOpenAI()
    routoo = openai_routoo(fake)

    def chat(state):
        if node_call == "invoke":
            return {"messages": [routoo.invoke(state["messages"])]}
        return {"messages": [functools.reduce(operator.add, routoo.stream(state["messages"]))]}

    graph = StateGraph(MessagesState)
    graph.add_node("chat", chat)
    graph.add_edge(START, "chat")
    graph.add_edge("chat", END)
    with get_usage_metadata_callback() as tracked:
        chunks = [chunk for chunk, _ in graph.compile().stream({"messages": [("user", QUESTION)]}, stream_mode="messages")]
    whole = functools.reduce(operator.add, chunks)
    assert whole.content == fake.reply and whole.usage_metadata["total_tokens"] == 18
    assert sum(u["total_tokens"] for u in tracked.usage_metadata.values()) == 18


# ----- kind 4 on the LangChain side: an unreadable answer falls back
def test_a_filtered_answer_with_no_choices_falls_back():
    filtered, healthy = FakeOpenAI(filtered=True), FakeOpenAI()
    routoo = openai_routoo(healthy)
    chosen = routoo.router.route(QUESTION).model
    routoo.models[chosen] = chat_openai(filtered, chosen)
    for path in ("invoke", "stream"):
        record = _run(routoo, path, {}).response_metadata["routoo"]
        assert record["attempts"][0]["model"] == chosen and record["answered_by"] != chosen


def test_routoo_errors_are_not_runtime_errors():
    for error in (BudgetExhaustedError, AllModelsFailedError, EmptyResponseError):
        assert issubclass(error, Exception) and not issubclass(error, RuntimeError)


# ----- LlamaIndex: agents with truncating memory, pipelines, async synthesizers, callbacks, errors
from llama_index.core import Document  # noqa: E402
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent  # noqa: E402
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler  # noqa: E402
from llama_index.core.extractors import SummaryExtractor  # noqa: E402
from llama_index.core.ingestion import IngestionCache, IngestionPipeline  # noqa: E402
from llama_index.core.memory import ChatMemoryBuffer  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.prompts import PromptTemplate  # noqa: E402
from llama_index.core.response_synthesizers import get_response_synthesizer  # noqa: E402
from pydantic import field_validator  # noqa: E402

from llama_index_routoo import RoutooBudget, RoutooLLM  # noqa: E402
from tests.test_llama_index import multiply, openai_llm, openai_routoo as li_openai_routoo  # noqa: E402


@pytest.mark.parametrize("workflow", [False, True], ids=["FunctionAgent", "AgentWorkflow"])
def test_an_agent_with_truncating_memory_stays_on_the_model_that_answered(workflow):
    routoo, endpoints = li_openai_routoo(sticky=True)
    agent = FunctionAgent(tools=[multiply], llm=routoo, system_prompt="You multiply numbers.")
    runner = AgentWorkflow(agents=[agent]) if workflow else agent
    memory = ChatMemoryBuffer.from_defaults(token_limit=30)  # keeps only the last few messages
    best = routoo.router.route("What is 2 times 3?").model
    endpoints[best].status = 503  # the thread starts during an outage of the best model

    async def turns() -> list[set[str]]:
        used = []
        for turn, question in enumerate(["What is 2 times 3?", "And 4 times 5?", "And 6 times 7?"]):
            before = {name: len(endpoint.requests) for name, endpoint in endpoints.items()}
            endpoints[best].status = 503 if turn == 0 else None
            await runner.run(user_msg=question, memory=memory)
            used.append({name for name, endpoint in endpoints.items()
                         if endpoint.status is None and len(endpoint.requests) > before[name]})
        return used

    used = asyncio.run(turns())
    assert len(memory.get()) < len(memory.get_all())  # the memory truncates
    assert len(set().union(*used)) == 1 and best not in used[0]


def test_an_ingestion_cache_hits_with_a_budget_and_charges_once(tmp_path):
    routoo, endpoints = li_openai_routoo(budget=RoutooBudget(total_usd=1.0))
    assert routoo.to_dict()["budget"] == {"total_usd": 1.0}
    pipeline = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0),
                                                  SummaryExtractor(llm=routoo, summaries=["self"], show_progress=False)],
                                 cache=IngestionCache())
    documents = [Document(text=f"Document {i}. Routing picks a model for each prompt.", id_=f"doc-{i}") for i in range(3)]
    calls = []
    for _ in range(2):
        before = sum(len(endpoint.requests) for endpoint in endpoints.values())
        pipeline.run(documents=documents)
        calls.append(sum(len(endpoint.requests) for endpoint in endpoints.values()) - before)
    assert calls == [3, 0] and routoo.budget.calls == 3


def test_an_async_tree_summarize_that_runs_out_of_budget_raises_the_budget_error():
    routoo, endpoints = li_openai_routoo(budget=RoutooBudget(total_usd=2e-5))
    synthesizer = get_response_synthesizer(llm=routoo, response_mode="tree_summarize", use_async=True)
    parts = [f"Part {i}: " + "routing picks a model for each prompt. " * 40 for i in range(8)]
    with pytest.raises(BudgetExhaustedError):  # through LlamaIndex's asyncio_run, by its own name
        synthesizer.get_response("What do the parts say?", parts)
    assert routoo.budget.reserved_usd == 0


def test_two_routoo_llms_over_the_same_llms_report_to_their_own_callbacks():
    routoo, endpoints = li_openai_routoo()
    counters = [TokenCountingHandler(), TokenCountingHandler()]
    pool_managers = {name: llm.callback_manager for name, llm in routoo.llms.items()}
    both = [RoutooLLM(llms=routoo.llms, router=routoo.router, callback_manager=CallbackManager([counter]))
            for counter in counters]
    both[0].complete("Say hi.")
    both[1].complete("Say hi.")
    both[1].complete("Say hi again.")
    assert [len(counter.llm_token_counts) for counter in counters] == [1, 2]
    assert all(llm.callback_manager is pool_managers[name] for name, llm in routoo.llms.items())  # never written to


def test_a_filtered_llama_index_answer_falls_back_but_the_callers_parser_errors_fail_at_once():
    routoo, endpoints = li_openai_routoo(max_fallbacks=2)
    chosen = routoo.router.route("Describe chapter 3.").model
    endpoints[chosen].filtered = True
    answer = routoo.complete("Describe chapter 3.")
    assert [(a["model"], a["kind"]) for a in answer.additional_kwargs["routoo"]["attempts"]][0] == (chosen, "empty")

    class Strict(BaseModel):
        name: str
        age: int

        @field_validator("name")
        @classmethod
        def known(cls, name: str) -> str:
            return {"Grace": name}[name]  # the caller's own code: a KeyError for any other name

    endpoints[chosen].filtered = False
    before = sum(len(endpoint.requests) for endpoint in endpoints.values())
    with pytest.raises(Exception) as raised:
        routoo.structured_predict(Strict, PromptTemplate("Who is {who}?"), who="Ada")
    assert not isinstance(raised.value, AllModelsFailedError)
    assert sum(len(endpoint.requests) for endpoint in endpoints.values()) - before == 1  # no fallback
