"""RoutooChatModel as LangChain and LangGraph users run it.

Real local LLMs and real ``ChatOpenAI`` objects (served by an in-process fake endpoint) for the
integration; a scripted provider model where a test is about Routoo's own logic.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import warnings

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.globals import set_llm_cache
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField, RunnableLambda
from langchain_core.tools import tool
from langchain_core.tracers.context import collect_runs
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from langchain_routoo import LocalChatModel, RoutooChatModel
from routoo_shared.routing.fallback import AllModelsFailedError
from routoo_shared.routing.pool import ModelPool, ModelSpec
from routoo_shared.routing.router import Router
from routoo_shared.routing.selector import InfeasibleRoutingError
from tests.conftest import TRIO, USAGE, ScriptedChatModel, trio_router
from tests.fake_openai import FakeOpenAI

QUESTION = "What is the capital of France?"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Answer(BaseModel):
    value: int


def scripted_routoo(router: Router | None = None, **settings) -> RoutooChatModel:
    return RoutooChatModel(models={name: ScriptedChatModel(name=name, reply=f"answer from {name}") for name in TRIO},
                           router=router or trio_router(), **settings)


def openai_routoo(fake: FakeOpenAI, **settings) -> RoutooChatModel:
    """Every pool name served by a real ChatOpenAI against the fake endpoint; all can call tools."""
    router = trio_router()
    for spec in router.pool.models:
        spec.supports_tools = spec.supports_structured_output = True
    models = {name: ChatOpenAI(model=name, api_key="sk-test", base_url="http://fake.invalid/v1", max_retries=0,
                               stream_usage=True, **fake.clients()) for name in TRIO}
    return RoutooChatModel(models=models, router=router, **settings)


class Runs(BaseCallbackHandler):
    """Records chat-model runs: name, id, parent, tags."""

    def __init__(self):
        self.runs = []

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, tags=None, **kwargs):
        self.runs.append({"name": kwargs.get("name") or serialized.get("name"), "id": run_id, "parent": parent_run_id,
                          "tags": tags or []})


@pytest.fixture
def llm_cache():
    set_llm_cache(InMemoryCache())
    yield
    set_llm_cache(None)


# ----- real local models
@pytest.fixture(scope="module")
def local_routoo(local_router_fixture) -> RoutooChatModel:
    models = {name: LocalChatModel(model=name, max_tokens=12) for name in local_router_fixture.pool.names}
    return RoutooChatModel(models=models, router=local_router_fixture)


@pytest.mark.slow
def test_chain_with_real_local_models(local_routoo):
    chain = ChatPromptTemplate.from_messages([("user", "Answer in one word: {question}")]) | local_routoo | StrOutputParser()
    assert chain.invoke({"question": "What colour is the sky on a clear day?"}).strip()


@pytest.mark.slow
def test_invoke_and_stream_report_the_decision_and_the_usage_once(local_routoo):
    with get_usage_metadata_callback() as tracked:
        message = local_routoo.invoke("What is 2 + 2?")
    routoo = message.response_metadata["routoo"]
    assert message.response_metadata["model_name"] == routoo["answered_by"] == routoo["model"]
    assert routoo["attempts"] == [{"model": routoo["model"], "error": None, "kind": None}]
    assert message.usage_metadata["input_tokens"] > 0 and message.usage_metadata["output_tokens"] > 0
    assert sum(u["total_tokens"] for u in tracked.usage_metadata.values()) == message.usage_metadata["total_tokens"]
    chunks = list(local_routoo.stream("Name a fruit."))
    assert "routoo" in chunks[0].response_metadata
    whole = functools.reduce(operator.add, chunks)
    assert whole.text.strip() and whole.response_metadata["model_name"] == chunks[0].response_metadata["model_name"]
    assert whole.usage_metadata["output_tokens"] > 0


@pytest.mark.slow
def test_batch_of_prompts(local_routoo):
    answers = local_routoo.bind(max_tokens=2).batch([f"Say the number {i}." for i in range(20)], config={"max_concurrency": 2})
    assert len(answers) == 20 and all(a.response_metadata["routoo"]["answered_by"] for a in answers)


@pytest.mark.slow
def test_fallback_after_a_raising_model_reaches_a_real_model(local_router_fixture):
    decision = local_router_fixture.route(QUESTION)
    models = {name: LocalChatModel(model=name, max_tokens=8) for name in local_router_fixture.pool.names}
    models[decision.model] = ScriptedChatModel(error="rate limited (429)")
    message = RoutooChatModel(models=models, router=local_router_fixture).invoke(QUESTION)
    attempts = message.response_metadata["routoo"]["attempts"]
    assert attempts[0]["model"] == decision.model and "rate limited" in attempts[0]["error"]
    assert message.response_metadata["model_name"] == attempts[1]["model"] != decision.model and message.content


def test_token_ids_are_real_offline():
    assert scripted_routoo().get_num_tokens("Routing picks the right model for each prompt.") > 5


# ----- kind 1: one routed call is one model call to everything that watches it
def test_langgraph_agent_streams_each_token_once_and_counts_usage_once():
    from langchain.agents import create_agent

    fake = FakeOpenAI(reply="The sum is 3")
    routoo = openai_routoo(fake)
    agent = create_agent(routoo, [add])
    with get_usage_metadata_callback() as tracked:
        streamed = [(chunk, meta) for chunk, meta in agent.stream({"messages": [("user", "What is 1 + 2?")]},
                                                                   stream_mode="messages") if meta["langgraph_node"] == "model"]
    text = "".join(chunk.text for chunk, _ in streamed)
    assert text == "The sum is 3"  # the tool-call turn streams no text, the final turn each word once
    assert sum(u["total_tokens"] for u in tracked.usage_metadata.values()) == 2 * 18  # two model turns, once each
    assert all(name in TRIO for name in tracked.usage_metadata)  # keyed by the served model, not by "routoo"


def test_langgraph_messages_mode_around_invoke_and_stream():
    from langgraph.graph import END, START, MessagesState, StateGraph

    routoo = scripted_routoo()
    for call in ("invoke", "stream"):
        def node(state, call=call):
            if call == "invoke":
                return {"messages": [routoo.invoke(state["messages"])]}
            return {"messages": [functools.reduce(operator.add, routoo.stream(state["messages"]))]}

        graph = StateGraph(MessagesState)
        graph.add_node("chat", node)
        graph.add_edge(START, "chat")
        graph.add_edge("chat", END)
        app = graph.compile()
        streamed = "".join(c.text for c, _ in app.stream({"messages": [("user", QUESTION)]}, stream_mode="messages"))
        final = app.invoke({"messages": [("user", QUESTION)]})["messages"][-1]
        assert streamed == final.text == final.response_metadata["routoo"]["answered_by"].join(["answer from ", ""])
        assert final.usage_metadata["total_tokens"] == USAGE["total_tokens"]


@pytest.mark.parametrize("path", ["invoke", "ainvoke", "stream", "astream", "batch"])
def test_every_call_path_is_one_run_tree_with_usage_counted_once(path):
    routoo = scripted_routoo()
    runs = Runs()
    config = {"callbacks": [runs], "tags": ["my-app"]}

    async def consume():
        if path == "ainvoke":
            return await routoo.ainvoke(QUESTION, config)
        return functools.reduce(operator.add, [c async for c in routoo.astream(QUESTION, config)])

    with get_usage_metadata_callback() as tracked, collect_runs() as collected:
        if path in ("ainvoke", "astream"):
            message = asyncio.run(consume())
        elif path == "stream":
            message = functools.reduce(operator.add, routoo.stream(QUESTION, config))
        elif path == "batch":
            message = routoo.batch([QUESTION], config)[0]
        else:
            message = routoo.invoke(QUESTION, config)
    router_run, chosen_run = runs.runs
    assert router_run["name"] == "RoutooChatModel" and chosen_run["parent"] == router_run["id"]
    assert chosen_run["name"] == message.response_metadata["routoo"]["answered_by"]  # the scripted model's name
    assert "my-app" in chosen_run["tags"] and "nostream" in chosen_run["tags"]
    assert len(collected.traced_runs) == 1  # one root trace
    assert message.usage_metadata["total_tokens"] == USAGE["total_tokens"]
    assert sum(u["total_tokens"] for u in tracked.usage_metadata.values()) == USAGE["total_tokens"]
    assert message.response_metadata["model_name"] == message.response_metadata["routoo"]["answered_by"]


def test_streams_name_one_model_and_leave_the_provider_chunks_untouched():
    routoo = scripted_routoo()
    provider_chunks = []
    chosen = routoo.models[routoo.router.route(QUESTION).model]
    original = chosen._stream

    def recording(*args, **kwargs):
        for chunk in original(*args, **kwargs):
            provider_chunks.append((chunk.message, dict(chunk.message.response_metadata)))
            yield chunk

    object.__setattr__(chosen, "_stream", recording)
    whole = functools.reduce(operator.add, routoo.stream(QUESTION))
    assert whole.response_metadata["model_name"] == whole.response_metadata["routoo"]["answered_by"]
    assert whole.response_metadata["routoo"]["provider_model_name"] == f"{chosen.name}-served"
    assert all("routoo" not in message.response_metadata for message, _ in provider_chunks)
    assert all(message.response_metadata == before for message, before in provider_chunks)


# ----- kind 2: tools are provider-shaped at bind time, options replayed on the chosen model
def test_bind_tools_stores_openai_schemas_and_replays_options():
    routoo = scripted_routoo()
    bound = routoo.bind_tools([add], tool_choice="add", parallel_tool_calls=False, strict=True)
    assert bound.kwargs["tools"][0]["function"]["name"] == "add" and bound.kwargs["tools"][0]["function"]["strict"]
    seen = []
    chosen = routoo.models[TRIO[-1]]
    original = chosen.bind_tools
    object.__setattr__(chosen, "bind_tools", lambda tools, **kwargs: seen.append(kwargs) or original(tools, **kwargs))
    message = bound.invoke("What is 1 + 2?")
    assert message.tool_calls[0]["name"] == "add" and message.response_metadata["model_name"] == TRIO[-1]
    assert seen == [{"tool_choice": "add", "parallel_tool_calls": False, "strict": True}]


def test_strict_tools_reach_a_real_chatopenai_and_prebound_agents_run():
    from langgraph.prebuilt import create_react_agent

    fake = FakeOpenAI(reply="3")
    routoo = openai_routoo(fake)
    message = routoo.bind_tools([add], strict=True).invoke("What is 1 + 2?")
    assert message.tool_calls[0]["args"] == {"a": 1, "b": 2}
    assert fake.requests[-1]["tools"][0]["function"]["strict"] is True and "strict" not in fake.requests[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = create_react_agent(routoo.bind_tools([add], parallel_tool_calls=False), [add])
    kinds = [type(m).__name__ for m in agent.invoke({"messages": [("user", "What is 1 + 2?")]})["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert fake.requests[-1]["parallel_tool_calls"] is False


def test_tools_only_go_to_tool_capable_models():
    routoo = scripted_routoo(quality_cost_tradeoff=50.0)  # would pick the cheapest model without tools
    assert routoo.invoke("hi").response_metadata["model_name"] == TRIO[0]
    assert routoo.bind_tools([add]).invoke("What is 1 + 2?").response_metadata["model_name"] == TRIO[-1]
    routoo.models[TRIO[-1]].error = "down"
    with pytest.raises(AllModelsFailedError, match="down"):  # no other tool-capable model to fall back to
        routoo.bind_tools([add]).invoke("What is 1 + 2?")


# ----- kind 3: structured output is a routed call like any other
def structured_routoo(**settings) -> RoutooChatModel:
    router = trio_router()
    for spec in router.pool.models:
        spec.supports_tools = spec.supports_structured_output = True
    models = {name: ScriptedChatModel(name=name, tool_args={"value": 3}) for name in TRIO}
    return RoutooChatModel(models=models, router=router, **settings)


def test_structured_output_honours_every_form_of_settings_and_keeps_the_record():
    routoo = structured_routoo()
    cheap = TRIO[0]

    def answered(runnable, *args, **kwargs):
        out = runnable.invoke(QUESTION, *args, **kwargs)
        return out["raw"].response_metadata["model_name"], out["parsed"]

    configurable = routoo.configurable_fields(allowed_models=ConfigurableField(id="allow"))
    forms = [
        answered(routoo.with_structured_output(Answer, include_raw=True), model=cheap),
        answered(routoo.bind(model=cheap).with_structured_output(Answer, include_raw=True)),
        answered(configurable.with_structured_output(Answer, include_raw=True), {"configurable": {"allow": [cheap]}}),
    ]
    assert forms == [(cheap, Answer(value=3))] * 3
    raw = routoo.with_structured_output(Answer, include_raw=True).invoke(QUESTION)["raw"]
    assert raw.response_metadata["routoo"]["answered_by"] in TRIO and raw.usage_metadata == USAGE
    assert routoo.with_structured_output(Answer).invoke(QUESTION) == Answer(value=3)
    assert list(routoo.with_structured_output(Answer).stream(QUESTION)) == [Answer(value=3)]


def test_structured_output_settles_the_budget_falls_back_and_uses_the_cache(llm_cache):
    from langchain_routoo import RoutooBudget

    budget = RoutooBudget(total_usd=1.0)
    routoo = structured_routoo(budget=budget)
    first = routoo.router.route(QUESTION, requires_structured_output=True).model
    routoo.models[first].error = "overloaded"
    structured = routoo.with_structured_output(Answer, include_raw=True)
    out = structured.invoke(QUESTION)
    assert out["parsed"] == Answer(value=3) and out["raw"].response_metadata["routoo"]["attempts"][0]["model"] == first
    assert budget.reserved_usd == 0 and budget.calls == 1 and budget.spent_usd > 0
    runs = Runs()
    assert structured.invoke(QUESTION, {"callbacks": [runs]})["parsed"] == Answer(value=3)
    assert len(runs.runs) == 1 and budget.calls == 1  # served by the LLM cache: no pool model ran


def test_structured_output_with_a_real_chatopenai_json_schema():
    fake = FakeOpenAI(reply='{"value": 7}')
    out = openai_routoo(fake).with_structured_output(Answer, method="json_schema", include_raw=True).invoke(QUESTION)
    assert out["parsed"] == Answer(value=7) and out["raw"].response_metadata["routoo"]["answered_by"] in TRIO
    assert fake.requests[-1]["response_format"]["type"] == "json_schema"


# ----- kind 4: cache identity
PERSISTENT_CALL = """
import sys
sys.path.insert(0, {root!r})
from langchain_community.cache import SQLiteCache
from langchain_core.globals import set_llm_cache
from tests.test_langchain import QUESTION, scripted_routoo
set_llm_cache(SQLiteCache({path!r}))
print(scripted_routoo(max_tokens=5).invoke(QUESTION).content)
"""


def test_a_sqlite_cache_hits_across_processes_and_only_for_the_same_configuration(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from langchain_community.cache import SQLiteCache

    path = str(tmp_path / "cache.db")
    script = PERSISTENT_CALL.format(root=str(Path(__file__).parents[1]), path=path)
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    set_llm_cache(SQLiteCache(path))
    try:
        hit, miss = Runs(), Runs()
        assert scripted_routoo(max_tokens=5).invoke(QUESTION, {"callbacks": [hit]}).content == answer
        scripted_routoo(max_tokens=6).invoke(QUESTION, {"callbacks": [miss]})
        assert len(hit.runs) == 1 and len(miss.runs) == 2  # a hit runs no pool model
    finally:
        set_llm_cache(None)


def _cache_key(routoo: RoutooChatModel, **kwargs) -> str:
    return routoo._get_llm_string(**kwargs)


def test_cache_keys_differ_per_configuration_and_are_stable():
    base = scripted_routoo()
    key = _cache_key(base)
    assert "0x" not in key and key == _cache_key(scripted_routoo())  # a fresh, identical object: same key
    changed = [
        scripted_routoo(max_tokens=5),
        scripted_routoo(stop=["\n"]),
        scripted_routoo(quality_cost_tradeoff=0.5),
        RoutooChatModel(models={n: ScriptedChatModel(name=n, reply="other") for n in TRIO}, router=trio_router()),
        scripted_routoo(router=trio_router(min_quality=0.5)),
    ]
    assert len({key, *(_cache_key(r) for r in changed)}) == len(changed) + 1
    tools_key = _cache_key(base, tools=base.tool_kwargs([add])["tools"])
    assert "0x" not in tools_key and tools_key == _cache_key(base, tools=base.tool_kwargs([add])["tools"])


def test_a_cached_answer_is_never_served_to_another_configuration(llm_cache):
    first = scripted_routoo(max_tokens=5).invoke(QUESTION)
    runs = Runs()
    assert scripted_routoo(max_tokens=5).invoke(QUESTION, {"callbacks": [runs]}).content == first.content
    assert len(runs.runs) == 1
    other = RoutooChatModel(models={n: ScriptedChatModel(name=n, reply="other answer") for n in TRIO}, router=trio_router())
    assert other.invoke(QUESTION).content == "other answer"


# ----- kind 5: capabilities honoured everywhere and learnt from the models
def test_streams_prefer_streaming_models_and_images_go_to_vision_models():
    router = trio_router()
    best = router.route(QUESTION).model
    router.pool[best].supports_streaming = False
    routoo = scripted_routoo(router=router)
    assert list(routoo.stream(QUESTION))[0].response_metadata["model_name"] != best
    assert routoo.invoke(QUESTION).response_metadata["model_name"] == best  # invoke may use it
    image = HumanMessage(content=[{"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png"}])
    assert routoo.invoke([image]).response_metadata["model_name"] in TRIO  # undeclared: may read images
    for spec in router.pool.models:
        spec.supports_vision = False
    with pytest.raises(InfeasibleRoutingError, match="requires_vision"):
        routoo.invoke([image])
    router.pool[TRIO[1]].supports_vision = True
    assert routoo.invoke([image]).response_metadata["model_name"] == TRIO[1]  # an image-only message is routed


def test_model_profiles_fill_the_specs_the_user_left_unset():
    pool = ModelPool(models=[ModelSpec(name="fast", price_in_per_mtok=0.15, price_out_per_mtok=0.6),
                             ModelSpec(name="smart", price_in_per_mtok=2.5, price_out_per_mtok=10, supports_vision=False)])
    base = trio_router()
    predictor = base.predictor
    predictor_names = {"fast": TRIO[0], "smart": TRIO[-1]}
    router = Router(ModelPool(models=[s.model_copy(update={"name": predictor_names[s.name]}) for s in pool.models]),
                    predictor)
    fake = FakeOpenAI()
    models = {TRIO[0]: ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", **fake.clients()),
              TRIO[-1]: ChatOpenAI(model="gpt-4o", api_key="sk-test", **fake.clients())}
    routoo = RoutooChatModel(models=models, router=router)
    mini, big = routoo.router.pool[TRIO[0]], routoo.router.pool[TRIO[-1]]
    assert mini.context_window == 128000 and mini.supports_tools and mini.supports_vision
    assert big.supports_tools and not big.supports_vision  # the user's own setting wins
    assert router.pool[TRIO[0]].context_window == 8192  # the caller's router is left as it was


# ----- kind 6: sticky routing for agent loops
def test_sticky_routing_keeps_the_first_turns_model_through_a_tool_loop():
    routoo = scripted_routoo(sticky=True, quality_cost_tradeoff=50.0)
    for spec in routoo.router.pool.models:
        spec.supports_tools = True
    conversation = [HumanMessage(content="Use the tool to add 1 and 2.")]
    first = routoo.bind_tools([add]).invoke(conversation)
    conversation += [first, {"role": "tool", "content": "3", "tool_call_id": "call_1"}]
    later = routoo.bind_tools([add]).invoke(conversation, quality_cost_tradeoff=0.0)  # would choose another model
    assert later.response_metadata["model_name"] == first.response_metadata["model_name"]
    assert later.response_metadata["routoo"]["sticky"] is True


# ----- settings, fallback, bad input
def test_per_call_overrides_with_bind_and_model():
    routoo = scripted_routoo()
    hard = "Explain the proof of Fermat's last theorem."
    cheap = routoo.bind(quality_cost_tradeoff=50.0).invoke(hard).response_metadata
    assert cheap["model_name"] == TRIO[0] and cheap["routoo"]["binding_constraint"] == "quality_cost_tradeoff"
    assert routoo.invoke(hard).response_metadata["model_name"] == TRIO[-1]
    assert routoo.invoke("hi", model=TRIO[1]).response_metadata["model_name"] == TRIO[1]
    with pytest.raises(KeyError, match="unknown model"):
        routoo.invoke("hi", model="gpt-17")
    configurable = routoo.configurable_fields(quality_cost_tradeoff=ConfigurableField(id="tradeoff"))
    by_config = configurable.invoke(hard, config={"configurable": {"tradeoff": 50.0}})
    assert by_config.response_metadata["model_name"] == TRIO[0]


def test_fallback_records_every_attempt_and_refuses_empty_answers():
    routoo = scripted_routoo(max_fallbacks=2)
    order = [routoo.router.route("hello").model] + routoo.router.route("hello").fallbacks
    routoo.models[order[0]].error = "connection reset"
    routoo.models[order[1]].reply = ""  # an empty answer counts as a failure
    message = routoo.invoke("hello")
    attempts = message.response_metadata["routoo"]["attempts"]
    assert [a["model"] for a in attempts] == order
    assert "connection reset" in attempts[0]["error"] and attempts[1]["kind"] == "empty"
    assert message.response_metadata["model_name"] == order[2]
    assert "fallback" in message.response_metadata["routoo"]["reason"] or order[0] in message.response_metadata["routoo"]["reason"]


def test_stream_falls_back_before_the_first_content():
    routoo = scripted_routoo()
    order = [routoo.router.route("hello").model] + routoo.router.route("hello").fallbacks
    routoo.models[order[0]].error = "overloaded"
    chunks = list(routoo.stream("hello"))
    assert chunks[0].response_metadata["model_name"] == order[1]
    assert "".join(c.text for c in chunks) == f"answer from {order[1]}"


def test_bad_input_is_a_clear_error():
    routoo = scripted_routoo()
    with pytest.raises(ValueError, match="empty prompt"):
        routoo.invoke([HumanMessage(content="   ")])
    with pytest.raises(InfeasibleRoutingError, match="max_cost_per_query"):
        routoo.invoke("hi", max_cost_per_query=1e-12)
    with pytest.raises(ValueError, match="no chat model for"):
        RoutooChatModel(models={TRIO[0]: ScriptedChatModel()}, router=trio_router())
    for bad in ({"quality_cost_tradeoff": float("nan")}, {"timeout_s": -1}, {"max_cost_per_query": float("inf")}):
        with pytest.raises(ValueError):
            scripted_routoo(**bad)
    with pytest.raises(ValueError, match="timeout_s"):
        routoo.invoke("hi", timeout_s=float("nan"))


def test_chains_and_lambdas_compose():
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | scripted_routoo() | StrOutputParser() | RunnableLambda(str.upper)
    assert chain.invoke({"q": QUESTION}).startswith("ANSWER FROM")


def test_multi_turn_conversations_are_routed_on_the_whole_conversation():
    conversation = [HumanMessage(content="Let's talk about integrals."), AIMessage(content="Sure."),
                    HumanMessage(content="What is the integral of x^2?")]
    assert scripted_routoo().invoke(conversation).response_metadata["routoo"]["input_tokens"] > 10
